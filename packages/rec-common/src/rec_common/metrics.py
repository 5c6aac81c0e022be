"""Click-prediction metrics: exact functions, and streaming forms for data that does not fit.

Exact: :func:`auc` (ties count one half, as ``sklearn.metrics.roc_auc_score``),
:func:`log_loss`, :func:`normalized_entropy` (log loss over the entropy of the base rate,
Meta's NE: below 1 means better than always predicting the average CTR), :func:`calibration`
(predicted clicks / actual clicks) and :func:`accuracy`. Inputs may be numpy arrays, lists
or torch tensors (any device); labels must be 0 or 1.

Streaming: :class:`StreamingMetrics` (and :class:`StreamingAUC`, :class:`StreamingLogLoss`)
take ``update(labels, scores)`` chunk by chunk in O(bins) memory; ``compute()`` returns a
dict. Scores are probabilities unless ``from_logits=True``.

>>> auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
0.75
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

DEFAULT_EPS = 1e-7
DEFAULT_BINS = 2**16


# ---------------------------------------------------------------------- input handling
def _to_numpy(x: Any, name: str) -> np.ndarray:
    """A 1-D float64 array from a list, numpy array or torch tensor ([N] or [N, 1])."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        x = x.detach().cpu()
        if getattr(x, "is_floating_point", lambda: False)():
            x = x.double()
        x = x.numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{name}: expected numbers (array, list or tensor), got {type(x).__name__} ({exc})"
        ) from None
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array (or [N, 1]), got shape {arr.shape}")
    return arr


def _check_labels(labels: np.ndarray) -> None:
    bad = (labels != 0) & (labels != 1)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise ValueError(f"labels: expected 0 or 1, got {float(labels[pos]):g} at position {pos}")


def _prepare(labels: Any, scores: Any, score_name: str, allow_empty: bool = False):
    y = _to_numpy(labels, "labels")
    s = _to_numpy(scores, score_name)
    if y.shape != s.shape:
        raise ValueError(
            f"labels has {y.shape[0]} entries but {score_name} has {s.shape[0]}; expected one "
            "score per label"
        )
    if y.size == 0 and not allow_empty:
        raise ValueError(f"labels and {score_name} are empty; expected at least one sample")
    _check_labels(y)
    finite = np.isfinite(s)
    if not finite.all():
        pos = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"{score_name}: {s[pos]} at position {pos}; expected finite numbers")
    return y, s


def _check_probs(p: np.ndarray, name: str = "probs") -> None:
    if p.size and (p.min() < 0.0 or p.max() > 1.0):
        bad = float(p.min()) if p.min() < 0.0 else float(p.max())
        raise ValueError(
            f"{name}: expected probabilities in [0, 1], found {bad}; if these are logits, "
            "apply a sigmoid first (or use from_logits=True in the streaming metrics)"
        )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def _bce_sum(y: np.ndarray, p: np.ndarray, eps: float) -> float:
    p = np.clip(p, eps, 1.0 - eps)
    return float(-(y * np.log(p) + (1.0 - y) * np.log1p(-p)).sum())


def _entropy(rate: float) -> float:
    if rate <= 0.0 or rate >= 1.0:
        return 0.0
    return -(rate * math.log(rate) + (1.0 - rate) * math.log(1.0 - rate))


def _one_class_error(y: np.ndarray, what: str) -> ValueError:
    present = int(y[0]) if y.size else None
    return ValueError(
        f"{what} is undefined when only one class is present: all {y.size} labels are {present}; "
        "it needs both positives (1) and negatives (0)"
    )


