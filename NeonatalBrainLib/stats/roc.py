"""ROC analysis for binary classifiers: AUC, DeLong confidence interval and paired test,
Youden threshold, confusion-matrix metrics and ROC plots.

Conventions
-----------
* ``y_true``: 1 = positive (e.g. injured), 0 = negative (control); booleans accepted.
* ``score``: larger = more likely positive (e.g. P(injured)).
* A subject is called positive iff ``score >= threshold``.
* AUC is the Mann-Whitney probability ``P(S_pos > S_neg) + 1/2 P(S_pos = S_neg)``
  (ties count 1/2), identical to the trapezoidal area under the empirical ROC curve.

References
----------
* DeLong ER, DeLong DM, Clarke-Pearson DL. Comparing the areas under two or more
  correlated receiver operating characteristic curves: a nonparametric approach.
  Biometrics 1988;44:837-845.
* Sun X, Xu W. Fast implementation of DeLong's algorithm for comparing the areas under
  correlated receiver operating characteristic curves. IEEE Signal Process Lett
  2014;21:1389-1393 (mid-rank formulation used here, O(n log n)).
* Youden WJ. Index for rating diagnostic tests. Cancer 1950;3:32-35.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from scipy import stats as _st

from ..imageio import InputError

__all__ = [
    "auc", "delong_auc_ci", "delong_test", "delong_covariance", "roc_curve_points",
    "youden_threshold", "binary_metrics", "evaluation_metrics", "plot_roc",
]


# ----------------------------------------------------------------------------- validation
def _labels(y_true, name: str = "y_true") -> np.ndarray:
    """Binary labels as an int array; raise InputError on anything else."""
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise InputError(f"{name}: expected a 1D sequence of labels, got shape {y.shape}")
    if y.size == 0:
        raise InputError(f"{name}: no subjects")
    if y.dtype == bool:
        return y.astype(int)
    try:
        yf = y.astype(float)
    except (TypeError, ValueError):
        raise InputError(f"{name}: labels must be 0/1, got values like {y[:3].tolist()}") from None
    if not np.all(np.isfinite(yf)):
        raise InputError(f"{name}: {int((~np.isfinite(yf)).sum())} labels are missing (NaN)")
    bad = ~np.isin(yf, (0.0, 1.0))
    if bad.any():
        raise InputError(f"{name}: labels must be 0 or 1, found {sorted(set(yf[bad].tolist()))[:5]}")
    return yf.astype(int)


def _scores(score, n: int, name: str = "score") -> np.ndarray:
    s = np.asarray(score)
    if s.ndim != 1:
        raise InputError(f"{name}: expected a 1D sequence of scores, got shape {s.shape}")
    try:
        s = s.astype(float)
    except (TypeError, ValueError):
        raise InputError(f"{name}: scores must be numbers") from None
    if s.size != n:
        raise InputError(f"{name}: {s.size} scores for {n} labels")
    if not np.all(np.isfinite(s)):
        raise InputError(f"{name}: {int((~np.isfinite(s)).sum())} scores are NaN or Inf")
    return s


def _check_two_classes(y: np.ndarray, name: str = "y_true") -> tuple[int, int]:
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        only = "positive (1)" if n_neg == 0 else "negative (0)"
        raise InputError(f"{name}: only {only} subjects ({y.size}); ROC analysis needs both classes")
    return n_pos, n_neg


# ----------------------------------------------------------------------------- AUC + DeLong
def _structural_components(y: np.ndarray, scores: np.ndarray):
    """Mid-rank DeLong structural components (Sun & Xu 2014).

    ``scores``: k x n.  Returns ``(aucs[k], v10[k, m], v01[k, n0])`` where for positive i
    ``v10_i = P(S_i > S_neg) + 1/2 P(S_i = S_neg)`` and for negative j
    ``v01_j = P(S_pos > S_j) + 1/2 P(S_pos = S_j)``; ``auc = mean(v10) = mean(v01)``.
    """
    pos = y == 1
    x = scores[:, pos]   # k x m
    z = scores[:, ~pos]  # k x n0
    m, n0 = x.shape[1], z.shape[1]
    tx = _st.rankdata(x, axis=1)
    tz = _st.rankdata(z, axis=1)
    t_all = _st.rankdata(np.concatenate([x, z], axis=1), axis=1)
    v10 = (t_all[:, :m] - tx) / n0
    v01 = 1.0 - (t_all[:, m:] - tz) / m
    aucs = v10.mean(axis=1)
    return aucs, v10, v01


def auc(y_true, score) -> float:
    """Area under the ROC curve = Mann-Whitney ``P(S+ > S-) + 1/2 P(S+ = S-)`` (ties count 1/2)."""
    y = _labels(y_true)
    s = _scores(score, y.size)
    _check_two_classes(y)
    aucs, _, _ = _structural_components(y, s[None, :])
    return float(aucs[0])


def delong_covariance(y_true, *scores) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their DeLong covariance matrix for one or more scores on the same subjects.

    ``S = S10 / m + S01 / n`` with ``S10``, ``S01`` the sample covariances (denominator
    m-1, n-1) of the structural components over positives and negatives (DeLong 1988).
    Returns ``(aucs[k], cov[k, k])``.
    """
    y = _labels(y_true)
    if not scores:
        raise InputError("delong_covariance: give at least one score")
    s = np.vstack([_scores(sc, y.size, f"score {i + 1}") for i, sc in enumerate(scores)])
    m, n0 = _check_two_classes(y)
    if m < 2 or n0 < 2:
        raise InputError(f"y_true: DeLong variance needs >= 2 subjects per class, got {m} positive, "
                         f"{n0} negative")
    aucs, v10, v01 = _structural_components(y, s)
    s10 = np.atleast_2d(np.cov(v10, ddof=1))
    s01 = np.atleast_2d(np.cov(v01, ddof=1))
    return aucs, s10 / m + s01 / n0


