"""Correlations between metrics and clinical variables with confidence intervals.

Definitions
-----------
* Pearson r (linear) and Spearman rho (Pearson r of the mid-ranks), p-values from
  ``scipy.stats.pearsonr`` / ``spearmanr`` (t distribution with n-2 df).
* ``method="auto"``: Pearson when both variables look normal (Shapiro-Wilk p >=
  ``normality_alpha``, n >= 3, not constant), otherwise Spearman.
* Confidence interval via Fisher's z: ``z = atanh(r)``, ``CI = tanh(z -/+ z_{1-alpha/2} SE)``
  with ``SE = 1/sqrt(n-3)`` for Pearson (Fisher 1921) and
  ``SE = sqrt((1 + r²/2)/(n-3))`` for Spearman (Bonett & Wright 2000, Psychometrika 65:23-28).
  Undefined (NaN) when n < 4.
* ``q_value``: Benjamini-Hochberg over all pairs of one call.
* Missing values: dropped pairwise (per x-y pair); ``n_missing`` counts dropped rows.
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as _st

from ..imageio import InputError
from .groups import bh_qvalues

__all__ = ["correlate", "fisher_ci"]

METHODS = ("auto", "spearman", "pearson")


def fisher_ci(r: float, n: int, method: str = "pearson", alpha: float = 0.05) -> tuple[float, float]:
    """``1 - alpha`` CI of a correlation by Fisher's z (Spearman: Bonett-Wright SE)."""
    if n < 4 or not np.isfinite(r):
        return math.nan, math.nan
    if abs(r) >= 1.0:
        return float(r), float(r)
    se = math.sqrt((1.0 + r * r / 2.0) / (n - 3)) if method == "spearman" else 1.0 / math.sqrt(n - 3)
    zq = float(_st.norm.ppf(1.0 - alpha / 2.0))
    z = math.atanh(r)
    return math.tanh(z - zq * se), math.tanh(z + zq * se)


def _looks_normal(v: np.ndarray, alpha: float) -> bool:
    if v.size < 3 or np.ptp(v) == 0:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bool(_st.shapiro(v).pvalue >= alpha)


def _numeric(df: pd.DataFrame, col: str) -> pd.Series:
    if col not in df.columns:
        raise InputError(f"column '{col}' is not in the table (columns: {list(df.columns)})")
    values = pd.to_numeric(df[col], errors="coerce")
    bad = df[col].notna() & values.isna()
    if bad.any():
        raise InputError(f"column '{col}' holds non-numeric values, e.g. {df.loc[bad, col].iloc[0]!r}")
    return values.astype(float)


def correlate(df: pd.DataFrame, x_cols: Sequence[str], y_cols: Sequence[str],
              method: str = "auto", *, alpha: float = 0.05,
              normality_alpha: float = 0.05) -> pd.DataFrame:
    """Correlation of every ``x`` in ``x_cols`` with every ``y`` in ``y_cols`` (pairs with
    x == y skipped; each unordered pair once).

    Returns columns ``x, y, method, n, n_missing, r, ci_low, ci_high, p_value, q_value``.
    """
    if method not in METHODS:
        raise InputError(f"correlation method must be one of {METHODS}, got '{method}'")
    x_cols, y_cols = list(x_cols), list(y_cols)
    if not x_cols or not y_cols:
        raise InputError("correlate: give at least one x and one y column")
    cols = {c: _numeric(df, c) for c in dict.fromkeys(x_cols + y_cols)}
    rows, seen = [], set()
    for x in x_cols:
        for y in y_cols:
            if x == y or frozenset((x, y)) in seen:
                continue
            seen.add(frozenset((x, y)))
            ok = cols[x].notna() & cols[y].notna()
            xv, yv = cols[x][ok].to_numpy(), cols[y][ok].to_numpy()
            n = int(ok.sum())
            used = method
            if method == "auto":
                both = _looks_normal(xv, normality_alpha) and _looks_normal(yv, normality_alpha)
                used = "pearson" if both else "spearman"
            r = p = math.nan
            if n >= 3 and np.ptp(xv) > 0 and np.ptp(yv) > 0:
                res = _st.pearsonr(xv, yv) if used == "pearson" else _st.spearmanr(xv, yv)
                r, p = float(res.statistic), float(res.pvalue)
            lo, hi = fisher_ci(r, n, used, alpha)
            rows.append({"x": x, "y": y, "method": used, "n": n, "n_missing": int(len(ok) - n),
                         "r": r, "ci_low": lo, "ci_high": hi, "p_value": p})
    out = pd.DataFrame(rows, columns=["x", "y", "method", "n", "n_missing", "r", "ci_low",
                                      "ci_high", "p_value"])
    out["q_value"] = bh_qvalues(out["p_value"].to_numpy(dtype=float)) if len(out) else []
    return out
