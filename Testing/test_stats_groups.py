"""stats.groups and stats.correlation against scipy / statsmodels / direct formulas."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from NeonatalBrainLib.imageio import InputError
from NeonatalBrainLib.stats.correlation import correlate
from NeonatalBrainLib.stats.groups import bh_qvalues, compare_groups, group_table_long


def _bh_manual(p):
    p = np.asarray(p, float)
    m = len(p)
    order = np.argsort(p)
    q = np.empty(m)
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, p[i] * m / rank)
        q[i] = running
    return q


@pytest.fixture
def two_group_df():
    rng = np.random.default_rng(1)
    n = 60
    sex = np.array(["F", "M"] * (n // 2))
    df = pd.DataFrame({
        "sex": sex,
        "width_mm": rng.normal(1.0, 0.1, n) + 0.08 * (sex == "M"),           # normal
        "count": rng.exponential(5.0, n) + 3.0 * (sex == "M"),                # skewed
        "noise": rng.normal(size=n),
    })
    df.loc[[0, 5, 7], "width_mm"] = np.nan
    df.loc[10, "sex"] = None
    return df


def test_two_groups_tests_match_scipy(two_group_df):
    df = two_group_df
    t = compare_groups(df, "sex", ["width_mm", "count", "noise"]).set_index("metric")
    g = df[df.sex.notna()]
    a = g.loc[g.sex == "F", "width_mm"].dropna().to_numpy()
    b = g.loc[g.sex == "M", "width_mm"].dropna().to_numpy()
    row = t.loc["width_mm"]
    assert row["normal"] and row["test"] == "Welch t-test" and row["summary_type"] == "mean ± SD"
    ref = st.ttest_ind(b, a, equal_var=False)
    assert row["p_value"] == pytest.approx(ref.pvalue, rel=1e-10)
    assert row["statistic"] == pytest.approx(ref.statistic, rel=1e-10)
    # Hedges' g from its definition
    sp = math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    g_ref = (b.mean() - a.mean()) / sp * (1 - 3 / (4 * (len(a) + len(b)) - 9))
    assert row["effect_size"] == pytest.approx(g_ref, rel=1e-10) and row["effect_size_name"] == "Hedges' g"
    assert row["n"] == len(a) + len(b) and row["n_missing"] == 3 and row["n_missing_group"] == 1
    assert row["missing[F]"] + row["missing[M]"] == 3
    assert row["summary[F]"] == f"{a.mean():.2f} ± {a.std(ddof=1):.2f}"

    row = t.loc["count"]
    assert not row["normal"] and row["test"] == "Mann-Whitney U"
    a = g.loc[g.sex == "F", "count"].to_numpy()
    b = g.loc[g.sex == "M", "count"].to_numpy()
    assert row["p_value"] == pytest.approx(st.mannwhitneyu(b, a, alternative="two-sided").pvalue, rel=1e-10)
    rb = np.mean(np.sign(b[:, None] - a[None, :]))  # P(b > a) - P(b < a)
    assert row["effect_size"] == pytest.approx(rb, rel=1e-10)
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    assert row["summary[F]"] == f"{med:.2f} [{q1:.2f}, {q3:.2f}]"
    np.testing.assert_allclose(t["q_value"].to_numpy(), _bh_manual(t["p_value"].to_numpy()), rtol=1e-12)


def test_multi_group_anova_welch_kruskal_and_effect_sizes():
    rng = np.random.default_rng(2)
    grp = np.repeat(["a", "b", "c"], 40)
    eq = rng.normal(0, 1, 120) + np.repeat([0.0, 0.5, 0.9], 40)
    uneq = rng.normal(0, 1, 120) * np.repeat([1.0, 4.0, 8.0], 40) + np.repeat([0.0, 1.0, 3.0], 40)
    skew = rng.lognormal(0, 1.0, 120) * np.repeat([1.0, 1.5, 2.0], 40)
    df = pd.DataFrame({"grp": grp, "eq": eq, "uneq": uneq, "skew": skew})
    t = compare_groups(df, "grp", ["eq", "uneq", "skew"]).set_index("metric")
    samples = {c: [df.loc[df.grp == k, c].to_numpy() for k in "abc"] for c in ("eq", "uneq", "skew")}
    import statsmodels.formula.api as smf

    r = t.loc["eq"]
    assert r["test"] == "one-way ANOVA"
    assert r["p_value"] == pytest.approx(st.f_oneway(*samples["eq"]).pvalue, rel=1e-10)
    assert r["effect_size"] == pytest.approx(smf.ols("eq ~ C(grp)", df).fit().rsquared, rel=1e-10)
    assert (r["df"], r["df2"]) == (2, 117)
    r = t.loc["uneq"]
    assert r["test"] == "Welch ANOVA"
    assert r["p_value"] == pytest.approx(st.f_oneway(*samples["uneq"], equal_var=False).pvalue, rel=1e-8)
    r = t.loc["skew"]
    assert r["test"] == "Kruskal-Wallis H" and r["effect_size_name"] == "epsilon²"
    h = st.kruskal(*samples["skew"])
    assert r["p_value"] == pytest.approx(h.pvalue, rel=1e-10)
    assert r["effect_size"] == pytest.approx(h.statistic / (120 - 1), rel=1e-10)
    long = group_table_long(compare_groups(df, "grp", ["eq", "skew"]))
    assert len(long) == 6 and set(long["level"]) == {"a", "b", "c"}


def test_degenerate_groups_and_errors():
    df = pd.DataFrame({"g": [0.0, 0.0, 0.0, 1.0], "m": [1.0, 2.0, 3.0, 4.0], "txt": list("abcd")})
    t = compare_groups(df, "g", ["m"])
    assert t.attrs["levels"] == ["0", "1"]
    assert t.loc[0, "test"].startswith("not tested") and math.isnan(t.loc[0, "p_value"])
    with pytest.raises(InputError, match="'nope'"):
        compare_groups(df, "nope", ["m"])
    with pytest.raises(InputError, match="non-numeric"):
        compare_groups(df, "g", ["txt"])
    with pytest.raises(InputError, match="at least 2"):
        compare_groups(df.assign(g=1), "g", ["m"])
    np.testing.assert_allclose(bh_qvalues([0.01, np.nan, 0.04, 0.03]),
                               [0.03, np.nan, 0.04, 0.04], equal_nan=True)


def test_correlation_values_and_fisher_ci():
    rng = np.random.default_rng(3)
    n = 50
    x = rng.normal(size=n)
    y = 0.6 * x + rng.normal(scale=0.8, size=n)
    w = np.exp(rng.normal(size=n)) + 0.5 * np.exp(x)  # skewed
    df = pd.DataFrame({"x": x, "y": y, "w": w})
    df.loc[3, "y"] = np.nan
    res = correlate(df, ["x"], ["y", "w"]).set_index("y")
    ok = df.y.notna()
    r_ref, p_ref = st.pearsonr(df.x[ok], df.y[ok])
    row = res.loc["y"]
    assert row["method"] == "pearson" and row["n"] == n - 1 and row["n_missing"] == 1
    assert row["r"] == pytest.approx(r_ref) and row["p_value"] == pytest.approx(p_ref)
    # Fisher z interval computed directly
    z, se = np.arctanh(r_ref), 1 / np.sqrt(n - 1 - 3)
    assert row["ci_low"] == pytest.approx(np.tanh(z - 1.959963984540054 * se))
    assert row["ci_high"] == pytest.approx(np.tanh(z + 1.959963984540054 * se))
    row = res.loc["w"]
    rho, p = st.spearmanr(df.x, df.w)
    assert row["method"] == "spearman" and row["r"] == pytest.approx(rho) and row["p_value"] == pytest.approx(p)
    se = np.sqrt((1 + rho ** 2 / 2) / (n - 3))
    assert row["ci_low"] == pytest.approx(np.tanh(np.arctanh(rho) - 1.959963984540054 * se))
    forced = correlate(df, ["x"], ["w"], method="pearson").iloc[0]
    assert forced["method"] == "pearson" and forced["r"] == pytest.approx(np.corrcoef(df.x, df.w)[0, 1])
    # each unordered pair once, no self-pairs
    allpairs = correlate(df, ["x", "y", "w"], ["x", "y", "w"])
    assert len(allpairs) == 3
    with pytest.raises(InputError, match="method"):
        correlate(df, ["x"], ["y"], method="kendall")
