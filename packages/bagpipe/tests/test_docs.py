"""Every example a user reads runs: README python blocks and module doctests (CPU)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import bagpipe

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(python_blocks(README))))
def test_readme_python_blocks_run(index, capsys):
    code = python_blocks(README)[index]
    exec(compile(code, f"{README}:block{index}", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert out.strip(), "each README example prints what it shows"
    if "max |table difference|" in out:
        diff = float(re.search(r"difference\| ([0-9.e+-]+)", out).group(1))
        assert diff < 2e-4 and "cache misses 0" in out


MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(bagpipe.__path__, "bagpipe.")
    if not m.name.endswith("__main__")
)


@pytest.mark.parametrize("name", ["bagpipe", *MODULES])
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
