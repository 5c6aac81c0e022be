"""Every example a user reads runs: README python blocks and module doctests (CPU)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import recflex

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(python_blocks(README))))
def test_readme_python_blocks_run(index, capsys):
    code = python_blocks(README)[index]
    exec(compile(code, f"{README}:block{index}", "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out.strip(), "each README example prints what it shows"


MODULES = [
    "recflex",
    *sorted(
        m.name
        for m in pkgutil.walk_packages(recflex.__path__, "recflex.")
        if not m.name.endswith("__main__")
    ),
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
