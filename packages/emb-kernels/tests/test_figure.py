"""The micro24 figure from result rows (CPU, matplotlib)."""

from __future__ import annotations

import json

import pytest

from emb_kernels import figure
from rec_common.results import make_row

pytest.importorskip("matplotlib")


def rows():
    out = []
    for wl, base in (("micro24-high", 90.0), ("micro24-random", 150.0)):
        for v, f in (("baseline", 1.0), ("combined", 1.5), ("fast", 2.5)):
            r = make_row(package="emb-kernels", benchmark="micro24", workload=wl, variant=v,
                         metric="kernel_latency", unit="us", value=base / f, p20=base / f - 1,
                         p80=base / f + 1, n=10, command="test")  # fmt: skip
            out.append(r)
    return out


def test_speedups_and_table():
    wls, names, cells = figure.latency_table(rows())
    assert wls == ["micro24-high", "micro24-random"] and names == ["baseline", "combined", "fast"]
    assert figure.speedup(cells, "micro24-random", "fast") == pytest.approx(2.5)
    assert figure.speedup(cells, "micro24-random", "nope") is None
    with pytest.raises(ValueError, match="no 'e2e_latency' rows"):
        figure.latency_table(rows(), "e2e_latency")
    with pytest.raises(ValueError, match=r"variants \['x'\] have no"):
        figure.latency_table(rows(), variants=["x"])


def test_draw_and_cli(tmp_path, capsys):
    out = figure.draw(rows(), tmp_path / "fig.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    src = tmp_path / "r.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows()))
    assert figure.main([str(src), "--out", str(tmp_path / "b.png"), "--variants", "fast"]) == 0
    assert (tmp_path / "b.png").is_file()
    assert figure.main([str(tmp_path / "missing.jsonl"), "--out", "x.png"]) == 1
    assert "does not exist" in capsys.readouterr().err
