"""EmbeddingBag inference kernels: baseline, OptMT, RPF, L2P, combined (MICRO'24), and fast.

>>> import torch, emb_kernels
>>> w = torch.arange(8.0).view(4, 2)
>>> emb_kernels.embedding_bag(w, torch.tensor([1, 3, 0]), torch.tensor([0, 2, 2]))
tensor([[ 8., 10.],
        [ 0.,  0.],
        [ 0.,  1.]])

On CPU tensors every variant runs the plain-torch reference; CUDA tensors run the CUDA
kernels, compiled at first use with NVRTC (``pip install 'emb-kernels[cuda]'``).
"""

from emb_kernels.__about__ import __version__
from emb_kernels.batched import TableBatchedEmbeddingBags
from emb_kernels.constants import VARIANTS
from emb_kernels.errors import check_errors
from emb_kernels.ops import embedding_bag, make_launcher
from emb_kernels.reference import embedding_bag_reference

__all__ = [
    "VARIANTS",
    "TableBatchedEmbeddingBags",
    "__version__",
    "check_errors",
    "embedding_bag",
    "embedding_bag_reference",
    "make_launcher",
]
