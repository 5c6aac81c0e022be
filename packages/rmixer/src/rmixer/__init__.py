"""rmixer: run many recommendation-model training jobs at once on one CPU + GPU machine.

A PyTorch rebuild of RMixer (Tian et al., IEEE TPDS 2024): an HTTP server with a SQLite job
table, measured job knowledge (memory, compute intensity), and placement policies
(monolithic, MPS rounds, dyMix and ablations) that co-locate jobs on GPUs and send
low-intensity ones to the CPU without exceeding slots or memory.
"""

from rmixer.__about__ import __version__

__all__ = ["__version__"]
