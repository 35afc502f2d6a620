"""NeonatalBrainLib.stats.roc checked against independent computations (scikit-learn,
a direct O(n^2) DeLong written here, a bootstrap)."""
import json
import math

import numpy as np
import pytest
from sklearn import metrics as skm

from NeonatalBrainLib.imageio import InputError
from NeonatalBrainLib.stats import roc


def _data(seed=0, n=80, shift=1.0, ties=True):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    s = rng.normal(size=n) + shift * y
    if ties:
        s = np.round(s, 1)  # many ties
    return y, s


def _delong_direct(y, scores):
    """DeLong 1988 structural components by explicit pairwise comparison (O(m n))."""
    pos, neg = y == 1, y == 0
    v10, v01, aucs = [], [], []
    for s in scores:
        x, z = s[pos], s[neg]
        psi = (x[:, None] > z[None, :]).astype(float) + 0.5 * (x[:, None] == z[None, :])
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
        aucs.append(psi.mean())
    v10, v01 = np.array(v10), np.array(v01)
    m, n = v10.shape[1], v01.shape[1]
    cov = np.cov(v10) / m + np.cov(v01) / n
    return np.array(aucs), np.atleast_2d(cov)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_sklearn_with_ties(seed):
    y, s = _data(seed)
    assert len(np.unique(s)) < len(s)  # ties are present
    assert roc.auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert roc.auc(y.astype(bool), s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)


def test_delong_variance_matches_direct_structural_components():
    y, a = _data(3)
    _, b = _data(4)
    b = b + 0.5 * a
    aucs, cov = roc.delong_covariance(y, a, b)
    aucs_ref, cov_ref = _delong_direct(y, [a, b])
    np.testing.assert_allclose(aucs, aucs_ref, atol=1e-12)
    np.testing.assert_allclose(cov, cov_ref, rtol=1e-10, atol=1e-14)
    auc_value, lo, hi = roc.delong_auc_ci(y, a)
    se = math.sqrt(cov_ref[0, 0])
    assert auc_value == pytest.approx(aucs_ref[0])
    assert lo == pytest.approx(max(0, aucs_ref[0] - 1.959963984540054 * se), abs=1e-9)
    assert hi == pytest.approx(min(1, aucs_ref[0] + 1.959963984540054 * se), abs=1e-9)


def test_ci_clipped_and_degenerate_perfect_separation():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    assert roc.delong_auc_ci(y, s) == (1.0, 1.0, 1.0)
    y2, s2 = _data(5, n=30, shift=3.0)
    a, lo, hi = roc.delong_auc_ci(y2, s2)
    assert 0.0 <= lo <= a <= hi <= 1.0


def test_delong_test_symmetric_and_close_to_bootstrap():
    rng = np.random.default_rng(7)
    n = 200
    y = rng.integers(0, 2, n)
    latent = rng.normal(size=n) + 1.0 * y
    a = latent + rng.normal(scale=0.6, size=n)
    b = latent + rng.normal(scale=1.2, size=n)
    ab = roc.delong_test(y, a, b)
    ba = roc.delong_test(y, b, a)
    assert ab["difference"] == pytest.approx(-ba["difference"])
    assert ab["z"] == pytest.approx(-ba["z"])
    assert ab["p_value"] == pytest.approx(ba["p_value"])
    assert ab["ci_low"] == pytest.approx(-ba["ci_high"])
    assert ab["n"] == n
    assert ab["auc_a"] == pytest.approx(skm.roc_auc_score(y, a))
    assert ab["auc_b"] == pytest.approx(skm.roc_auc_score(y, b))
    # paired bootstrap SE of the AUC difference
    diffs = []
    for _ in range(400):
        idx = rng.integers(0, n, n)
        if y[idx].min() == y[idx].max():
            continue
        diffs.append(skm.roc_auc_score(y[idx], a[idx]) - skm.roc_auc_score(y[idx], b[idx]))
    se_boot = float(np.std(diffs, ddof=1))
    assert ab["se"] == pytest.approx(se_boot, rel=0.25)
    z = ab["difference"] / ab["se"]
    assert ab["z"] == pytest.approx(z)
    assert ab["p_value"] == pytest.approx(2 * (1 - 0.5 * (1 + math.erf(abs(z) / math.sqrt(2)))), rel=1e-6)
    assert ab["ci_low"] < ab["difference"] < ab["ci_high"]
    same = roc.delong_test(y, a, a)
    assert same["difference"] == 0 and same["p_value"] == 1.0 and same["z"] == 0.0
    json.dumps(ab)


