"""recflex tests: one intra-op thread (the emulation is many small ops; on a loaded
2-core machine OpenMP's barrier costs more than the work)."""

from __future__ import annotations

import torch

torch.set_num_threads(1)
