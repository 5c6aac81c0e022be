"""Figure 9's driver on CPU at toy size: real launches, per-variant steps, rows per model."""

from __future__ import annotations

import json

import pytest

from bagpipe import figure9


def test_variant_steps_parse_and_reject():
    assert figure9.parse_variant_steps("", figure9.VARIANTS) == {}
    assert figure9.parse_variant_steps("ps=150, static=300", figure9.VARIANTS) == {
        "ps": 150,
        "static": 300,
    }
    for bad in ("ps", "ps=0", "ps=x", "nope=3"):
        with pytest.raises(ValueError, match="--variant-steps"):
            figure9.parse_variant_steps(bad, figure9.VARIANTS)


def test_warmup_must_leave_steps_for_every_variant(capsys):
    with pytest.raises(SystemExit):
        figure9.main(["--variants", "bagpipe,ps", "--steps", "10", "--warmup", "5",
                      "--variant-steps", "ps=5", "--device", "cpu"])  # fmt: skip
    assert "ps: 5 steps must exceed --warmup 5" in capsys.readouterr().err


def test_two_variants_run_and_write_rows(tmp_path):
    out = tmp_path / "rows.jsonl"
    rc = figure9.main(["--models", "dlrm", "--variants", "bagpipe,ps", "--steps", "8",
                       "--warmup", "2", "--variant-steps", "ps=5", "--global-batch", "256",
                       "--tables", ",".join(["300"] * 26), "--cache-size", "100000",
                       "--model-size", "small", "--device", "cpu", "--work", str(tmp_path / "w"),
                       "--out", str(out), "--timeout", "120"])  # fmt: skip
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    by = {r["variant"]: r for r in rows}
    assert set(by) == {"bagpipe", "ps"}
    assert by["bagpipe"]["steps"] == 8 and by["bagpipe"]["n"] == 6
    assert by["ps"]["steps"] == 5 and by["ps"]["n"] == 3
    assert by["bagpipe"]["baseline"] == "ps"
    assert by["bagpipe"]["ratio"] == pytest.approx(by["ps"]["value"] / by["bagpipe"]["value"])
    assert by["bagpipe"]["breakdown_s"]["hit_rate"] == 1.0


def test_a_stop_mid_model_keeps_the_finished_variants(tmp_path, monkeypatch):
    times = {"bagpipe": [10.0, 11.0, 12.0], "ps": [30.0, 31.0, 29.0]}

    def fake_run(args, model, variant, data, work):
        if variant == "static":  # the timeout's SIGTERM arrives during the third variant
            raise SystemExit(143)
        return {"times_ms": times[variant], "breakdown": {"hit_rate": 1.0}, "wall_s": 1.0}

    monkeypatch.setattr(figure9, "run_variant", fake_run)
    out = tmp_path / "rows.jsonl"
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(SystemExit):
        figure9.main(["--models", "dlrm,dcn", "--variants", "bagpipe,ps,static", "--steps", "5",
                      "--warmup", "1", "--device", "cpu", "--data", str(data),
                      "--out", str(out)])  # fmt: skip
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {(r["model"], r["variant"]) for r in rows} == {("dlrm", "bagpipe"), ("dlrm", "ps")}
    bp = next(r for r in rows if r["variant"] == "bagpipe")
    assert bp["value"] == 11.0 and bp["ratio"] == pytest.approx(30.0 / 11.0)
