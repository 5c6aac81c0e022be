"""Every example a user reads must run: README code blocks and module doctests."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from rec_common.docs_check import package_modules, python_blocks, run_doctests, run_python_block

README = Path(__file__).resolve().parents[1] / "README.md"
ROOT_README = Path(__file__).resolve().parents[3] / "README.md"


@pytest.mark.parametrize("index", range(len(python_blocks(README))))
def test_readme_python_blocks_run(index, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run_python_block(README, index)
    assert capsys.readouterr().out.strip(), "each README example prints what it shows"


def test_readme_names_real_modules():
    for name in re.findall(r"`(rec_common\.[a-z_]+)`", README.read_text()):
        importlib.import_module(name)


def test_root_readme_has_the_two_commands():
    text = ROOT_README.read_text()
    assert "python -m pip install nox && nox -s quickstart" in text
    assert "python -m pip install nox && nox -s tests" in text


MODULES = package_modules("rec_common")


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = run_doctests(name)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
