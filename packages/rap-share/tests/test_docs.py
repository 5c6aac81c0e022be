"""Every example a user reads runs: README code blocks and module doctests (CPU)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from rec_common.docs_check import package_modules, python_blocks, run_doctests, run_python_block

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize("index", range(len(python_blocks(README))))
def test_readme_python_blocks_run(index, capsys):
    run_python_block(README, index)
    assert capsys.readouterr().out.strip(), "each README example prints what it shows"


MODULES = package_modules("rap_share")


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = run_doctests(name)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"


@pytest.mark.parametrize("module", ["rap_share.plan", "rap_share.profile", "rap_share.costmodel"])
def test_cli_help(module, capsys):
    mod = importlib.import_module(module)
    with pytest.raises(SystemExit) as exc:
        mod.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert ("example" in out and "(default" in out) or module.endswith("costmodel")
