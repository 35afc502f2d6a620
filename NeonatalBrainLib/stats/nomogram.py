"""Deep-learning clinical nomogram: unpenalised logistic regression of the outcome on the
deep-learning score and clinical variables in raw units, with calibration, decision-curve
analysis, a points nomogram and application to a validation cohort.

Model
-----
``logit P(outcome = 1) = intercept + sum_j beta_j x_j`` fitted by maximum likelihood
(statsmodels ``Logit``, Newton-Raphson, no penalty) on the predictors in their raw units
(``dl_score`` as a probability 0-1, ``birthweight_g`` in grams ...).  Odds ratios are per one
raw unit: ``OR_j = exp(beta_j)`` with Wald 95% CI ``exp(beta_j -/+ 1.96 SE_j)`` and Wald p.
``auc``: Mann-Whitney AUC of the fitted linear predictor on the fitting data (apparent AUC).

Separation: when a linear combination of the predictors orders the outcome perfectly
(complete) or with ties only at the boundary (quasi-complete), the maximum-likelihood
coefficients do not exist (they diverge).  This is detected before fitting with the linear
program of Konis (2007) and reported as an :class:`InputError` naming the predictors involved.

References: Steyerberg EW. Clinical Prediction Models, 2nd ed., Springer 2019 (calibration
intercept/slope); Hosmer DW, Lemeshow S. Applied Logistic Regression (goodness of fit);
Vickers AJ, Elkin EB. Decision curve analysis. Med Decis Making 2006;26:565-574;
Iasonos A et al. How to build and interpret a nomogram. J Clin Oncol 2008;26:1364-1370;
Konis K. Linear programming algorithms for detecting separated data in binary logistic
regression models. DPhil thesis, Oxford 2007.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as _st

from ..imageio import InputError
from . import roc

__all__ = ["NomogramModel", "fit_nomogram", "apply_nomogram", "validate_nomogram", "calibration",
           "decision_curve", "plot_nomogram", "plot_calibration", "plot_decision_curve",
           "find_separation", "DEFAULT_THRESHOLDS"]

#: Threshold probabilities of the decision curve: 0.01, 0.02, ..., 0.99.
DEFAULT_THRESHOLDS = np.round(np.arange(1, 100) / 100.0, 2)

#: Predicted probabilities are clipped to [EPS, 1 - EPS] before taking logits.
EPS = 1e-10


# ----------------------------------------------------------------------------- model
@dataclass
class NomogramModel:
    """A fitted nomogram (logistic model in raw units); see :func:`fit_nomogram`."""

    outcome: str
    predictors: list[str]
    coefficients: dict[str, float]          # "intercept" first, then one key per predictor
    std_errors: dict[str, float]
    odds_ratios: dict[str, dict]            # per predictor: odds_ratio, ci_low, ci_high, p_value
    auc: float
    auc_ci_low: float
    auc_ci_high: float
    n: int
    n_events: int
    predictor_ranges: dict[str, list[float]] = field(default_factory=dict)  # [min, max] in the fit data

    def linear_predictor(self, df: pd.DataFrame) -> np.ndarray:
        """``intercept + sum beta_j x_j`` for each row of ``df``."""
        x = _design(df, self.predictors, "data")
        beta = np.array([self.coefficients["intercept"]] + [self.coefficients[p] for p in self.predictors])
        return x @ beta

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        """Predicted probability of the outcome: ``1 / (1 + exp(-linear_predictor))``."""
        return _expit(self.linear_predictor(df))

    def to_dict(self) -> dict:
        return {
            "outcome": self.outcome, "predictors": list(self.predictors),
            "coefficients": dict(self.coefficients), "std_errors": dict(self.std_errors),
            "odds_ratios": {k: dict(v) for k, v in self.odds_ratios.items()},
            "auc": self.auc, "auc_ci_low": self.auc_ci_low, "auc_ci_high": self.auc_ci_high,
            "n": self.n, "n_events": self.n_events,
            "predictor_ranges": {k: list(v) for k, v in self.predictor_ranges.items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> "NomogramModel":
        """Inverse of :meth:`to_dict` (e.g. a nomogram.json written by the CLI)."""
        try:
            coefficients = {k: float(v) for k, v in d["coefficients"].items()}
            predictors = list(d.get("predictors") or [k for k in coefficients if k != "intercept"])
            return cls(outcome=d.get("outcome", "label"), predictors=predictors,
                       coefficients=coefficients, std_errors=dict(d.get("std_errors", {})),
                       odds_ratios=dict(d.get("odds_ratios", {})), auc=float(d["auc"]),
                       auc_ci_low=d.get("auc_ci_low", math.nan), auc_ci_high=d.get("auc_ci_high", math.nan),
                       n=int(d["n"]), n_events=int(d.get("n_events", -1)),
                       predictor_ranges={k: list(v) for k, v in d.get("predictor_ranges", {}).items()})
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"nomogram description is incomplete or malformed ({exc!r})") from None


def _expit(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=float)))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), EPS, 1.0 - EPS)
    return np.log(p) - np.log1p(-p)


def _numeric_column(df: pd.DataFrame, col: str, what: str) -> np.ndarray:
    if col not in df.columns:
        raise InputError(f"{what}: column '{col}' is missing (columns: {list(df.columns)})")
    values = pd.to_numeric(df[col], errors="coerce")
    bad = values.isna() | ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
    if bad.any():
        ids = df.loc[bad, "subject_id"].astype(str).tolist() if "subject_id" in df.columns else \
            [str(i) for i in df.index[bad]]
        raise InputError(f"{what}: column '{col}' is missing or not a finite number for "
                         f"{int(bad.sum())} subject(s): {ids[:10]}")
    return values.to_numpy(dtype=float)


def _design(df: pd.DataFrame, predictors: Sequence[str], what: str) -> np.ndarray:
    cols = [_numeric_column(df, p, what) for p in predictors]
    return np.column_stack([np.ones(len(df))] + cols)


def _outcome(df: pd.DataFrame, outcome: str, what: str) -> np.ndarray:
    y = _numeric_column(df, outcome, what)
    bad = ~np.isin(y, (0.0, 1.0))
    if bad.any():
        raise InputError(f"{what}: outcome '{outcome}' must be 0 or 1, found {sorted(set(y[bad]))[:5]}")
    if y.min() == y.max():
        raise InputError(f"{what}: outcome '{outcome}' has a single class ({int(y[0])} for all "
                         f"{y.size} subjects); a logistic model needs both 0 and 1")
    return y.astype(int)


def find_separation(X: np.ndarray, y: np.ndarray, tol: float = 1e-7) -> np.ndarray | None:
    """Direction ``b`` with ``(2y-1) * (X b) >= 0`` for every row and > 0 for some (complete or
    quasi-complete separation), or None when the maximum-likelihood estimate exists.

    Linear program (Konis 2007): maximise ``sum_i s_i x_i.b`` subject to ``s_i x_i.b >= 0``,
    ``-1 <= b <= 1``, with ``s_i = 2 y_i - 1``; columns are standardised first.  ``b`` is
    returned on the standardised scale (intercept first).
    """
    from scipy.optimize import linprog

    Xs = X.astype(float).copy()
    for j in range(1, Xs.shape[1]):
        sd = Xs[:, j].std()
        Xs[:, j] = (Xs[:, j] - Xs[:, j].mean()) / (sd if sd > 0 else 1.0)
    A = (2 * y - 1)[:, None] * Xs
    res = linprog(-A.sum(axis=0), A_ub=-A, b_ub=np.zeros(len(y)), bounds=[(-1, 1)] * Xs.shape[1],
                  method="highs")
    if res.status != 0 or -res.fun <= tol * len(y):
        return None
    return res.x


def fit_nomogram(df: pd.DataFrame, outcome: str = "label",
                 predictors: Sequence[str] = ("dl_score", "birthweight_g")) -> NomogramModel:
    """Fit ``logit P(outcome) = intercept + sum beta_j x_j`` (raw units, no penalty).

    Raises :class:`InputError` for missing or non-numeric columns, missing values, a
    single-class outcome, a constant or collinear predictor, too few subjects or events,
    and (quasi-)complete separation.
    """
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationWarning

    predictors = list(predictors)
    if not predictors:
        raise InputError("nomogram: give at least one predictor")
    if len(set(predictors)) != len(predictors):
        raise InputError(f"nomogram: predictors repeat: {predictors}")
    if outcome in predictors:
        raise InputError(f"nomogram: outcome '{outcome}' is also a predictor")
    y = _outcome(df, outcome, "nomogram cohort")
    X = _design(df, predictors, "nomogram cohort")
    for j, name in enumerate(predictors, start=1):
        if np.ptp(X[:, j]) == 0:
            raise InputError(f"nomogram cohort: predictor '{name}' is constant ({X[0, j]:g}); "
                             f"it cannot be estimated")
    if np.linalg.matrix_rank(X) < X.shape[1]:
        raise InputError(f"nomogram cohort: predictors {predictors} are collinear (one is a linear "
                         f"combination of the others)")
    n_events = int(y.sum())
    if min(n_events, y.size - n_events) < 2 or y.size <= X.shape[1] + 1:
        raise InputError(f"nomogram cohort: too few subjects ({y.size}, {n_events} events) for "
                         f"{len(predictors)} predictor(s)")
    direction = find_separation(X, y)
    if direction is not None:
        involved = [p for p, b in zip(predictors, direction[1:]) if abs(b) > 1e-6] or predictors
        raise InputError(
            f"nomogram cohort: the outcome '{outcome}' is perfectly (or quasi-perfectly) separated by "
            f"{' + '.join(involved)}: some combination of these predictors puts every subject with "
            f"{outcome}=1 on one side and every subject with {outcome}=0 on the other, so the "
            f"maximum-likelihood coefficients are infinite and an unpenalised logistic model "
            f"cannot be fitted. Use more subjects, fewer predictors, or check the data for a "
            f"predictor derived from the outcome.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = sm.Logit(y, X).fit(method="newton", maxiter=200, tol=1e-12, disp=0)
    bad = [w for w in caught if issubclass(w.category, (ConvergenceWarning, PerfectSeparationWarning))]
    if bad or not fit.mle_retvals.get("converged", False):
        raise InputError(f"nomogram cohort: the logistic regression did not converge "
                         f"({bad[0].message if bad else 'iteration limit'}); the data may be "
                         f"nearly separated")
    params = np.asarray(fit.params, dtype=float)
    se = np.asarray(fit.bse, dtype=float)
    pvals = np.asarray(fit.pvalues, dtype=float)
    names = ["intercept"] + predictors
    zq = float(_st.norm.ppf(0.975))
    odds = {name: {"odds_ratio": math.exp(b), "ci_low": math.exp(b - zq * s),
                   "ci_high": math.exp(b + zq * s), "p_value": float(p), "per": "1 unit"}
            for name, b, s, p in zip(names[1:], params[1:], se[1:], pvals[1:])}
    lp = X @ params
    a, lo, hi = roc.delong_auc_ci(y, lp)
    return NomogramModel(
        outcome=outcome, predictors=predictors,
        coefficients={k: float(v) for k, v in zip(names, params)},
        std_errors={k: float(v) for k, v in zip(names, se)},
        odds_ratios=odds, auc=a, auc_ci_low=lo, auc_ci_high=hi, n=int(y.size), n_events=n_events,
        predictor_ranges={p: [float(X[:, j].min()), float(X[:, j].max())]
                          for j, p in enumerate(predictors, start=1)})


def apply_nomogram(model: NomogramModel, df: pd.DataFrame) -> pd.DataFrame:
    """Linear predictor and probability for each subject of ``df`` (e.g. a validation cohort):
    columns ``subject_id`` (when present), ``linear_predictor``, ``probability``."""
    lp = model.linear_predictor(df)
    out = pd.DataFrame({"linear_predictor": lp, "probability": _expit(lp)})
    if "subject_id" in df.columns:
        out.insert(0, "subject_id", df["subject_id"].astype(str).to_numpy())
    return out


def validate_nomogram(model: NomogramModel, df: pd.DataFrame, n_bins: int = 10) -> dict:
    """Discrimination and calibration of ``model`` on another cohort holding the outcome:
    ``n, n_events, auc, auc_ci_low, auc_ci_high, calibration`` (see :func:`calibration`)."""
    y = _outcome(df, model.outcome, "validation cohort")
    lp = model.linear_predictor(df)
    p = _expit(lp)
    try:
        a, lo, hi = roc.delong_auc_ci(y, lp)
    except InputError:
        a, lo, hi = roc.auc(y, lp), None, None
    return {"n": int(y.size), "n_events": int(y.sum()), "auc": a, "auc_ci_low": lo,
            "auc_ci_high": hi, "calibration": calibration(y, p, n_bins=n_bins)}


# ----------------------------------------------------------------------------- calibration
def _hosmer_lemeshow(y: np.ndarray, p: np.ndarray, n_bins: int, df_offset: int = 2):
    order = np.argsort(p, kind="mergesort")
    groups = [g for g in np.array_split(order, min(n_bins, y.size)) if g.size]
    rows, chi2 = [], 0.0
    for g in groups:
        n_g = g.size
        expected = float(p[g].sum())
        observed = float(y[g].sum())
        mean_p = expected / n_g
        denom = n_g * mean_p * (1.0 - mean_p)
        if denom > 0:
            chi2 += (observed - expected) ** 2 / denom
        rows.append({"n": int(n_g), "mean_predicted": mean_p, "observed_rate": observed / n_g,
                     "observed_events": observed, "expected_events": expected,
                     "p_min": float(p[g].min()), "p_max": float(p[g].max())})
    dof = len(groups) - df_offset
    pval = float(_st.chi2.sf(chi2, dof)) if dof > 0 else None
    return float(chi2), dof, pval, rows


def calibration(y, p, n_bins: int = 10) -> dict:
    """Calibration of predicted probabilities ``p`` against binary outcomes ``y``.

    * ``intercept`` (calibration-in-the-large): ``a`` in ``logit P(y) = a + logit(p)``
      (slope fixed at 1, logit(p) as offset); ideal 0.
    * ``slope``: ``b`` in ``logit P(y) = a' + b logit(p)``; ideal 1 (< 1: overfitting).
    * ``brier``: ``mean((p - y)^2)``.
    * ``hosmer_lemeshow``: subjects sorted by p and split into ``n_bins`` groups of (nearly)
      equal size; ``chi2 = sum_g (O_g - E_g)^2 / (n_g pbar_g (1 - pbar_g))``, ``df = groups - 2``,
      upper-tail chi-square p.
    * ``bins``: per group n, mean predicted, observed rate, observed and expected events.
    Probabilities are clipped to [1e-10, 1 - 1e-10] before logits.  Intercept or slope is
    None when it cannot be estimated (e.g. logit(p) separates y perfectly).
    """
    import statsmodels.api as sm

    y = roc._labels(y, "outcome")
    p = np.asarray(p, dtype=float)
    if p.shape != y.shape:
        raise InputError(f"calibration: {p.size} probabilities for {y.size} outcomes")
    if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        raise InputError("calibration: predicted probabilities must be finite numbers in [0, 1]")
    if n_bins < 3:
        raise InputError(f"calibration: n_bins must be >= 3, got {n_bins}")
    lp = _logit(p)
    intercept = slope = slope_intercept = None
    if 0 < y.sum() < y.size:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                citl = sm.GLM(y, np.ones((y.size, 1)), family=sm.families.Binomial(), offset=lp).fit()
                intercept = float(citl.params[0]) if np.isfinite(citl.params[0]) else None
            except Exception:  # noqa: BLE001  (statsmodels raises several types on degenerate data)
                intercept = None
            if find_separation(np.column_stack([np.ones(y.size), lp]), y) is None and np.ptp(lp) > 0:
                fit = sm.Logit(y, np.column_stack([np.ones(y.size), lp])).fit(
                    method="newton", maxiter=200, tol=1e-12, disp=0)
                if fit.mle_retvals.get("converged", False):
                    slope_intercept, slope = (float(v) for v in fit.params)
    chi2, dof, hl_p, bins = _hosmer_lemeshow(y, p, n_bins)
    return {
        "n": int(y.size), "n_events": int(y.sum()),
        "intercept": intercept, "slope": slope, "slope_model_intercept": slope_intercept,
        "brier": float(np.mean((p - y) ** 2)),
        "observed_expected_ratio": float(y.sum() / p.sum()) if p.sum() > 0 else None,
        "hosmer_lemeshow": {"chi2": chi2, "df": dof, "p_value": hl_p, "n_bins": len(bins)},
        "bins": bins,
    }


# ----------------------------------------------------------------------------- decision curve
def decision_curve(y, p, thresholds: Sequence[float] | None = None) -> pd.DataFrame:
    """Net benefit over threshold probabilities (Vickers & Elkin 2006).

    A subject is treated iff ``p >= threshold`` (pt).  ``net_benefit = TP/n - FP/n * pt/(1-pt)``;
    treat-all: ``prevalence - (1 - prevalence) * pt/(1-pt)``; treat-none: 0.
    Columns: ``threshold, net_benefit_model, net_benefit_all, net_benefit_none, tp, fp, n``.
    """
    y = roc._labels(y, "outcome")
    p = np.asarray(p, dtype=float)
    if p.shape != y.shape or not np.all(np.isfinite(p)):
        raise InputError("decision_curve: need one finite probability per outcome")
    t = DEFAULT_THRESHOLDS if thresholds is None else np.asarray(thresholds, dtype=float)
    if t.ndim != 1 or t.size == 0 or np.any(t <= 0) or np.any(t >= 1):
        raise InputError("decision_curve: thresholds must lie strictly between 0 and 1")
    n = y.size
    treated = p[None, :] >= t[:, None]
    tp = (treated & (y == 1)).sum(axis=1)
    fp = (treated & (y == 0)).sum(axis=1)
    odds = t / (1.0 - t)
    prevalence = y.mean()
    return pd.DataFrame({
        "threshold": t, "net_benefit_model": tp / n - fp / n * odds,
        "net_benefit_all": prevalence - (1.0 - prevalence) * odds,
        "net_benefit_none": np.zeros(t.size), "tp": tp, "fp": fp, "n": np.full(t.size, n),
    })


# ----------------------------------------------------------------------------- plots
def plot_calibration(y, p, path: str | os.PathLike, n_bins: int = 10, title: str | None = None,
                     result: dict | None = None) -> Path:
    """Calibration plot: grouped observed rate (95% Wilson CI) vs mean predicted probability,
    LOWESS smooth, ideal diagonal, with slope, intercept, Brier and Hosmer-Lemeshow p."""
    from statsmodels.nonparametric.smoothers_lowess import lowess

    res = result or calibration(y, p, n_bins)
    y = np.asarray(roc._labels(y, "outcome"), dtype=float)
    p = np.asarray(p, dtype=float)
    fig = roc._new_figure(5.5, 5.5)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="ideal")
    xs = np.array([b["mean_predicted"] for b in res["bins"]])
    obs = np.array([b["observed_rate"] for b in res["bins"]])
    ns = np.array([b["n"] for b in res["bins"]])
    zq = 1.959963984540054
    centre = (obs + zq ** 2 / (2 * ns)) / (1 + zq ** 2 / ns)
    half = zq * np.sqrt(obs * (1 - obs) / ns + zq ** 2 / (4 * ns ** 2)) / (1 + zq ** 2 / ns)
    yerr = np.clip([obs - (centre - half), centre + half - obs], 0.0, None)
    ax.errorbar(xs, obs, yerr=yerr, fmt="o", color="C0",
                capsize=3, label=f"groups (n_bins={len(ns)})")
    if y.size >= 10 and np.ptp(p) > 0:
        sm_curve = lowess(y, p, frac=0.75, it=0, return_sorted=True)
        ax.plot(sm_curve[:, 0], sm_curve[:, 1], color="C1", lw=1.5, label="LOWESS")
    ax.plot(p, np.full_like(p, -0.03), "|", color="0.3", ms=6, alpha=0.5)

    def fmt(v):
        return "NA" if v is None else f"{v:.3f}"
    hl = res["hosmer_lemeshow"]
    ax.text(0.03, 0.97, f"slope {fmt(res['slope'])}\nintercept {fmt(res['intercept'])}\n"
            f"Brier {res['brier']:.3f}\nHosmer-Lemeshow p {fmt(hl['p_value'])}",
            transform=ax.transAxes, va="top", fontsize=8,
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8})
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.06, 1.02)
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed proportion")
    ax.set_title(title or "Calibration")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def plot_decision_curve(tables: dict[str, pd.DataFrame] | pd.DataFrame, path: str | os.PathLike,
                        title: str | None = None) -> Path:
    """Decision curves (net benefit vs threshold) for one or more models plus treat-all/none."""
    if isinstance(tables, pd.DataFrame):
        tables = {"model": tables}
    fig = roc._new_figure(6.0, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    first = next(iter(tables.values()))
    for i, (label, tab) in enumerate(tables.items()):
        ax.plot(tab["threshold"], tab["net_benefit_model"], lw=1.8, color=f"C{i}", label=label)
    ax.plot(first["threshold"], first["net_benefit_all"], color="0.4", lw=1, label="treat all")
    ax.plot(first["threshold"], first["net_benefit_none"], color="k", lw=1, ls="--", label="treat none")
    top = max(float(t["net_benefit_model"].max()) for t in tables.values())
    top = max(top, float(first["net_benefit_all"].max()), 0.01)
    ax.set_ylim(-0.05 * max(top, 0.2) - 0.02, top * 1.1 + 0.01)
    ax.set_xlim(0, 1)
    ax.set_xlabel("threshold probability")
    ax.set_ylabel("net benefit")
    ax.set_title(title or "Decision curve")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def nomogram_scales(model: NomogramModel) -> dict:
    """Points scales of the nomogram (Iasonos 2008).

    For predictor j with fit range [lo_j, hi_j], ``span_j = |beta_j| (hi_j - lo_j)``; the
    predictor with the largest span gets 0-100 points: ``points_j(x) = 100 beta_j (x - ref_j) /
    max_span`` with ``ref_j`` = lo_j if beta_j > 0 else hi_j.  Total points T map back to the
    linear predictor ``lp = lp0 + T max_span / 100`` with ``lp0 = intercept + sum beta_j ref_j``.
    """
    spans, refs = {}, {}
    for name in model.predictors:
        lo, hi = model.predictor_ranges.get(name, [math.nan, math.nan])
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise InputError(f"nomogram: no range recorded for predictor '{name}'")
        b = model.coefficients[name]
        spans[name] = abs(b) * (hi - lo)
        refs[name] = lo if b >= 0 else hi
    max_span = max(spans.values())
    if max_span <= 0:
        raise InputError("nomogram: every predictor has zero effect over its range")
    lp0 = model.coefficients["intercept"] + sum(model.coefficients[k] * refs[k] for k in model.predictors)
    total_max = sum(100.0 * s / max_span for s in spans.values())
    return {"max_span": max_span, "refs": refs, "lp0": lp0, "total_max": total_max,
            "points_max": {k: 100.0 * s / max_span for k, s in spans.items()}}


def plot_nomogram(model: NomogramModel, path: str | os.PathLike, title: str | None = None) -> Path:
    """Nomogram: a 0-100 points scale, one axis per predictor (over its fit range), total
    points and the predicted-probability axis (see :func:`nomogram_scales`)."""
    from matplotlib.ticker import MaxNLocator

    sc = nomogram_scales(model)
    rows = ["Points"] + list(model.predictors) + ["Total points", "Predicted probability"]
    fig = roc._new_figure(8.0, 0.75 * len(rows) + 1.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xlim(-38, 106)
    ax.set_ylim(-len(rows) + 0.4, 0.8)
    ax.axis("off")
    total_scale = 100.0 / sc["total_max"]  # total points -> x

    def axis_row(row, x_ticks, labels, name):
        yrow = -row
        ax.text(-4, yrow, name, ha="right", va="center", fontsize=9, fontweight="bold")
        if len(x_ticks):
            ax.plot([min(x_ticks), max(x_ticks)], [yrow, yrow], color="k", lw=1)
        for x, lab in zip(x_ticks, labels):
            ax.plot([x, x], [yrow, yrow + 0.12], color="k", lw=1)
            ax.text(x, yrow + 0.18, lab, ha="center", va="bottom", fontsize=7)

    pts = np.arange(0, 101, 10)
    axis_row(0, pts, [f"{v:g}" for v in pts], "Points")
    for r, name in enumerate(model.predictors, start=1):
        lo, hi = model.predictor_ranges[name]
        ticks = [t for t in MaxNLocator(nbins=6).tick_values(lo, hi) if lo - 1e-12 <= t <= hi + 1e-12]
        ticks = sorted(set([lo, hi] + ticks)) if len(ticks) < 2 else ticks
        b = model.coefficients[name]
        xs = [100.0 * b * (t - sc["refs"][name]) / sc["max_span"] for t in ticks]
        axis_row(r, xs, [f"{t:g}" for t in ticks], name)
    r_tot = len(model.predictors) + 1
    tot_ticks = MaxNLocator(nbins=8).tick_values(0, sc["total_max"])
    tot_ticks = [t for t in tot_ticks if 0 <= t <= sc["total_max"] + 1e-9]
    axis_row(r_tot, [t * total_scale for t in tot_ticks], [f"{t:g}" for t in tot_ticks], "Total points")
    probs = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99]
    xs, labs = [], []
    for pr in probs:
        total = (math.log(pr / (1 - pr)) - sc["lp0"]) * 100.0 / sc["max_span"]
        x = total * total_scale
        if 0 <= total <= sc["total_max"] and (not xs or x - xs[-1] >= 4.0):  # no overlapping labels
            xs.append(x)
            labs.append(f"{pr:g}")
    axis_row(r_tot + 1, xs, labs, "Predicted probability")
    ax.set_title(title or f"Nomogram for P({model.outcome} = 1)", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
