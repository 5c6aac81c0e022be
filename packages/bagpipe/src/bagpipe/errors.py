"""The one exception every role raises for a problem it detected and can explain.

A ``BagpipeError`` reaches the user as ``error: <message>`` on stderr and exit status 1, never
as a traceback; its message says what was wrong, which setting or role, and how to fix it.
"""

from __future__ import annotations


class BagpipeError(RuntimeError):
    """A failure bagpipe detected and explained (bad setting, small cache, lost peer, ...)."""


class CacheTooSmall(BagpipeError):
    """The oracle's simulation needs more resident rows than ``cache_size`` allows."""

    def __init__(self, needed: int, cache_size: int, trainer: int, round_index: int, why: str):
        self.needed = int(needed)
        self.cache_size = int(cache_size)
        super().__init__(
            f"cache-size {cache_size} rows is too small: trainer {trainer} holds {needed} rows at "
            f"cleanup round {round_index} ({why}); pass --cache-size {needed} or more "
            "(or a smaller --lookahead-value)"
        )


class ConfigMismatch(BagpipeError):
    """Two roles of one run were started with different values of a shared setting."""

    def __init__(self, setting: str, role_a: str, value_a, role_b: str, value_b):
        self.setting = setting
        super().__init__(
            f"roles disagree on {setting}: {role_a} has {value_a!r} but {role_b} has "
            f"{value_b!r}; start every role with the same {setting}"
        )
