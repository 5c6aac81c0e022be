"""The repository's own files agree with each other: Dockerfiles, workflows, nox sessions, docs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKER_INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip


def dockerfile_instructions(path: Path) -> list[tuple[int, str, str]]:
    """(line, INSTRUCTION, arguments) with continuation lines joined; raises on a bad line."""
    out, buf, start = [], "", 0
    for no, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if not buf:
            start = no
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        if word.upper() not in DOCKER_INSTRUCTIONS or word != word.upper():
            raise ValueError(f"{path.name}:{start}: unknown instruction {word!r}")
        out.append((start, word, rest.strip()))
        buf = ""
    if buf:
        raise ValueError(f"{path.name}: ends inside a continued line")
    return out


def existing_packages() -> set[str]:
    return {
        p.name
        for p in (ROOT / "packages").iterdir()
        if (p / "pyproject.toml").is_file() and not p.name.startswith("_")
    }


def nox_sessions() -> set[str]:
    text = (ROOT / "noxfile.py").read_text()
    names = set()
    for m in re.finditer(r"@nox\.session(?:\(([^)]*)\))?\s*\ndef (\w+)", text):
        named = re.search(r'name="([^"]+)"', m.group(1) or "")
        names.add(named.group(1) if named else m.group(2))
    return names


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.gpu"])
def test_dockerfiles_parse_and_name_real_packages(name):
    path = ROOT / "docker" / name
    instrs = dockerfile_instructions(path)
    assert instrs[0][1] == "FROM", f"{name} must start with FROM"
    assert any(word == "CMD" for _, word, _ in instrs)
    named = set(re.findall(r"packages/([a-z][a-z0-9-]*)", path.read_text()))
    missing = named - existing_packages()
    assert not missing, f"{name} names packages that do not exist: {sorted(missing)}"
    for _line, word, rest in instrs:
        if word == "RUN":
            shlex.split(rest.replace("$(", "(").replace("`", ""))  # balanced quotes


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.gpu"])
def test_docker_images_run_what_nox_quickstart_runs(name):
    """The images' CMD runs the same modules, in the same order, as ``nox -s quickstart``."""
    nox_text = (ROOT / "noxfile.py").read_text()
    body = nox_text[nox_text.index("def quickstart(") :]
    body = body[: body.index("\n@nox.session")]
    in_nox = re.findall(r'session\.run\("python", "-m", "([\w.]+)"', body)
    cmd = next(rest for _, word, rest in dockerfile_instructions(ROOT / "docker" / name)
               if word == "CMD")  # fmt: skip
    assert in_nox and re.findall(r"python -m ([\w.]+)", cmd) == in_nox


def test_dockerfile_parser_rejects_garbage(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11\nRUNN echo hi\n")
    with pytest.raises(ValueError, match=r"Dockerfile:2: unknown instruction 'RUNN'"):
        dockerfile_instructions(bad)
    bad.write_text("FROM python:3.11\nRUN echo \\\n")
    with pytest.raises(ValueError, match="continued line"):
        dockerfile_instructions(bad)


def test_workflows_parse_and_name_real_sessions():
    yaml = pytest.importorskip("yaml")
    sessions = nox_sessions()
    assert {"tests", "lint", "build", "docs", "quickstart", "integration"} <= sessions
    for path in sorted((ROOT / ".github" / "workflows").glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        assert isinstance(doc, dict) and "jobs" in doc, f"{path.name}: no jobs"
        text = path.read_text()
        for session_list in re.findall(r"session: \[([^\]]+)\]", text):
            for s in session_list.split(","):
                assert s.strip() in sessions, f"{path.name}: no nox session {s.strip()!r}"
        for s in re.findall(r"nox -s ([a-z0-9-]+)", text):
            assert s in sessions, f"{path.name}: no nox session {s!r}"
        for default in re.findall(r'default: "([^"]+)"', text):
            for s in default.split():
                assert s in sessions, f"{path.name}: no nox session {s!r}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "python -m pip install nox && nox -s quickstart" in readme
    assert "python -m pip install nox && nox -s tests" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "nox -s tests" in ci and "nox -s lint" in ci


def test_docs_generator_covers_every_package(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "tools" / "gen_docs.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert {p.name for p in gen.packages()} == existing_packages()
    assert "rec_common.criteo" in gen.cli_modules(ROOT / "packages" / "rec-common")
    text = gen.rewrite_links(
        "see [x](docs/a.md) and [y](https://e.org) [z](#top)", ROOT / "packages" / "rec-common"
    )
    assert (
        "tree/main/packages/rec-common/docs/a.md" in text
        and "(https://e.org)" in text
        and "(#top)" in text
    )
