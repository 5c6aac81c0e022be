"""Sessions for the rec-systems monorepo: `nox -l` lists them.

Every session installs CPU torch first (``torch==2.13.0``; set ``REC_TORCH_SPEC`` to change
it, e.g. ``REC_TORCH_SPEC=torch>=2.4``), because an unpinned torch pulls several GB of CUDA
libraries. Figure and benchmark sessions are thin wrappers over ``python -m <pkg>.<module>``,
which is what runs on a GPU machine without nox.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import nox

sys.path.insert(0, str(Path(__file__).parent / "tools"))
from repo_layout import cli_modules, package_dirs

nox.needs_version = ">=2024.3.2"
nox.options.default_venv_backend = "virtualenv"
nox.options.sessions = ["lint", "tests"]
nox.options.error_on_missing_interpreters = True

ROOT = Path(__file__).parent
PACKAGES_DIR = ROOT / "packages"
TORCH_SPEC = os.environ.get("REC_TORCH_SPEC", "torch==2.13.0")
# TorchRec on a CPU machine: the CPU fbgemm first, then torchrec without its GPU fbgemm.
TORCHREC_CPU = ["fbgemm-gpu-cpu==1.8.0", "tensordict", "iopath", "torchmetrics", "pyre-extensions"]
TORCHREC_SPEC = "torchrec==1.8.0"


def packages() -> list[str]:
    """Distribution folders under packages/, rec-common first (the others depend on it)."""
    return [p.name for p in package_dirs()]


def install_torch(session: nox.Session) -> None:
    session.install(TORCH_SPEC)


def install_torchrec(session: nox.Session) -> None:
    """CPU TorchRec for interop tests and baselines; REC_SKIP_TORCHREC=1 skips it."""
    if os.environ.get("REC_SKIP_TORCHREC") == "1":
        session.log("REC_SKIP_TORCHREC=1: TorchRec tests will skip")
        return
    session.install(*TORCHREC_CPU)
    session.install("--no-deps", TORCHREC_SPEC)


def test_requirements() -> list[str]:
    reqs: list[str] = []
    for name in packages():
        pyproject = nox.project.load_toml(PACKAGES_DIR / name / "pyproject.toml")
        groups = pyproject.get("dependency-groups", {})
        if "test" in groups:
            reqs.extend(nox.project.dependency_groups(pyproject, "test"))
    return sorted(set(reqs))


def install_packages(session: nox.Session, *, editable: bool = True, extras: str = "") -> None:
    args: list[str] = []
    for name in packages():
        target = (
            f"packages/{name}{extras}" if not extras or name == "rec-common" else f"packages/{name}"
        )
        args.extend(["-e", target] if editable else [target])
    session.install(*args)


@nox.session
def tests(session: nox.Session) -> None:
    """Install every package and run all their tests on CPU (`nox -s tests -- -k criteo`)."""
    install_torch(session)
    install_torchrec(session)
    install_packages(session)
    session.install(*test_requirements())
    session.run("python", "-m", "pytest", *(session.posargs or []), env={"PYTHONHASHSEED": "0"})


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint and format check over the whole repository."""
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".", *session.posargs)
    session.run("ruff", "format", "--check", ".")


@nox.session
def quickstart(session: nox.Session) -> None:
    """The main job on a fresh machine: synthetic Criteo -> preprocess -> DLRM on CPU -> AUC."""
    install_torch(session)
    session.install("-e", "packages/rec-common[plot]", "-e", "packages/bagpipe")
    out = session.posargs[0] if session.posargs else "quickstart-out"
    session.run("python", "-m", "rec_common.quickstart", "--out", out, *session.posargs[1:])
    # bagpipe: 2 trainers + 2 embedding servers + the oracle on CPU, beside the no-cache baseline.
    session.run("python", "-m", "bagpipe.quickstart", "--data", f"{out}/preprocessed")


@nox.session
def build(session: nox.Session) -> None:
    """Build each package's sdist and wheel, install each wheel alone, import it, run its --helps."""
    session.install("build", "virtualenv")
    dist = ROOT / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    for name in packages():
        session.run(
            "python", "-m", "build", "--sdist", "--wheel", "-o", str(dist), f"packages/{name}"
        )
    for name in packages():
        _check_wheel_alone(session, name, dist)


