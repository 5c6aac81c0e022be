"""Every example a user reads must run: README code blocks and module doctests."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import rec_common

README = Path(__file__).resolve().parents[1] / "README.md"
ROOT_README = Path(__file__).resolve().parents[3] / "README.md"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(python_blocks(README))))
def test_readme_python_blocks_run(index, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = python_blocks(README)[index]
    exec(compile(code, f"{README}:block{index}", "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out.strip(), "each README example prints what it shows"


def test_readme_names_real_modules():
    for name in re.findall(r"`(rec_common\.[a-z_]+)`", README.read_text()):
        importlib.import_module(name)


def test_root_readme_has_the_two_commands():
    text = ROOT_README.read_text()
    assert "python -m pip install nox && nox -s quickstart" in text
    assert "python -m pip install nox && nox -s tests" in text


MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(rec_common.__path__, "rec_common.")
    if not m.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
