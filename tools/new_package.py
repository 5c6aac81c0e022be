"""Create packages/<dist>/ from packages/_template/.

python tools/new_package.py emb-kernels "EmbeddingBag kernels: baseline, OptMT, RPF, L2P"
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "packages" / "_template"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dist", help="distribution name, kebab-case (e.g. emb-kernels)")
    parser.add_argument("description", help="one-line description")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[a-z][a-z0-9]*(-[a-z0-9]+)*", args.dist):
        parser.error(f"dist {args.dist!r}: expected kebab-case like 'emb-kernels'")
    import_name = args.dist.replace("-", "_")
    dest = ROOT / "packages" / args.dist
    if dest.exists():
        print(f"error: {dest} already exists", file=sys.stderr)
        return 1
    shutil.copytree(TEMPLATE, dest)
    (dest / "src" / "__IMPORT__").rename(dest / "src" / import_name)
    for path in dest.rglob("*"):
        if path.is_file():
            text = path.read_text()
            text = text.replace("__DIST__", args.dist).replace("__IMPORT__", import_name)
            path.write_text(text.replace("__DESCRIPTION__", args.description))
    print(f"created {dest.relative_to(ROOT)} (import {import_name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
