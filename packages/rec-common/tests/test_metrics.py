"""Metrics against scikit-learn on fresh random data, and streaming forms against exact ones."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.metrics import log_loss as sk_log_loss

from rec_common.metrics import (
    StreamingAUC,
    StreamingLogLoss,
    StreamingMetrics,
    accuracy,
    auc,
    calibration,
    log_loss,
    normalized_entropy,
)


def make_data(rng, n, pos_rate=0.3, ties=False, signal=1.0):
    """Labels with a base rate and probabilities that carry some signal; ``ties`` rounds them."""
    y = (rng.random(n) < pos_rate).astype(np.float64)
    if n >= 2:  # both classes, always
        y[0], y[1] = 0.0, 1.0
    logit = signal * (2 * y - 1) + rng.normal(size=n)
    p = 1 / (1 + np.exp(-logit))
    if ties:
        p = np.round(p, 1)
    return y, np.clip(p, 0.001, 0.999)


CASES = [
    # (n, pos_rate, ties)
    (2, 0.5, False),
    (3, 0.5, True),
    (10, 0.5, False),
    (57, 0.3, True),
    (1000, 0.5, False),
    (1000, 0.02, False),  # imbalanced
    (5000, 0.01, True),  # imbalanced with heavy ties
    (20_000, 0.25, False),
]


@pytest.mark.parametrize("n,pos_rate,ties", CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_metrics_match_sklearn(n, pos_rate, ties, seed):
    rng = np.random.default_rng(1000 * seed + n)
    y, p = make_data(rng, n, pos_rate, ties)
    assert auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert log_loss(y, p) == pytest.approx(sk_log_loss(y, p, labels=[0, 1]), rel=1e-12)
    assert accuracy(y, p) == pytest.approx(accuracy_score(y, (p > 0.5).astype(np.float64)), abs=0)
    rate = y.mean()
    entropy = -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
    assert normalized_entropy(y, p) == pytest.approx(
        sk_log_loss(y, p, labels=[0, 1]) / entropy, rel=1e-12
    )
    assert calibration(y, p) == pytest.approx(p.sum() / y.sum(), rel=1e-12)


def test_auc_all_tied_and_reversed():
    assert auc([0, 1, 0, 1], [0.3] * 4) == 0.5
    assert auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert auc([0, 1], [-5.0, 7.0]) == 1.0  # any ranking score, logits included


def test_auc_of_logits_equals_auc_of_probs():
    rng = np.random.default_rng(5)
    y, p = make_data(rng, 300)
    assert auc(y, np.log(p / (1 - p))) == pytest.approx(auc(y, p), abs=1e-12)


def test_accepts_lists_tensors_and_columns():
    rng = np.random.default_rng(3)
    y, p = make_data(rng, 200, ties=True)
    ref = auc(y, p)
    assert auc(y.tolist(), p.tolist()) == ref
    assert auc(torch.from_numpy(y).bool(), torch.from_numpy(p)) == ref
    assert auc(torch.from_numpy(y).float()[:, None], torch.from_numpy(p).float()) == pytest.approx(
        roc_auc_score(y, p.astype(np.float32)), abs=1e-12
    )
    t = torch.from_numpy(p).requires_grad_()
    assert log_loss(torch.from_numpy(y), t) == pytest.approx(log_loss(y, p), rel=1e-12)


@pytest.mark.gpu
def test_metrics_take_cuda_tensors():
    rng = np.random.default_rng(4)
    y, p = make_data(rng, 500)
    yt, pt = torch.from_numpy(y).cuda(), torch.from_numpy(p).cuda()
    assert auc(yt, pt) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    m = StreamingMetrics()
    m.update(yt, pt)
    assert m.compute()["log_loss"] == pytest.approx(log_loss(y, p), rel=1e-12)


def test_log_loss_clips():
    assert log_loss([1, 0], [0.0, 1.0]) == pytest.approx(-math.log(1e-7), rel=1e-9)
    assert log_loss([1, 0], [0.0, 1.0], eps=1e-3) == pytest.approx(-math.log(1e-3), rel=1e-9)
    assert math.isfinite(log_loss([1], [0.0], eps=1e-15))


def test_normalized_entropy_of_base_rate_is_one():
    y = np.array([0, 0, 0, 1, 0, 1, 0, 0], dtype=np.float64)
    assert normalized_entropy(y, np.full(8, y.mean())) == pytest.approx(1.0, rel=1e-12)
    assert calibration(y, np.full(8, y.mean())) == pytest.approx(1.0, rel=1e-12)


def test_errors_say_what_is_wrong():
    with pytest.raises(ValueError, match="only one class is present: all 3 labels are 1"):
        auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="only one class is present: all 2 labels are 0"):
        normalized_entropy([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="calibration is undefined without positives"):
        calibration([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="labels has 3 entries but scores has 2"):
        auc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"labels: expected 0 or 1, got 2 at position 1"):
        auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\], found 2.5.*logits"):
        log_loss([0, 1], [0.1, 2.5])
    with pytest.raises(ValueError, match=r"scores: nan at position 1"):
        auc([0, 1], [0.1, float("nan")])
    with pytest.raises(
        ValueError, match=r"expected a 1-D array \(or \[N, 1\]\), got shape \(2, 2\)"
    ):
        accuracy([[0, 1], [1, 0]], [[0.1, 0.2], [0.3, 0.4]])
    with pytest.raises(ValueError, match="empty"):
        log_loss([], [])


# ---------------------------------------------------------------------- streaming
def chunks(rng, *arrays, max_chunk=700):
    n = len(arrays[0])
    cuts = np.sort(rng.choice(np.arange(1, n), size=min(n - 1, n // max_chunk + 3), replace=False))
    bounds = [0, *cuts.tolist(), n]
    for lo, hi in itertools.pairwise(bounds):
        yield tuple(a[lo:hi] for a in arrays)


@pytest.mark.parametrize("n,pos_rate,ties", [(c[0], c[1], c[2]) for c in CASES if c[0] >= 10])
def test_streaming_matches_exact(n, pos_rate, ties):
    rng = np.random.default_rng(n)
    y, p = make_data(rng, n, pos_rate, ties)
    m = StreamingMetrics()
    m.update(y[:0], p[:0])  # an empty chunk is fine
    for yc, pc in chunks(rng, y, p):
        m.update(torch.from_numpy(yc), pc)
    got = m.compute()
    exact = auc(y, p)
    assert abs(got["auc"] - exact) <= got["auc_error_bound"] + 1e-12
    if not ties:
        assert got["auc_error_bound"] < 1e-3
        assert got["auc"] == pytest.approx(exact, abs=1e-3)
    else:  # ties at 0.1 steps fall in distinct bins: binning is exact
        assert got["auc"] == pytest.approx(exact, abs=1e-12)
    assert got["log_loss"] == pytest.approx(log_loss(y, p), rel=1e-10)
    assert got["normalized_entropy"] == pytest.approx(normalized_entropy(y, p), rel=1e-10)
    assert got["calibration"] == pytest.approx(calibration(y, p), rel=1e-10)
    assert got["accuracy"] == pytest.approx(accuracy(y, p), abs=1e-15)
    assert got["count"] == n and got["ctr"] == pytest.approx(y.mean())


@pytest.mark.parametrize("bins", [1, 4, 16, 256])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_streaming_auc_error_bound_holds_with_coarse_bins(bins, seed):
    rng = np.random.default_rng(seed)
    y, p = make_data(rng, 3000, 0.2)
    s = StreamingAUC(bins=bins)
    for yc, pc in chunks(rng, y, p):
        s.update(yc, pc)
    got = s.compute()
    exact = auc(y, p)
    assert abs(got["auc"] - exact) <= got["auc_error_bound"] + 1e-12
    if bins == 1:
        assert got["auc"] == 0.5 and got["auc_error_bound"] == 0.5


def test_streaming_from_logits_and_merge():
    rng = np.random.default_rng(11)
    y, p = make_data(rng, 4000, 0.1)
    logits = np.log(p / (1 - p))
    a, b = StreamingMetrics(from_logits=True), StreamingMetrics(from_logits=True)
    a.update(torch.from_numpy(y[:1500]), torch.from_numpy(logits[:1500]).float())
    b.update(y[1500:], logits[1500:])
    a.merge(b)
    got = a.compute()
    whole = StreamingMetrics()
    whole.update(y, p)
    ref = whole.compute()
    assert got["auc"] == pytest.approx(ref["auc"], abs=1e-4)
    assert got["log_loss"] == pytest.approx(
        log_loss(y, p), rel=1e-5
    )  # first 1500 logits in float32
    assert got["accuracy"] == pytest.approx(accuracy(y, p), abs=1e-3)
    assert got["count"] == 4000


def test_streaming_log_loss_alone_and_errors():
    ll = StreamingLogLoss()
    with pytest.raises(ValueError, match="no samples seen"):
        ll.compute()
    ll.update([0, 0], [0.2, 0.1])
    out = ll.compute()
    assert out["log_loss"] == pytest.approx(log_loss([0, 0], [0.2, 0.1]))
    assert math.isnan(out["normalized_entropy"]) and math.isnan(out["calibration"])
    with pytest.raises(ValueError, match=r"scores: expected probabilities in \[0, 1\]"):
        ll.update([0, 1], [0.2, 3.0])
    sa = StreamingAUC()
    sa.update([1, 1], [0.3, 0.4])
    with pytest.raises(ValueError, match="only one class is present: all 2 labels seen are 1"):
        sa.compute()
    m = StreamingMetrics()
    m.update([1, 1], [0.3, 0.4])
    assert math.isnan(m.compute()["auc"])
    with pytest.raises(ValueError, match="bins differ"):
        StreamingAUC(bins=8).merge(StreamingAUC(bins=16))
    m.reset()
    with pytest.raises(ValueError, match="no samples seen"):
        m.compute()