def test_roc_curve_points_match_sklearn_and_area():
    y, s = _data(8)
    fpr, tpr, thr = roc.roc_curve_points(y, s)
    f_ref, t_ref, thr_ref = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, f_ref)
    np.testing.assert_allclose(tpr, t_ref)
    np.testing.assert_allclose(thr[1:], thr_ref[1:])
    assert np.isinf(thr[0])
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))  # trapezoids
    assert area == pytest.approx(roc.auc(y, s))


def test_youden_threshold_maximises_j_by_brute_force():
    y, s = _data(9)
    t = roc.youden_threshold(y, s)
    assert t in set(s.tolist())

    def j(th):
        m = roc.binary_metrics(y, s, th)
        return m["sensitivity"] + m["specificity"] - 1
    best = max(j(c) for c in np.unique(s))
    assert j(t) == pytest.approx(best)
    assert all(j(c) < best - 1e-12 for c in np.unique(s) if c > t)


def test_binary_metrics_match_sklearn():
    y, s = _data(10)
    thr = float(np.median(s))
    m = roc.binary_metrics(y, s, thr)
    pred = (s >= thr).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (tn, fp, fn, tp)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["sensitivity"] == pytest.approx(skm.recall_score(y, pred))
    assert m["specificity"] == pytest.approx(skm.recall_score(1 - y, 1 - pred))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert m["npv"] == pytest.approx(skm.precision_score(1 - y, 1 - pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["n"] == len(y)
    # nobody called positive: precision undefined -> None, still valid JSON
    none_pos = roc.binary_metrics(y, s, s.max() + 1)
    assert none_pos["precision"] is None and none_pos["sensitivity"] == 0.0
    json.loads(json.dumps(none_pos, allow_nan=False))


def test_bad_input_raises_input_error():
    with pytest.raises(InputError, match="only"):
        roc.auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(InputError, match="0 or 1"):
        roc.auc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(InputError, match="NaN"):
        roc.auc([0, 1, 1], [0.1, np.nan, 0.3])
    with pytest.raises(InputError, match="3 scores for 4"):
        roc.auc([0, 1, 1, 0], [0.1, 0.2, 0.3])


def test_plot_roc_writes_png(tmp_path):
    y, s = _data(11)
    _, s2 = _data(12)
    out = roc.plot_roc({"model A": (y, s), "model B": (y, s2)}, tmp_path / "roc.png", title="t")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_evaluation_metrics_consistent_with_parts():
    y, s = _data(13)
    m = roc.evaluation_metrics(y, s)
    assert m["threshold_source"] == "youden" and m["threshold"] == roc.youden_threshold(y, s)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, s))
    assert (m["auc"], m["auc_ci_low"], m["auc_ci_high"]) == roc.delong_auc_ci(y, s)
    pred = (s >= m["threshold"]).astype(int)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["n_positive"] + m["n_negative"] == m["n"] == len(y)
    given = roc.evaluation_metrics(y, s, threshold=0.5)
    assert given["threshold"] == 0.5 and given["threshold_source"] == "given"
    json.loads(json.dumps(given, allow_nan=False))


def test_logit_scale_interval():
    y, s = _data(14, n=60, shift=1.5)
    a, lo, hi = roc.delong_auc_ci(y, s, scale="logit")
    aucs, cov = _delong_direct(y, [s])
    se = math.sqrt(cov[0, 0]) / (a * (1 - a))
    lg = math.log(a / (1 - a))
    assert lo == pytest.approx(1 / (1 + math.exp(-(lg - 1.959963984540054 * se))))
    assert hi == pytest.approx(1 / (1 + math.exp(-(lg + 1.959963984540054 * se))))
    assert 0 < lo < a < hi < 1
    with pytest.raises(InputError, match="scale"):
        roc.delong_auc_ci(y, s, scale="probit")