def _check_wheel_alone(session: nox.Session, name: str, dist: Path) -> None:
    import_name = name.replace("-", "_")
    wheels = sorted(dist.glob(f"{import_name}-*.whl"))
    if len(wheels) != 1:
        session.error(f"expected one wheel for {name} in {dist}, found {[w.name for w in wheels]}")
    venv = Path(session.create_tmp()) / f"alone-{name}"
    shutil.rmtree(venv, ignore_errors=True)
    session.run("python", "-m", "virtualenv", "-q", str(venv))
    py = str(venv / ("Scripts" if sys.platform == "win32" else "bin") / "python")
    # Torch is declared as a range; take the CPU build first so the range installs nothing more.
    session.run(py, "-m", "pip", "install", "-q", TORCH_SPEC, external=True)
    session.run(
        py, "-m", "pip", "install", "-q", "--find-links", str(dist), str(wheels[0]), external=True
    )
    session.run(
        py,
        "-c",
        f"import {import_name}; print({import_name}.__name__, {import_name}.__version__)",
        external=True,
    )
    for module in cli_modules(PACKAGES_DIR / name / "src"):
        session.run(py, "-m", module, "--help", external=True, silent=True)
        session.log(f"{module} --help: ok")


@nox.session(default=False)
def docs(session: nox.Session) -> None:
    """Build the mkdocs-material site (strict): docs/, package guides, CLI reference."""
    install_torch(session)
    install_packages(session)
    session.install("mkdocs-material>=9.5,<10")
    session.run("python", "tools/gen_docs.py", "--out", "build/docs-src")
    session.run("mkdocs", "build", "--strict", "-f", "mkdocs.yml")
    session.log(f"site: {ROOT / 'build' / 'site' / 'index.html'}")


@nox.session(default=False)
def integration(session: nox.Session) -> None:
    """Cross-package tests under integration/ (CPU parts; GPU parts skip without CUDA)."""
    install_torch(session)
    install_torchrec(session)
    install_packages(session)
    session.install(*test_requirements())
    session.run("python", "-m", "pytest", "integration", *session.posargs)


@nox.session(name="bench-rec-common", default=False)
def bench_rec_common(session: nox.Session) -> None:
    """Preprocessing throughput on this machine (rows/s) into results/rec-common/."""
    install_torch(session)
    session.install("-e", "packages/rec-common")
    session.run("python", "-m", "rec_common.bench", "preprocess", *session.posargs)


# --- Benchmarks and paper figures -------------------------------------------------------------
# Each is a thin wrapper over `python -m <import>.<module> ARGS`; on the GPU machine run that
# command directly with PYTHONPATH=$(ls -d packages/*/src | tr '\n' ':').


def _run_module(session: nox.Session, dist: str, module: str, *args: str, extras: str = "") -> None:
    if not (PACKAGES_DIR / dist / "pyproject.toml").is_file():
        session.error(f"packages/{dist} does not exist yet")
    install_torch(session)
    session.install("-e", "packages/rec-common[plot]")
    session.install("-e", f"packages/{dist}{extras}")
    session.run("python", "-m", module, *args, *session.posargs)


@nox.session(default=False)
def micro24(session: nox.Session) -> None:
    """MICRO'24 figure: per-variant EmbeddingBag latency on the micro24 hotness traces (GPU)."""
    _run_module(
        session,
        "emb-kernels",
        "emb_kernels.bench",
        "--workload",
        "micro24",
        "--hotness",
        "high,medium,low,random",
        "--plot",
    )


@nox.session(name="bench-emb-kernels", default=False)
def bench_emb_kernels(session: nox.Session) -> None:
    """emb-kernels anchors: 4Mx128 single table, Criteo Kaggle, MLPerf multi-hot (GPU)."""
    _run_module(session, "emb-kernels", "emb_kernels.bench", "--workload", "anchors")


@nox.session(name="recflex-figures", default=False)
def recflex_figures(session: nox.Session) -> None:
    """RecFlex figures: tuned fused kernel vs torch, FBGEMM TBE, TorchRec on models A-E (GPU)."""
    _run_module(session, "recflex", "recflex.figures")


@nox.session(name="bagpipe-figure9", default=False)
def bagpipe_figure9(session: nox.Session) -> None:
    """Bagpipe figure 9: per-iteration time vs the baselines, 2+ trainers."""
    _run_module(session, "bagpipe", "bagpipe.figure9")


@nox.session(default=False)
def figure9(session: nox.Session) -> None:
    """RAP figure 9: throughput of CPU workers, CUDA stream, MPS and RAP (GPU)."""
    _run_module(session, "rap-share", "rap_share.figures", "figure9")


@nox.session(default=False)
def figure10(session: nox.Session) -> None:
    """RAP figure 10: the ablation normalized to Sequential (GPU)."""
    _run_module(session, "rap-share", "rap_share.figures", "figure10")


@nox.session(name="rmixer-makespan", default=False)
def rmixer_makespan(session: nox.Session) -> None:
    """RMixer: makespan of the shipped job mixes under monolithic, mps and rmixer (GPU + CPU)."""
    _run_module(session, "rmixer", "rmixer.makespan")
