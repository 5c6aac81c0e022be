"""Where the repository's packages and their command-line tools are (standard library only).

Used by noxfile.py (build: run every CLI's --help) and tools/gen_docs.py (the CLI reference), so
both see the same packages and the same tools.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ROOT / "packages"


def package_dirs() -> list[Path]:
    """Distribution folders under packages/ (templates excluded), rec-common first."""
    found = [
        p
        for p in sorted(PACKAGES.iterdir())
        if (p / "pyproject.toml").is_file() and not p.name.startswith("_")
    ]
    return sorted(found, key=lambda p: p.name != "rec-common")


def cli_modules(src: Path) -> list[str]:
    """Modules under ``src`` (a src/ folder) that `python -m` runs: a __main__ guard or __main__.py."""
    mods = []
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__main__":
            mods.append(".".join(parts[:-1]))
        elif re.search(r"^if __name__ == .__main__.:", path.read_text(), re.M):
            mods.append(".".join(parts))
    return mods
