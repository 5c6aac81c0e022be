"""Assemble the documentation site's sources: docs/ + every package README + a CLI reference.

`nox -s docs` runs this, then `mkdocs build --strict`. Package READMEs are the package guides
(their python blocks run in each package's test_docs.py); the CLI reference is every
`python -m <module> --help`, captured from the installed packages, so it cannot drift.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ROOT / "packages"


def packages() -> list[Path]:
    found = [p for p in sorted(PACKAGES.iterdir()) if (p / "pyproject.toml").is_file()]
    found = [p for p in found if not p.name.startswith("_")]
    return sorted(found, key=lambda p: p.name != "rec-common")


def cli_modules(pkg: Path) -> list[str]:
    """Modules with a `__main__` guard (or a package __main__.py): what `python -m` runs."""
    src = pkg / "src"
    mods = []
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__main__":
            mods.append(".".join(parts[:-1]))
        elif re.search(r"^if __name__ == .__main__.:", path.read_text(), re.M):
            mods.append(".".join(parts))
    return mods


def help_text(module: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        raise SystemExit(f"error: `python -m {module} --help` failed:\n{proc.stderr[-2000:]}")
    return proc.stdout


def rewrite_links(text: str, pkg: Path) -> str:
    """Relative links in a package README point into the repository, not the site."""

    def fix(m: re.Match) -> str:
        label, target = m.group(1), m.group(2)
        if re.match(r"^[a-z]+://|^#|^mailto:", target):
            return m.group(0)
        return f"[{label}]({REPO_URL}/packages/{pkg.name}/{target})"

    return re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", fix, text)


REPO_URL = "https://github.com/rec-systems/rec-systems/tree/main"


def rewrite_repo_links(text: str, source: Path) -> str:
    """Links from a docs/ page to repository files outside docs/ point at the repository."""

    def fix(m: re.Match) -> str:
        label, target = m.group(1), m.group(2)
        if re.match(r"^[a-z]+://|^#|^mailto:", target):
            return m.group(0)
        path, _, anchor = target.partition("#")
        resolved = (source.parent / path).resolve()
        docs = (ROOT / "docs").resolve()
        if resolved.is_relative_to(docs) or not resolved.is_relative_to(ROOT):
            return m.group(0)
        rel = resolved.relative_to(ROOT).as_posix()
        return f"[{label}]({REPO_URL}/{rel}{'#' + anchor if anchor else ''})"

    return re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", fix, text)


def build(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(ROOT / "docs", out, ignore=shutil.ignore_patterns("HELPERS_BRIEF.md"))
    for page in sorted(out.rglob("*.md")):
        source = ROOT / "docs" / page.relative_to(out)
        page.write_text(rewrite_repo_links(page.read_text(encoding="utf-8"), source), "utf-8")
    guides = out / "packages"
    guides.mkdir(exist_ok=True)
    cli = ["# CLI reference", "", "Generated from each tool's `--help`.", ""]
    for pkg in packages():
        readme = (pkg / "README.md").read_text(encoding="utf-8")
        (guides / f"{pkg.name}.md").write_text(rewrite_links(readme, pkg), encoding="utf-8")
        mods = cli_modules(pkg)
        if mods:
            cli += [f"## {pkg.name}", ""]
        for mod in mods:
            cli += [f"### `python -m {mod}`", "", "```text", help_text(mod).rstrip(), "```", ""]
    (out / "reference").mkdir(exist_ok=True)
    (out / "reference" / "cli.md").write_text("\n".join(cli), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="example: python tools/gen_docs.py --out build/docs-src",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "docs-src")
    args = parser.parse_args(argv)
    build(args.out)
    print(f"docs sources in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
