"""Run the examples a user reads: a README's python blocks and a package's doctests.

Every package's ``tests/test_docs.py`` uses these, so "the docs run" means the same everywhere.

>>> import tempfile, pathlib
>>> md = pathlib.Path(tempfile.mkdtemp()) / "README.md"
>>> _ = md.write_text("text\\n```python\\nprint(1 + 1)\\n```\\n")
>>> python_blocks(md)
['print(1 + 1)\\n']
>>> run_python_block(md, 0)
2
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

_BLOCK = re.compile(r"```python\n(.*?)```", flags=re.S)


def python_blocks(path: str | Path) -> list[str]:
    """The source of every fenced ```python block of a Markdown file, in order."""
    return _BLOCK.findall(Path(path).read_text(encoding="utf-8"))


def run_python_block(path: str | Path, index: int) -> None:
    """Execute block ``index`` of ``path`` as a fresh script (tracebacks name the block)."""
    blocks = python_blocks(path)
    if not 0 <= index < len(blocks):
        raise IndexError(f"{path}: block {index} requested, the file has {len(blocks)}")
    code = compile(blocks[index], f"{path}:block{index}", "exec")
    exec(code, {"__name__": "__readme__"})


def package_modules(package: str) -> list[str]:
    """The package and every module below it (``__main__`` modules excluded), sorted."""
    pkg = importlib.import_module(package)
    found = [
        m.name
        for m in pkgutil.walk_packages(pkg.__path__, f"{package}.")
        if not m.name.endswith("__main__")
    ]
    return [package, *sorted(found)]


def run_doctests(module_name: str) -> doctest.TestResults:
    """Doctests of one module with ELLIPSIS and NORMALIZE_WHITESPACE; returns the counts."""
    module = importlib.import_module(module_name)
    return doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