# ---------------------------------------------------------------------- exact metrics
def auc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve, exact; tied scores count one half (the Mann-Whitney U).

    Scores may be probabilities, logits or any ranking score. Sorts once: O(N log N).
    Raises ``ValueError`` if only one class is present.
    """
    y, s = _prepare(labels, scores, "scores")
    n_pos = float(y.sum())
    n_neg = float(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise _one_class_error(y, "AUC")
    order = np.argsort(s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    # Group equal scores: per group, positives and negatives.
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    pos_g = np.add.reduceat(y_sorted, starts)
    neg_g = np.diff(np.r_[starts, y.size]) - pos_g
    neg_below = np.cumsum(neg_g) - neg_g
    return float((pos_g * (neg_below + 0.5 * neg_g)).sum() / (n_pos * n_neg))


def log_loss(labels: Any, probs: Any, eps: float = DEFAULT_EPS) -> float:
    """Mean binary cross-entropy of probabilities, clipped to ``[eps, 1-eps]``."""
    if not 0.0 <= eps < 0.5:
        raise ValueError(f"eps: expected 0 <= eps < 0.5, got {eps}")
    y, p = _prepare(labels, probs, "probs")
    _check_probs(p)
    return _bce_sum(y, p, eps) / y.size


def normalized_entropy(labels: Any, probs: Any, eps: float = DEFAULT_EPS) -> float:
    """Log loss divided by the entropy of the base rate (the mean label), as in Meta's NE.

    1.0 is as good as always predicting the average CTR; lower is better. Raises
    ``ValueError`` if only one class is present (the base-rate entropy is then 0).
    """
    y, p = _prepare(labels, probs, "probs")
    _check_probs(p)
    h = _entropy(float(y.mean()))
    if h == 0.0:
        raise _one_class_error(y, "normalized entropy")
    return _bce_sum(y, p, eps) / y.size / h


def calibration(labels: Any, probs: Any) -> float:
    """Predicted clicks over actual clicks: ``sum(probs) / sum(labels)``; 1.0 is calibrated."""
    y, p = _prepare(labels, probs, "probs")
    _check_probs(p)
    clicks = float(y.sum())
    if clicks == 0:
        raise ValueError(f"calibration is undefined without positives: all {y.size} labels are 0")
    return float(p.sum()) / clicks


def accuracy(labels: Any, probs: Any, threshold: float = 0.5) -> float:
    """Fraction of samples where ``probs > threshold`` equals the label."""
    y, p = _prepare(labels, probs, "probs")
    _check_probs(p)
    return float(((p > threshold) == (y == 1)).mean())


# ---------------------------------------------------------------------- streaming
class StreamingAUC:
    """AUC over chunks from fixed histograms of the probability, O(bins) memory.

    Scores are binned into ``bins`` equal-width bins over [0, 1] (logits go through a
    sigmoid first when ``from_logits=True``); pairs in different bins are ordered exactly,
    pairs in the same bin count one half, as ties do. Error bound: the result differs from
    the exact AUC by at most ``0.5 * sum_b pos_b * neg_b / (P * N)``, which ``compute()``
    returns as ``auc_error_bound``, computed from the data seen. With 2**16 bins and
    scores spread over more than a few bins it is typically below 1e-4.
    """

    def __init__(self, bins: int = DEFAULT_BINS, from_logits: bool = False) -> None:
        if int(bins) < 1:
            raise ValueError(f"bins: expected >= 1, got {bins}")
        self.bins = int(bins)
        self.from_logits = bool(from_logits)
        self.reset()

    def reset(self) -> None:
        self.pos = np.zeros(self.bins, dtype=np.int64)
        self.neg = np.zeros(self.bins, dtype=np.int64)

    def _probs(self, scores: np.ndarray) -> np.ndarray:
        if self.from_logits:
            return _sigmoid(scores)
        _check_probs(scores, "scores")
        return scores

    def update(self, labels: Any, scores: Any) -> None:
        y, s = _prepare(labels, scores, "scores", allow_empty=True)
        self._add(y, self._probs(s))

    def _add(self, y: np.ndarray, p: np.ndarray) -> None:
        idx = np.minimum((p * self.bins).astype(np.int64), self.bins - 1)
        pos = np.bincount(idx, weights=y, minlength=self.bins).astype(np.int64)  # exact: 0/1 sums
        self.pos += pos
        self.neg += np.bincount(idx, minlength=self.bins) - pos

    def merge(self, other: StreamingAUC) -> None:
        """Add another accumulator's counts (e.g. from another process); same bins."""
        if other.bins != self.bins:
            raise ValueError(f"merge: bins differ ({self.bins} vs {other.bins})")
        self.pos += other.pos
        self.neg += other.neg

    def compute(self) -> dict[str, float]:
        n_pos, n_neg = float(self.pos.sum()), float(self.neg.sum())
        if n_pos == 0 or n_neg == 0:
            cls = 1 if n_pos else 0
            raise ValueError(
                f"AUC is undefined when only one class is present: all {int(n_pos + n_neg)} "
                f"labels seen are {cls}; it needs both positives (1) and negatives (0)"
            )
        pos, neg = self.pos.astype(np.float64), self.neg.astype(np.float64)
        neg_below = np.cumsum(neg) - neg
        value = (pos * (neg_below + 0.5 * neg)).sum() / (n_pos * n_neg)
        bound = 0.5 * (pos * neg).sum() / (n_pos * n_neg)
        return {"auc": float(value), "auc_error_bound": float(bound)}


