"""Every example a user reads runs: README code blocks and module doctests (CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rec_common.docs_check import package_modules, python_blocks, run_doctests, run_python_block

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize("index", range(len(python_blocks(README))))
def test_readme_python_blocks_run(index, capsys):
    run_python_block(README, index)
    assert capsys.readouterr().out.strip(), "each README example prints what it shows"


MODULES = package_modules("emb_kernels")


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = run_doctests(name)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
