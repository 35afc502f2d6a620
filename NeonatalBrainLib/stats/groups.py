"""Group comparisons for a clinical study's table: descriptive statistics per group,
a test chosen by the data's distribution, effect size and Benjamini-Hochberg q-values.

Decision rule (per metric)
--------------------------
1. Rows whose group is missing are dropped (``n_missing_group``); rows whose metric is
   missing are dropped for that metric only (``n_missing``, per group ``missing[level]``).
2. Normality: Shapiro-Wilk per group; the metric is treated as *normal* iff every group has
   >= 3 values, is not constant, and has Shapiro-Wilk p >= ``normality_alpha``.
3. Summary: normal -> ``mean ± SD`` (SD with denominator n-1); otherwise
   ``median [Q1, Q3]`` (quartiles by linear interpolation, numpy's default).
4. Test:

   ========  =====================================  =====================================
   groups    normal                                 not normal
   ========  =====================================  =====================================
   2         Welch t-test (unequal variances)       Mann-Whitney U (two-sided)
             effect: Hedges' g                      effect: rank-biserial r
   > 2       one-way ANOVA, or Welch ANOVA when      Kruskal-Wallis H
             Brown-Forsythe-Levene p < alpha         effect: epsilon²
             effect: eta²
   ========  =====================================  =====================================

   Effect direction for two groups: positive = the *second* level (levels sorted) has larger
   values.  Hedges' g = J (mean_2 - mean_1) / s_pooled, with
   ``s_pooled = sqrt(((n1-1)s1² + (n2-1)s2²)/(n1+n2-2))`` and ``J = 1 - 3/(4(n1+n2)-9)``
   (Hedges 1981).  Rank-biserial ``r = 2 U_2 / (n1 n2) - 1`` with ``U_2`` the Mann-Whitney
   U of the second group (ties count 1/2) (Kerby 2014).  ``eta² = SS_between / SS_total``.
   ``epsilon² = H / (n - 1)`` (Tomczak & Tomczak 2014).
5. ``q_value``: Benjamini-Hochberg (1995) false-discovery-rate adjusted p over the metrics
   of one call.
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as _st

from ..imageio import InputError

__all__ = ["compare_groups", "bh_qvalues", "hedges_g", "rank_biserial", "describe",
           "group_table_long"]


def bh_qvalues(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg q-values; NaN p-values stay NaN and are not counted in m."""
    p = np.asarray(p_values, dtype=float)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        from statsmodels.stats.multitest import multipletests

        q[ok] = multipletests(p[ok], method="fdr_bh")[1]
    return q


def hedges_g(a: np.ndarray, b: np.ndarray) -> float:
    """Hedges' g of ``b`` versus ``a`` (positive: b larger), small-sample corrected."""
    n1, n2 = len(a), len(b)
    if n1 < 2 or n2 < 2:
        return math.nan
    s_pooled = math.sqrt(((n1 - 1) * np.var(a, ddof=1) + (n2 - 1) * np.var(b, ddof=1)) / (n1 + n2 - 2))
    if s_pooled == 0:
        return math.nan
    j = 1.0 - 3.0 / (4.0 * (n1 + n2) - 9.0)
    return float(j * (np.mean(b) - np.mean(a)) / s_pooled)


def rank_biserial(a: np.ndarray, b: np.ndarray) -> float:
    """Rank-biserial correlation of ``b`` versus ``a``: ``P(b > a) - P(b < a)`` over all pairs."""
    if len(a) == 0 or len(b) == 0:
        return math.nan
    ranks = _st.rankdata(np.concatenate([a, b]))
    u_b = ranks[len(a):].sum() - len(b) * (len(b) + 1) / 2.0
    return float(2.0 * u_b / (len(a) * len(b)) - 1.0)


def describe(values: np.ndarray) -> dict:
    """n, mean, SD (n-1), median, Q1, Q3, min, max of a 1D array (NaN where undefined)."""
    v = np.asarray(values, dtype=float)
    n = int(v.size)
    if n == 0:
        return {"n": 0, "mean": math.nan, "sd": math.nan, "median": math.nan, "q1": math.nan,
                "q3": math.nan, "min": math.nan, "max": math.nan}
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {"n": n, "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if n > 1 else math.nan,
            "median": float(med), "q1": float(q1), "q3": float(q3),
            "min": float(v.min()), "max": float(v.max())}