class StreamingLogLoss:
    """Running log loss (clipped as :func:`log_loss`), NE, calibration and accuracy.

    Keeps sums in float64: loss, labels, probabilities, correct predictions and count.
    With ``from_logits=True`` the scores go through a sigmoid first (then clipped, so a
    single sample's loss is capped at -log(eps), about 16.1).
    """

    def __init__(
        self, from_logits: bool = False, eps: float = DEFAULT_EPS, threshold: float = 0.5
    ) -> None:
        if not 0.0 <= eps < 0.5:
            raise ValueError(f"eps: expected 0 <= eps < 0.5, got {eps}")
        self.from_logits = bool(from_logits)
        self.eps = float(eps)
        self.threshold = float(threshold)
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.loss_sum = 0.0
        self.label_sum = 0.0
        self.prob_sum = 0.0
        self.correct = 0

    def update(self, labels: Any, scores: Any) -> None:
        y, s = _prepare(labels, scores, "scores", allow_empty=True)
        p = _sigmoid(s) if self.from_logits else s
        if not self.from_logits:
            _check_probs(p, "scores")
        self._add(y, p)

    def _add(self, y: np.ndarray, p: np.ndarray) -> None:
        self.count += int(y.size)
        self.loss_sum += _bce_sum(y, p, self.eps)
        self.label_sum += float(y.sum())
        self.prob_sum += float(p.sum())
        self.correct += int(((p > self.threshold) == (y == 1)).sum())

    def merge(self, other: StreamingLogLoss) -> None:
        """Add another accumulator's sums (e.g. from another process)."""
        self.count += other.count
        self.loss_sum += other.loss_sum
        self.label_sum += other.label_sum
        self.prob_sum += other.prob_sum
        self.correct += other.correct

    def compute(self) -> dict[str, float]:
        """``log_loss``, ``normalized_entropy``, ``calibration``, ``accuracy``, ``ctr``, ``count``.

        NE and calibration are NaN while undefined (one class seen, or no clicks).
        """
        if self.count == 0:
            raise ValueError("no samples seen: call update(labels, scores) first")
        ll = self.loss_sum / self.count
        ctr = self.label_sum / self.count
        h = _entropy(ctr)
        return {
            "log_loss": ll,
            "normalized_entropy": ll / h if h > 0 else math.nan,
            "calibration": self.prob_sum / self.label_sum if self.label_sum > 0 else math.nan,
            "accuracy": self.correct / self.count,
            "ctr": ctr,
            "count": float(self.count),
        }


class StreamingMetrics:
    """All streaming metrics at once: :class:`StreamingAUC` plus :class:`StreamingLogLoss`.

    >>> m = StreamingMetrics()
    >>> m.update([0, 1, 1], [0.2, 0.7, 0.6]); m.update([0], [0.4])
    >>> round(m.compute()["auc"], 6)
    1.0

    ``compute()`` returns ``auc`` (NaN if only one class was seen) and ``auc_error_bound``
    with the keys of :meth:`StreamingLogLoss.compute`. Labels and scores may be torch
    tensors on any device; they are copied to the host.
    """

    def __init__(
        self,
        from_logits: bool = False,
        bins: int = DEFAULT_BINS,
        eps: float = DEFAULT_EPS,
        threshold: float = 0.5,
    ) -> None:
        self.from_logits = bool(from_logits)
        self.auc = StreamingAUC(bins=bins, from_logits=from_logits)
        self.loss = StreamingLogLoss(from_logits=from_logits, eps=eps, threshold=threshold)

    def reset(self) -> None:
        self.auc.reset()
        self.loss.reset()

    def update(self, labels: Any, scores: Any) -> None:
        y, s = _prepare(labels, scores, "scores", allow_empty=True)
        if self.from_logits:
            p = _sigmoid(s)
        else:
            _check_probs(s, "scores")
            p = s
        self.auc._add(y, p)
        self.loss._add(y, p)

    def merge(self, other: StreamingMetrics) -> None:
        self.auc.merge(other.auc)
        self.loss.merge(other.loss)

    def compute(self) -> dict[str, float]:
        out = self.loss.compute()
        try:
            out.update(self.auc.compute())
        except ValueError:
            out.update({"auc": math.nan, "auc_error_bound": math.nan})
        return out
