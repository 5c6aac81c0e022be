"""rec-common: the pieces every rec-systems package shares.

Criteo and synthetic data, jagged sparse batches, recommendation models with a pluggable
embedding lookup, metrics, GPU timing and the benchmark results format.
"""

from rec_common.__about__ import __version__

__all__ = ["__version__"]