def _fmt(x: float, digits: int) -> str:
    if x is None or not np.isfinite(x):
        return "NA"
    mag = abs(x)
    if mag != 0 and (mag >= 1e5 or mag < 10 ** (-digits)):
        return f"{x:.{digits}g}"
    return f"{x:.{digits}f}" if mag < 100 else f"{x:.{max(digits - 2, 0)}f}" if mag < 1000 else f"{x:.0f}"


def _level_label(value) -> str:
    """Group level as text: 1.0 -> "1", "F" -> "F"."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _shapiro_p(v: np.ndarray) -> float:
    if v.size < 3 or np.ptp(v) == 0:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(_st.shapiro(v).pvalue)


def _two_group_test(a, b, normal):
    if normal:
        res = _st.ttest_ind(b, a, equal_var=False)
        va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
        df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if va + vb > 0 else math.nan
        return ("Welch t-test", float(res.statistic), float(df), math.nan, float(res.pvalue),
                hedges_g(a, b), "Hedges' g")
    res = _st.mannwhitneyu(b, a, alternative="two-sided")
    return ("Mann-Whitney U", float(res.statistic), math.nan, math.nan, float(res.pvalue),
            rank_biserial(a, b), "rank-biserial r")


def _multi_group_test(samples, normal, alpha):
    n_total = sum(len(s) for s in samples)
    if normal:
        allv = np.concatenate(samples)
        grand = allv.mean()
        ss_between = sum(len(s) * (s.mean() - grand) ** 2 for s in samples)
        ss_total = float(((allv - grand) ** 2).sum())
        eta2 = ss_between / ss_total if ss_total > 0 else math.nan
        levene_p = float(_st.levene(*samples, center="median").pvalue)
        welch = np.isfinite(levene_p) and levene_p < alpha
        res = _st.f_oneway(*samples, equal_var=not welch)
        k = len(samples)
        if welch:
            w = np.array([len(s) / np.var(s, ddof=1) for s in samples])
            lam = (((1 - w / w.sum()) ** 2) / np.array([len(s) - 1 for s in samples])).sum()
            df2 = (k ** 2 - 1) / (3 * lam)
            name = "Welch ANOVA"
        else:
            df2 = float(n_total - k)
            name = "one-way ANOVA"
        return name, float(res.statistic), float(k - 1), df2, float(res.pvalue), eta2, "eta²"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = _st.kruskal(*samples)
    h = float(res.statistic)
    eps2 = h / (n_total - 1) if n_total > 1 else math.nan
    return "Kruskal-Wallis H", h, float(len(samples) - 1), math.nan, float(res.pvalue), eps2, "epsilon²"


def compare_groups(df: pd.DataFrame, group_col: str, metric_cols: Sequence[str], *,
                   normality_alpha: float = 0.05, digits: int = 2) -> pd.DataFrame:
    """Compare ``metric_cols`` between the groups of ``group_col`` (see the module docstring).

    Returns one row per metric with columns ``grouping, metric, n, n_missing,
    n_missing_group, normal, summary_type``, per group level L ``n[L], missing[L], summary[L],
    mean[L], sd[L], median[L], q1[L], q3[L], shapiro_p[L]``, then ``test, statistic, df, df2,
    p_value, effect_size, effect_size_name, q_value`` (``df``: degrees of freedom of the t, H or
    F numerator; ``df2``: F denominator, Welch-Satterthwaite for Welch ANOVA).
    ``result.attrs["levels"]`` lists the level labels in column order (sorted).
    """
    if not isinstance(df, pd.DataFrame):
        raise InputError("compare_groups: df must be a pandas DataFrame")
    if group_col not in df.columns:
        raise InputError(f"grouping column '{group_col}' is not in the table (columns: {list(df.columns)})")
    metric_cols = list(metric_cols)
    if not metric_cols:
        raise InputError("compare_groups: no metric columns given")
    missing = [c for c in metric_cols if c not in df.columns]
    if missing:
        raise InputError(f"metric column(s) {missing} not in the table")
    if group_col in metric_cols:
        raise InputError(f"'{group_col}' is both the grouping column and a metric")
    grouped = df[df[group_col].notna()]
    n_missing_group = int(len(df) - len(grouped))
    levels = sorted(grouped[group_col].unique().tolist(), key=lambda v: (str(type(v)), v))
    if len(levels) < 2:
        raise InputError(f"grouping column '{group_col}' has {len(levels)} group(s) "
                         f"({levels}); at least 2 are needed")
    labels = [_level_label(v) for v in levels]
    rows = []
    for metric in metric_cols:
        values = pd.to_numeric(grouped[metric], errors="coerce")
        nonnum = grouped[metric].notna() & values.isna()
        if nonnum.any():
            raise InputError(f"metric column '{metric}' holds non-numeric values, e.g. "
                             f"{grouped.loc[nonnum, metric].iloc[0]!r}")
        row: dict = {"grouping": group_col, "metric": metric}
        samples = []
        for lvl, lab in zip(levels, labels):
            v = values[grouped[group_col] == lvl]
            samples.append(v.dropna().to_numpy(dtype=float))
            row[f"missing[{lab}]"] = int(v.isna().sum())
        shapiro = [_shapiro_p(s) for s in samples]
        normal = all(np.isfinite(p) and p >= normality_alpha for p in shapiro)
        row["n"] = int(sum(len(s) for s in samples))
        row["n_missing"] = int(values.isna().sum())
        row["n_missing_group"] = n_missing_group
        row["normal"] = bool(normal)
        row["summary_type"] = "mean ± SD" if normal else "median [IQR]"
        for lab, s, sp in zip(labels, samples, shapiro):
            d = describe(s)
            row[f"n[{lab}]"] = d["n"]
            if normal:
                row[f"summary[{lab}]"] = f"{_fmt(d['mean'], digits)} ± {_fmt(d['sd'], digits)}"
            else:
                row[f"summary[{lab}]"] = (f"{_fmt(d['median'], digits)} [{_fmt(d['q1'], digits)}, "
                                          f"{_fmt(d['q3'], digits)}]")
            for key in ("mean", "sd", "median", "q1", "q3"):
                row[f"{key}[{lab}]"] = d[key]
            row[f"shapiro_p[{lab}]"] = sp
        usable = [s for s in samples if len(s) >= 2]
        constant = row["n"] > 0 and np.ptp(np.concatenate(samples)) == 0
        if len(usable) < len(samples) or constant:
            why = "a group has < 2 values" if len(usable) < len(samples) else "all values equal"
            test = (f"not tested ({why})", math.nan, math.nan, math.nan, math.nan, math.nan, "")
        elif len(samples) == 2:
            test = _two_group_test(samples[0], samples[1], normal)
        else:
            test = _multi_group_test(samples, normal, normality_alpha)
        (row["test"], row["statistic"], row["df"], row["df2"], row["p_value"], row["effect_size"],
         row["effect_size_name"]) = test
        rows.append(row)
    out = pd.DataFrame(rows)
    out["q_value"] = bh_qvalues(out["p_value"].to_numpy(dtype=float))
    front = ["grouping", "metric", "n", "n_missing", "n_missing_group", "normal", "summary_type"]
    per_level = [f"{k}[{lab}]" for lab in labels
                 for k in ("n", "missing", "summary", "mean", "sd", "median", "q1", "q3", "shapiro_p")]
    back = ["test", "statistic", "df", "df2", "p_value", "effect_size", "effect_size_name", "q_value"]
    out = out[front + per_level + back]
    out.attrs["levels"] = labels
    return out


def group_table_long(table: pd.DataFrame) -> pd.DataFrame:
    """The wide :func:`compare_groups` table as one row per (grouping, metric, group level):
    ``grouping, metric, level, n, missing, summary_type, summary, mean, sd, median, q1, q3,
    shapiro_p, test, statistic, df, df2, p_value, effect_size, effect_size_name, q_value``."""
    levels = table.attrs.get("levels") or sorted(
        {c[2:-1] for c in table.columns if c.startswith("n[") and c.endswith("]")})
    rows = []
    for _, r in table.iterrows():
        for lab in levels:
            if f"n[{lab}]" not in r.index or pd.isna(r[f"n[{lab}]"]):
                continue
            rows.append({
                "grouping": r["grouping"], "metric": r["metric"], "level": lab,
                "n": int(r[f"n[{lab}]"]), "missing": int(r[f"missing[{lab}]"]),
                "summary_type": r["summary_type"], "summary": r[f"summary[{lab}]"],
                **{k: r[f"{k}[{lab}]"] for k in ("mean", "sd", "median", "q1", "q3", "shapiro_p")},
                **{k: r[k] for k in ("test", "statistic", "df", "df2", "p_value", "effect_size",
                                     "effect_size_name", "q_value")},
            })
    return pd.DataFrame(rows)