def delong_auc_ci(y_true, score, alpha: float = 0.05, scale: str = "auc") -> tuple[float, float, float]:
    """AUC and its ``1 - alpha`` DeLong confidence interval ``(auc, low, high)``.

    ``scale="auc"`` (default, as pROC's ``ci.auc(method="delong")``): Wald interval **on the
    AUC scale**, ``auc -/+ z_{1-alpha/2} * sqrt(var_DeLong)``, clipped to [0, 1].
    ``scale="logit"``: Wald interval of ``logit(auc)`` with the delta-method SE
    ``sqrt(var) / (auc (1 - auc))``, transformed back (stays inside (0, 1), asymmetric).
    When every positive outranks every negative the DeLong variance is 0 and the interval
    is ``(1, 1)`` on either scale.
    """
    if not 0.0 < alpha < 1.0:
        raise InputError(f"alpha must lie in (0, 1), got {alpha}")
    if scale not in ("auc", "logit"):
        raise InputError(f"scale must be 'auc' or 'logit', got {scale!r}")
    aucs, cov = delong_covariance(y_true, score)
    a = float(aucs[0])
    se = math.sqrt(max(float(cov[0, 0]), 0.0))
    zq = float(_st.norm.ppf(1.0 - alpha / 2.0))
    if scale == "logit" and 0.0 < a < 1.0 and se > 0:
        centre, half = math.log(a / (1.0 - a)), zq * se / (a * (1.0 - a))
        return a, 1.0 / (1.0 + math.exp(-(centre - half))), 1.0 / (1.0 + math.exp(-(centre + half)))
    return a, max(0.0, a - zq * se), min(1.0, a + zq * se)


def delong_test(y_true, score_a, score_b, alpha: float = 0.05) -> dict:
    """Paired DeLong test of ``AUC_a = AUC_b`` for two scores on the same subjects.

    ``z = (AUC_a - AUC_b) / sqrt(var_a + var_b - 2 cov_ab)``, two-sided normal p-value;
    ``ci_low``/``ci_high``: ``1 - alpha`` Wald interval of the difference ``AUC_a - AUC_b``.
    If the variance of the difference is 0 (identical rankings, or both perfect) and the
    difference is 0, ``z = 0`` and ``p = 1``; if the difference is not 0, ``z`` is None
    (infinite) and ``p = 0``.
    Returns ``dict(auc_a, auc_b, difference, ci_low, ci_high, z, p_value, n)``
    (plus ``n_positive``, ``n_negative``, ``se``).
    """
    y = _labels(y_true)
    aucs, cov = delong_covariance(y, score_a, score_b)
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    se = math.sqrt(var) if var > 1e-15 else 0.0
    zq = float(_st.norm.ppf(1.0 - alpha / 2.0))
    if se > 0:
        z: float | None = diff / se
        p = float(2.0 * _st.norm.sf(abs(z)))
    elif abs(diff) < 1e-12:
        z, p = 0.0, 1.0
    else:
        z, p = None, 0.0
    n_pos = int(y.sum())
    return {
        "auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "difference": diff,
        "ci_low": diff - zq * se, "ci_high": diff + zq * se,
        "z": z, "p_value": p, "n": int(y.size),
        "n_positive": n_pos, "n_negative": int(y.size - n_pos), "se": se,
    }


