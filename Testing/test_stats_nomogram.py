"""stats.nomogram against independent fits (statsmodels GLM IRLS, scikit-learn) and formulas."""
import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score

from NeonatalBrainLib.imageio import InputError
from NeonatalBrainLib.stats import nomogram as nm


def make_cohort(seed=0, n=160, prefix="s"):
    rng = np.random.default_rng(seed)
    bw = rng.normal(3000, 600, n).round()
    latent = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(-0.4 + 1.4 * latent - 0.0012 * (bw - 3000))))).astype(int)
    dl = 1 / (1 + np.exp(-(latent + rng.normal(scale=1.0, size=n))))
    return pd.DataFrame({"subject_id": [f"{prefix}{i:03d}" for i in range(n)], "label": y,
                         "dl_score": dl, "birthweight_g": bw})


@pytest.fixture(scope="module")
def fitted():
    df = make_cohort()
    return df, nm.fit_nomogram(df, "label", ["dl_score", "birthweight_g"])


def test_coefficients_equal_independent_unpenalised_fits(fitted):
    df, model = fitted
    X = sm.add_constant(df[["dl_score", "birthweight_g"]].to_numpy())
    glm = sm.GLM(df["label"].to_numpy(), X, family=sm.families.Binomial()).fit()
    ours = np.array([model.coefficients[k] for k in ("intercept", "dl_score", "birthweight_g")])
    np.testing.assert_allclose(ours, glm.params, rtol=1e-6)
    # scikit-learn, unpenalised, on standardised predictors, mapped back to raw units
    mu, sd = df[["dl_score", "birthweight_g"]].mean(), df[["dl_score", "birthweight_g"]].std()
    lr = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10000).fit(
        ((df[["dl_score", "birthweight_g"]] - mu) / sd).to_numpy(), df["label"])
    slopes = lr.coef_[0] / sd.to_numpy()
    intercept = lr.intercept_[0] - (slopes * mu.to_numpy()).sum()
    np.testing.assert_allclose(ours, np.r_[intercept, slopes], rtol=1e-3)
    assert list(model.coefficients) == ["intercept", "dl_score", "birthweight_g"]
    # odds ratios and Wald CIs from the GLM's standard errors
    for j, name in enumerate(["dl_score", "birthweight_g"], start=1):
        orr = model.odds_ratios[name]
        assert orr["odds_ratio"] == pytest.approx(math.exp(glm.params[j]), rel=1e-6)
        assert orr["ci_low"] == pytest.approx(math.exp(glm.params[j] - 1.959963984540054 * glm.bse[j]), rel=1e-5)
        assert orr["ci_high"] == pytest.approx(math.exp(glm.params[j] + 1.959963984540054 * glm.bse[j]), rel=1e-5)
        assert orr["p_value"] == pytest.approx(glm.pvalues[j], rel=1e-4)
    lp = X @ glm.params
    assert model.auc == pytest.approx(roc_auc_score(df["label"], lp), abs=1e-12)
    assert model.n == len(df) and model.n_events == int(df["label"].sum())
    np.testing.assert_allclose(model.predict_proba(df), glm.fittedvalues, rtol=1e-6)
    again = nm.NomogramModel.from_dict(model.to_dict())
    np.testing.assert_allclose(again.predict_proba(df), model.predict_proba(df))


def _hl_manual(y, p, g=10):
    order = np.argsort(p, kind="mergesort")
    n = len(p)
    sizes = [n // g + (1 if i < n % g else 0) for i in range(g)]
    chi2, start = 0.0, 0
    for size in sizes:
        idx = order[start:start + size]
        start += size
        o, e = y[idx].sum(), p[idx].sum()
        chi2 += (o - e) ** 2 / (e * (1 - e / size))
    from scipy.stats import chi2 as chi2_dist
    return chi2, chi2_dist.sf(chi2, g - 2)


def test_calibration_brier_hl_and_recalibration(fitted):
    df, model = fitted
    y = df["label"].to_numpy()
    p = model.predict_proba(df)
    cal = nm.calibration(y, p, n_bins=10)
    assert cal["brier"] == pytest.approx(brier_score_loss(y, p), rel=1e-12)
    chi2, pval = _hl_manual(y, p)
    assert cal["hosmer_lemeshow"]["chi2"] == pytest.approx(chi2, rel=1e-10)
    assert cal["hosmer_lemeshow"]["p_value"] == pytest.approx(pval, rel=1e-8)
    assert cal["hosmer_lemeshow"]["df"] == 8
    # apparent calibration of a maximum-likelihood logistic model is exact
    assert cal["intercept"] == pytest.approx(0.0, abs=1e-6)
    assert cal["slope"] == pytest.approx(1.0, abs=1e-6)
    # overconfident predictions on another cohort: slope ~ 1/2, compare with sklearn
    val = make_cohort(seed=5, n=300)
    lp = model.linear_predictor(val)
    p_over = 1 / (1 + np.exp(-2 * lp))
    cal2 = nm.calibration(val["label"], p_over)
    lr = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10000).fit((2 * lp)[:, None], val["label"])
    assert cal2["slope"] == pytest.approx(lr.coef_[0, 0], rel=1e-4)
    assert cal2["slope"] < 0.8
    assert sum(b["n"] for b in cal2["bins"]) == 300


