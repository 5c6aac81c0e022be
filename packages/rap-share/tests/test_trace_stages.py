"""benchmarks/trace_stages.py: a stage's GPU busy time against its GPU span, from a trace."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "trace_stages.py"
spec = importlib.util.spec_from_file_location("trace_stages", SCRIPT)
trace_stages = importlib.util.module_from_spec(spec)
spec.loader.exec_module(trace_stages)


def _kernel(ts, dur, corr, stream=7):
    return {"cat": "kernel", "ts": ts, "dur": dur, "args": {"stream": stream, "correlation": corr}}


def test_busy_vs_span_counts_the_trainer_streams_kernels_per_stage():
    mark = trace_stages.MARK
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
    rows = trace_stages.busy_vs_span({"traceEvents": ev})
    assert rows == {("None", "emb_fwd"): [(60, 30)], ("None", "mlp_fwd"): [(5, 5)]}
    assert trace_stages.busy_vs_span({"traceEvents": ev[:2]}) == {}


def test_usage_error_without_an_output_folder(capsys):
    assert trace_stages.main([]) == 2
    assert "trace_stages.py OUT" in capsys.readouterr().err