# ----------------------------------------------------------------------------- curve + threshold
def roc_curve_points(y_true, score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Empirical ROC curve ``(fpr, tpr, thresholds)``.

    ``thresholds`` are the distinct scores in decreasing order preceded by ``+inf``
    (the point (0, 0)); at threshold t a subject is positive iff ``score >= t``.  The
    last point is (1, 1).  The trapezoidal area under these points equals :func:`auc`.
    """
    y = _labels(y_true)
    s = _scores(score, y.size)
    n_pos, n_neg = _check_two_classes(y)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_group = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.size - 1]
    tp = np.cumsum(y_sorted)[last_of_group]
    fp = (last_of_group + 1) - tp
    tpr = np.r_[0.0, tp / n_pos]
    fpr = np.r_[0.0, fp / n_neg]
    thresholds = np.r_[np.inf, s_sorted[last_of_group]]
    return fpr, tpr, thresholds


def youden_threshold(y_true, score) -> float:
    """Threshold maximising Youden's J = sensitivity + specificity - 1.

    Candidates are the observed scores (positive iff ``score >= threshold``); among
    equal J the largest threshold (the most specific rule) is returned.
    """
    fpr, tpr, thr = roc_curve_points(y_true, score)
    j = tpr[1:] - fpr[1:]
    best = int(np.flatnonzero(j >= j.max() - 1e-12)[0])  # thresholds decrease: first = largest
    return float(thr[1:][best])


def _ratio(num: int, den: int) -> float | None:
    return float(num / den) if den > 0 else None


def binary_metrics(y_true, score, threshold: float) -> dict:
    """Confusion-matrix metrics of the rule "positive iff ``score >= threshold``".

    ``accuracy = (TP+TN)/n``, ``sensitivity = TP/(TP+FN)``, ``specificity = TN/(TN+FP)``,
    ``precision = TP/(TP+FP)``, ``npv = TN/(TN+FN)``, ``f1 = 2TP/(2TP+FP+FN)``; a ratio
    whose denominator is 0 is None (JSON null), not NaN.  Single-class input is allowed.
    """
    y = _labels(y_true)
    s = _scores(score, y.size)
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise InputError(f"threshold must be a number, got {threshold!r}") from None
    if math.isnan(t):
        raise InputError("threshold is NaN")
    pred = s >= t
    pos = y == 1
    tp = int(np.sum(pred & pos))
    fp = int(np.sum(pred & ~pos))
    tn = int(np.sum(~pred & ~pos))
    fn = int(np.sum(~pred & pos))
    n = int(y.size)
    return {
        "threshold": t, "n": n, "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "accuracy": _ratio(tp + tn, n),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "precision": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def evaluation_metrics(y_true, score, threshold: float | None = None, alpha: float = 0.05) -> dict:
    """Everything a classifier's ``metrics.json`` reports, from one set of predictions.

    ``auc`` (ties count 1/2), ``auc_ci_low``/``auc_ci_high`` (DeLong, AUC scale; None when a
    class has < 2 subjects), then :func:`binary_metrics` at ``threshold`` (default: the
    :func:`youden_threshold` of these data), plus ``n_positive``, ``n_negative``,
    ``threshold_source`` ("given" or "youden").  All values are JSON-safe (no NaN).
    """
    y = _labels(y_true)
    s = _scores(score, y.size)
    n_pos, n_neg = _check_two_classes(y)
    a = auc(y, s)
    try:
        _, lo, hi = delong_auc_ci(y, s, alpha=alpha)
    except InputError:
        lo = hi = None
    source = "given"
    if threshold is None:
        threshold, source = youden_threshold(y, s), "youden"
    out = {"auc": a, "auc_ci_low": lo, "auc_ci_high": hi}
    out.update(binary_metrics(y, s, threshold))
    out.update({"n_positive": n_pos, "n_negative": n_neg, "threshold_source": source})
    return out


# ----------------------------------------------------------------------------- plot
def _new_figure(width_in: float = 5.5, height_in: float = 5.0):
    """A matplotlib Figure on the Agg canvas (no pyplot global state, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def plot_roc(curves: Mapping[str, tuple[Sequence, Sequence]], path: str | os.PathLike,
             title: str | None = None, alpha: float = 0.05) -> Path:
    """Plot ROC curves (``label -> (y_true, score)``) to a PNG; the legend gives
    AUC with its DeLong ``1 - alpha`` CI (or AUC alone when a class has < 2 subjects)."""
    if not curves:
        raise InputError("plot_roc: no curves given")
    fig = _new_figure()
    ax = fig.add_subplot(1, 1, 1)
    for label, (y_true, score) in curves.items():
        fpr, tpr, _ = roc_curve_points(y_true, score)
        try:
            a, lo, hi = delong_auc_ci(y_true, score, alpha=alpha)
            text = f"{label}: AUC {a:.3f} ({100 * (1 - alpha):.0f}% CI {lo:.3f}-{hi:.3f})"
        except InputError:
            text = f"{label}: AUC {auc(y_true, score):.3f}"
        ax.plot(fpr, tpr, lw=1.8, label=text)
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="chance")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity (true positive rate)")
    if title:
        ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
