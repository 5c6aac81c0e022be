"""Each package imports and works without its siblings.

Every package depends on rec-common only. A child interpreter hides the other packages (an
import hook refuses them, as if they were not installed) and then imports the package and
prints its version; it must neither fail nor pull a sibling into ``sys.modules``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PACKAGES = ["rec_common", "emb_kernels", "recflex", "bagpipe", "rap_share", "rmixer"]

CHILD = textwrap.dedent(
    """
    import importlib.abc, sys

    target, hidden = sys.argv[1], set(sys.argv[2].split(","))

    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in hidden:
                raise ModuleNotFoundError(f"No module named {name!r} (hidden)", name=name)
            return None

    sys.meta_path.insert(0, Hide())
    mod = __import__(target)
    print(mod.__name__, mod.__version__)
    leaked = sorted({m.split(".")[0] for m in sys.modules} & hidden)
    assert not leaked, f"importing {target} imported {leaked}"
    """
)


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_alone(package):
    hidden = [p for p in PACKAGES if p not in (package, "rec_common")]
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, package, ",".join(hidden)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"{package} alone:\n{proc.stderr[-3000:]}"
    assert proc.stdout.startswith(package), proc.stdout


def test_hiding_works():
    """The hook really hides: importing a hidden package fails in the child."""
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, "recflex", "recflex"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "hidden" in proc.stderr
