"""The kernels' bad-id record, and raising from it when validation was off.

With ``validate=True`` (the default) bad input raises before any launch. With
``validate=False`` the kernels still never read a row outside the table: an out-of-range id is
skipped and recorded in one 64-bit word per device (``table << 48 | position``, lowered with an
atomic min, all ones when clean). After such a launch the word is copied to pinned host memory
without waiting; the next call into emb_kernels, or :func:`check_errors`, raises ``ValueError``
naming table, position and id once the copy has landed. ``check_errors()`` waits for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch

CLEAN = (1 << 64) - 1
_POS_MASK = (1 << 48) - 1

_lock = threading.Lock()
_words: dict[int, torch.Tensor] = {}
_pending: list[_Pending] = []


@dataclass
class _Pending:
    device: int
    event: torch.cuda.Event
    host: torch.Tensor
    describe: Callable[[int, int], str]


def error_word(device: torch.device) -> torch.Tensor:
    """The device's record (an int64 tensor of one element; -1 means clean)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    word = _words.get(index)
    if word is None:
        with _lock:
            word = _words.get(index)
            if word is None:
                word = _words[index] = torch.full((1,), -1, dtype=torch.int64, device=device)
    return word


def decode(value: int) -> tuple[int, int] | None:
    """``(table, position)`` from a record value, or None when clean."""
    value &= CLEAN
    if value == CLEAN:
        return None
    return value >> 48, value & _POS_MASK


def watch(device: torch.device, describe: Callable[[int, int], str]) -> None:
    """After a launch with validation off: copy the record back without waiting."""
    word = error_word(device)
    host = torch.empty(1, dtype=torch.int64, pin_memory=True)
    host.copy_(word, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    with _lock:
        _pending.append(_Pending(word.device.index, event, host, describe))


def check_errors(sync: bool = True) -> None:
    """Raise ``ValueError`` if a kernel run with ``validate=False`` met an out-of-range id.

    ``sync=True`` waits for the launches watched so far; ``sync=False`` looks only at those
    already finished (what every emb_kernels call does first).
    """
    with _lock:
        todo = list(_pending)
    for p in todo:
        if sync:
            p.event.synchronize()
        elif not p.event.query():
            continue
        with _lock:
            if p in _pending:
                _pending.remove(p)
        found = decode(int(p.host.item()))
        if found is None:
            continue
        with _lock:
            _pending.clear()
            _words[p.device].fill_(-1)
        table, pos = found
        raise ValueError(p.describe(table, pos))
