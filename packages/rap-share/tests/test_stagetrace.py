"""rap_share.stagetrace (a stage's GPU busy time from a trace) and benchmarks/trace_stages.py."""

import importlib.util
from pathlib import Path

import torch

from rap_share import stagetrace
from rap_share.profile import _Recorder

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "trace_stages.py"


def _kernel(ts, dur, corr, stream=7):
    return {"cat": "kernel", "ts": ts, "dur": dur, "args": {"stream": stream, "correlation": corr}}


def test_busy_vs_span_counts_the_trainer_streams_kernels_per_stage():
    mark = stagetrace.MARK
    launches = [(10, 1), (20, 2), (110, 3), (30, 9)]  # host: kernels 1, 2, 3; 9 is the probe's
    ev = [
        {"name": f"{mark}emb_fwd:None", "ts": 0},
        {"name": f"{mark}mlp_fwd:None", "ts": 100},
        *({"cat": "cuda_runtime", "ts": t, "args": {"correlation": c}} for t, c in launches),
        _kernel(50, 10, 1),
        _kernel(90, 20, 2),
        _kernel(120, 5, 3),
        _kernel(60, 500, 9, stream=33),
    ]
    rows = stagetrace.busy_vs_span({"traceEvents": ev})
    assert rows == {("None", "emb_fwd"): [(60, 30)], ("None", "mlp_fwd"): [(5, 5)]}
    assert stagetrace.busy_vs_span({"traceEvents": ev[:2]}) == {}


def test_a_marking_recorder_names_every_stage_boundary_in_the_trace():
    rec = _Recorder(torch.device("cpu"), mark=True)

    def step():
        for s in ("emb_fwd", "mlp_fwd"):
            rec(s)
            torch.ones(4).sum()

    names = [e.get("name", "") for e in stagetrace.trace(step, 2)["traceEvents"]]
    assert names.count(f"{stagetrace.MARK}emb_fwd:None") == 2
    assert names.count(f"{stagetrace.MARK}mlp_fwd:None") == 2
    assert stagetrace.stage_busy_ms(step, 2) == {}  # no kernels on a CPU
    quiet = _Recorder(torch.device("cpu"))
    assert not quiet.mark and not any(
        e.get("name", "").startswith(stagetrace.MARK)
        for e in stagetrace.trace(lambda: quiet("emb_fwd"), 1)["traceEvents"]
    )


def test_trace_stages_script_usage_error(capsys):
    spec = importlib.util.spec_from_file_location("trace_stages", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main([]) == 2
    assert "trace_stages.py OUT" in capsys.readouterr().err
