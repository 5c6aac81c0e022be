"""Shared fixtures: one job launcher (zygote) per test module, toy job requests, cleanup of
any job process a test leaves behind."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # helpers.py

from helpers import OPEN_STORES, tiny_job  # noqa: E402

from rmixer.launcher import Launcher, pid_alive  # noqa: E402


@pytest.fixture(scope="module")
def launcher():
    la = Launcher("zygote")
    la.warm()
    yield la
    la.close()


@pytest.fixture
def job():
    return tiny_job


@pytest.fixture
def reap():
    """Collects pids of job processes; kills any still alive after the test."""
    pids: list[tuple[int, str | None]] = []
    yield pids
    for pid, start in pids:
        if pid and pid_alive(pid, start):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(autouse=True)
def _close_stores():
    yield
    while OPEN_STORES:
        OPEN_STORES.pop().close()
