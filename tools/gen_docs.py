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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from repo_layout import ROOT, package_dirs
from repo_layout import cli_modules as _cli_modules


def packages() -> list[Path]:
    return package_dirs()


def cli_modules(pkg: Path) -> list[str]:
    return _cli_modules(pkg / "src")


def help_text(module: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        raise SystemExit(f"error: `python -m {module} --help` failed:\n{proc.stderr[-2000:]}")
    return proc.stdout


REPO_URL = "https://github.com/rec-systems/rec-systems/tree/main"
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def _rewrite(text: str, to_url) -> str:
    """Markdown links with a relative target go to ``to_url(target)`` unless it returns None."""

    def fix(m: re.Match) -> str:
        label, target = m.group(1), m.group(2)
        if re.match(r"^[a-z]+://|^#|^mailto:", target):
            return m.group(0)
        url = to_url(target)
        return m.group(0) if url is None else f"[{label}]({url})"

    return _LINK.sub(fix, text)


def rewrite_links(text: str, pkg: Path) -> str:
    """Relative links in a package README point into the repository, not the site."""
    return _rewrite(text, lambda target: f"{REPO_URL}/packages/{pkg.name}/{target}")


def rewrite_repo_links(text: str, source: Path) -> str:
    """Links from a docs/ page to repository files outside docs/ point at the repository."""
    docs = (ROOT / "docs").resolve()

    def to_url(target: str) -> str | None:
        path, _, anchor = target.partition("#")
        resolved = (source.parent / path).resolve()
        if resolved.is_relative_to(docs) or not resolved.is_relative_to(ROOT):
            return None
        return f"{REPO_URL}/{resolved.relative_to(ROOT).as_posix()}{'#' + anchor if anchor else ''}"

    return _rewrite(text, to_url)


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
