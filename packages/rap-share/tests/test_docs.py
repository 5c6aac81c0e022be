"""Every example a user reads runs: README code blocks and module doctests (CPU)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import rap_share

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(python_blocks(README))))
def test_readme_python_blocks_run(index, capsys):
    code = python_blocks(README)[index]
    exec(compile(code, f"{README}:block{index}", "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out.strip(), "each README example prints what it shows"


MODULES = sorted(
    m.name for m in pkgutil.walk_packages(rap_share.__path__, "rap_share.")
    if not m.name.endswith("__main__")
)  # fmt: skip


@pytest.mark.parametrize("name", ["rap_share", *MODULES])
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"


@pytest.mark.parametrize("module", ["rap_share.plan", "rap_share.profile", "rap_share.costmodel"])
def test_cli_help(module, capsys):
    mod = importlib.import_module(module)
    with pytest.raises(SystemExit) as exc:
        mod.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert ("example" in out and "(default" in out) or module.endswith("costmodel")
