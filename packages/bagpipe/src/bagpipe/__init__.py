"""Bagpipe: oracle cacher, embedding servers and trainers with a lookahead embedding cache
(SOSP'23), equivalent to synchronous training without a cache."""

from bagpipe.__about__ import __version__
from bagpipe.errors import BagpipeError, CacheTooSmall, ConfigMismatch


def init_cache(*args, **kwargs):
    """Join a Bagpipe run as a trainer; see :func:`bagpipe.api.init_cache`."""
    from bagpipe.api import init_cache as _init

    return _init(*args, **kwargs)


def shutdown() -> None:
    """Leave the run once every role is done; see :func:`bagpipe.api.shutdown`."""
    from bagpipe.api import shutdown as _shutdown

    _shutdown()


__all__ = ["BagpipeError", "CacheTooSmall", "ConfigMismatch", "__version__", "init_cache",
           "shutdown"]  # fmt: skip