def test_decision_curve_matches_formula():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 90)
    p = np.clip(0.3 * y + rng.random(90) * 0.7, 0, 1)
    thresholds = [0.05, 0.2, 0.5, 0.8]
    tab = nm.decision_curve(y, p, thresholds)
    for _, row in tab.iterrows():
        t = row["threshold"]
        tp = sum(1 for yi, pi in zip(y, p) if pi >= t and yi == 1)
        fp = sum(1 for yi, pi in zip(y, p) if pi >= t and yi == 0)
        assert row["net_benefit_model"] == pytest.approx(tp / 90 - fp / 90 * t / (1 - t))
        prev = y.mean()
        assert row["net_benefit_all"] == pytest.approx(prev - (1 - prev) * t / (1 - t))
        assert row["net_benefit_none"] == 0
    # treating everyone equals the treat-all strategy
    all_tab = nm.decision_curve(y, np.ones(90) * 0.99, thresholds)
    np.testing.assert_allclose(all_tab["net_benefit_model"], all_tab["net_benefit_all"])
    with pytest.raises(InputError, match="between 0 and 1"):
        nm.decision_curve(y, p, [0.0, 0.5])


def test_apply_and_validate(fitted):
    df, model = fitted
    val = make_cohort(seed=9, n=120, prefix="v")
    out = nm.apply_nomogram(model, val)
    beta = np.array([model.coefficients[k] for k in ("intercept", "dl_score", "birthweight_g")])
    lp = np.c_[np.ones(len(val)), val[["dl_score", "birthweight_g"]].to_numpy()] @ beta
    np.testing.assert_allclose(out["linear_predictor"], lp)
    np.testing.assert_allclose(out["probability"], 1 / (1 + np.exp(-lp)))
    assert out["subject_id"].tolist() == val["subject_id"].tolist()
    v = nm.validate_nomogram(model, val)
    assert v["auc"] == pytest.approx(roc_auc_score(val["label"], lp))
    assert v["n"] == 120 and v["auc_ci_low"] <= v["auc"] <= v["auc_ci_high"]


def test_bad_input_errors():
    df = make_cohort(n=60)
    with pytest.raises(InputError, match="single class"):
        nm.fit_nomogram(df.assign(label=1), "label", ["dl_score"])
    with pytest.raises(InputError, match="'gestational_age_weeks' is missing"):
        nm.fit_nomogram(df, "label", ["dl_score", "gestational_age_weeks"])
    sep = df.assign(dl_score=df["label"] * 0.5 + 0.25 + np.linspace(0, 0.1, len(df)))
    with pytest.raises(InputError, match="separated by dl_score"):
        nm.fit_nomogram(sep, "label", ["dl_score", "birthweight_g"])
    # quasi-complete: one tie at the boundary
    quasi = sep.copy()
    quasi.loc[quasi.index[0], ["label", "dl_score"]] = [1 - quasi["label"].iloc[0], 0.5]
    quasi.loc[quasi.index[1], ["label", "dl_score"]] = [quasi["label"].iloc[0], 0.5]
    with pytest.raises(InputError, match="separated"):
        nm.fit_nomogram(quasi, "label", ["dl_score"])
    with pytest.raises(InputError, match="constant"):
        nm.fit_nomogram(df.assign(birthweight_g=3000), "label", ["dl_score", "birthweight_g"])
    bad = df.copy()
    bad.loc[3, "birthweight_g"] = np.nan
    with pytest.raises(InputError, match="s003"):
        nm.fit_nomogram(bad, "label", ["dl_score", "birthweight_g"])
    assert nm.find_separation(sm.add_constant(df[["dl_score"]].to_numpy()), df["label"].to_numpy()) is None


def test_plots_written(fitted, tmp_path):
    df, model = fitted
    y, p = df["label"].to_numpy(), model.predict_proba(df)
    for path in (nm.plot_nomogram(model, tmp_path / "n.png"),
                 nm.plot_calibration(y, p, tmp_path / "c.png"),
                 nm.plot_decision_curve(nm.decision_curve(y, p), tmp_path / "d.png")):
        assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 10000
    sc = nm.nomogram_scales(model)
    assert max(sc["points_max"].values()) == pytest.approx(100.0)
    # total points -> linear predictor reproduces the model at the range corners
    lo = {k: v[0] for k, v in model.predictor_ranges.items()}
    corner = pd.DataFrame([lo])
    pts = sum(100 * model.coefficients[k] * (lo[k] - sc["refs"][k]) / sc["max_span"] for k in lo)
    assert model.linear_predictor(corner)[0] == pytest.approx(sc["lp0"] + pts * sc["max_span"] / 100)
