"""neonatal-brain cohort-stats / compare / nomogram on small CSV files."""
import json

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats as st
from sklearn.metrics import roc_auc_score

from NeonatalBrainLib.cli import main
from NeonatalBrainLib.stats import roc


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(11)
    n = 80
    ids = [f"sub-{i:03d}" for i in range(n)]
    bw = rng.normal(3000, 600, n).round()
    latent = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(1.5 * latent - 0.001 * (bw - 3000))))).astype(int)
    sex = rng.choice(["F", "M"], n)
    term = rng.choice(["preterm", "term", "post"], n)
    cohort = pd.DataFrame({"subject_id": ids, "t1": [f"{i}/t1.nii.gz" for i in ids], "label": y,
                           "center": "A", "birthweight_g": bw,
                           "gestational_age_weeks": rng.normal(38, 2, n).round(1), "sex": sex,
                           "term_status": term})
    metrics = pd.DataFrame({"case_id": ids, "status": "ok", "dmv_count": rng.poisson(20, n),
                            "dmv_width_mm": rng.normal(0.8, 0.1, n) + 0.06 * (sex == "M"),
                            "dmv_tortuosity": 1 + rng.exponential(0.05, n)})
    metrics.loc[4, "dmv_width_mm"] = np.nan
    pa = pd.DataFrame({"subject_id": ids, "probability": 1 / (1 + np.exp(-(latent + rng.normal(size=n))))})
    pb = pd.DataFrame({"subject_id": ids, "probability": 1 / (1 + np.exp(-(latent + 2 * rng.normal(size=n))))})
    paths = {}
    for name, df in (("cohort", cohort), ("metrics", metrics), ("pa", pa), ("pb", pb)):
        paths[name] = tmp_path / f"{name}.csv"
        df.to_csv(paths[name], index=False)
    paths["frames"] = {"cohort": cohort, "metrics": metrics, "pa": pa, "pb": pb}
    return paths


def test_cohort_stats_leaves_out_scans_below_a_detectability(files, tmp_path, capsys):
    # vessels-batch's metrics.csv has dmv_detectability_index per case: a scan property, not a metric
    # by default; --exclude-below drops the scans below it (or without it) and says which
    metrics = files["frames"]["metrics"].copy()
    metrics["dmv_detectability_index"] = np.linspace(1.0, 9.0, len(metrics))
    metrics.loc[7, "dmv_detectability_index"] = np.nan
    metrics["field_of_view_whole_brain"] = 1        # the batch's other scan property
    metrics.loc[[0, 1], "field_of_view_whole_brain"] = 0
    path = tmp_path / "metrics_qc.csv"
    metrics.to_csv(path, index=False)
    out = tmp_path / "stats_qc"
    assert main(["cohort-stats", str(path), str(files["cohort"]), "--out", str(out),
                 "--exclude-below", "dmv_detectability_index=2.3"]) == 0
    summary = json.loads((out / "cohort_stats.json").read_text())
    assert "dmv_detectability_index" not in summary["metric_cols"]
    low = metrics.loc[~(metrics["dmv_detectability_index"] >= 2.3), "case_id"]
    assert summary["excluded"] == {"dmv_detectability_index < 2.3 or missing": sorted(low)}
    assert summary["n_subjects"] == len(metrics) - len(low) and len(low) == 13
    assert "13 subject(s) left out by dmv_detectability_index < 2.3" in (out / "tables.md").read_text()
    g = pd.read_csv(out / "group_comparisons.csv")
    assert g[(g.grouping == "sex") & (g.metric == "dmv_count")]["n"].sum() == len(metrics) - 13
    assert "field_of_view_whole_brain" not in summary["metric_cols"]
    out = tmp_path / "stats_fov"
    assert main(["cohort-stats", str(path), str(files["cohort"]), "--out", str(out),
                 "--exclude-below", "field_of_view_whole_brain=1"]) == 0
    summary = json.loads((out / "cohort_stats.json").read_text())
    assert summary["excluded"] == {"field_of_view_whole_brain < 1 or missing": sorted(metrics.case_id[:2])}
    capsys.readouterr()
    assert main(["cohort-stats", str(path), str(files["cohort"]), "--out", str(tmp_path / "bad"),
                 "--exclude-below", "dmv_detectability_index>2.3"]) == 2
    assert "expected COLUMN=NUMBER" in capsys.readouterr().err


def test_cohort_stats_warns_when_image_quality_differs_between_groups(tmp_path, capsys):
    """A grouping whose groups differ in DMV detectability (or in how many fields of view cut the
    brain) gets the comparison and a warning: the engine finds fewer DMVs at a lower index, so a
    difference in DMV counts there may be one of image quality.  A grouping balanced in both gets
    the comparison and no warning."""
    rng = np.random.default_rng(5)
    n = 40
    ids = [f"s{i:02d}" for i in range(n)]
    term = np.array(["preterm", "term"] * (n // 2))
    sex = np.repeat(["F", "M"], n // 2)         # each sex holds 10 preterm and 10 term
    # the index: lower in the preterm scans; the same values in both sexes
    index = np.where(term == "preterm", 2.0, 6.0) + np.tile(np.linspace(-1, 1, n // 2), 2)
    whole = np.ones(n, int)
    whole[[0, 2, 4, 6, 20, 22, 24, 26]] = 0      # 8 cut fields of view, all preterm, 4 per sex
    metrics = pd.DataFrame({"case_id": ids, "dmv_count": rng.poisson(25, n),
                            "dmv_detectability_index": index, "field_of_view_whole_brain": whole})
    clinical = pd.DataFrame({"subject_id": ids, "term_status": term, "sex": sex})
    mpath, cpath = tmp_path / "metrics.csv", tmp_path / "clinical.csv"
    metrics.to_csv(mpath, index=False)
    clinical.to_csv(cpath, index=False)
    out = tmp_path / "stats"
    assert main(["cohort-stats", str(mpath), str(cpath), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    summary = json.loads((out / "cohort_stats.json").read_text())
    assert sorted(summary["quality_cols"]) == ["dmv_detectability_index", "field_of_view_whole_brain"]
    assert summary["metric_cols"] == ["dmv_count"]
    bal = pd.read_csv(out / "quality_balance.csv")
    det = bal[(bal.grouping == "term_status") & (bal.column == "dmv_detectability_index")]
    pre, trm = index[term == "preterm"], index[term == "term"]
    expected = st.ttest_ind(trm, pre, equal_var=False).pvalue       # both groups normal: Welch
    assert det["test"].iloc[0] == "Welch t-test" and det["p_value"].iloc[0] == pytest.approx(expected)
    fov = bal[(bal.grouping == "term_status") & (bal.column == "field_of_view_whole_brain")]
    assert list(fov["summary"]) == ["12 of 20 (60 %)", "20 of 20 (100 %)"]
    assert fov["p_value"].iloc[0] == pytest.approx(st.fisher_exact([[8, 12], [0, 20]])[1])
    by_sex = bal[bal.grouping == "sex"]
    assert (by_sex["p_value"] > 0.5).all()
    warnings = summary["quality_warnings"]
    assert len(warnings) == 2 and all("term_status" in w for w in warnings)
    assert "dmv_detectability_index" in warnings[0] and "--exclude-below dmv_detectability_index=2.3" in warnings[0]
    assert "field_of_view_whole_brain" in warnings[1]
    assert not any("sex groups" in w for w in warnings)
    md = (out / "tables.md").read_text()
    assert "Image quality by term_status" in md and "Image quality by sex" in md
    assert md.count("**Warning.**") == 2 and "**Warning.** Image quality differs between the term_status" in md
    assert "Image quality differs between the term_status" in (out / "tables.html").read_text()
    assert err.count("warning: Image quality differs") == 2
    # without quality columns: no comparison of them and no warning
    metrics.drop(columns=["dmv_detectability_index", "field_of_view_whole_brain"]).to_csv(mpath, index=False)
    out = tmp_path / "plain"
    assert main(["cohort-stats", str(mpath), str(cpath), "--out", str(out)]) == 0
    summary = json.loads((out / "cohort_stats.json").read_text())
    assert summary["quality_cols"] == [] and summary["quality_warnings"] == []
    assert not (out / "quality_balance.csv").exists() and "Image quality" not in (out / "tables.md").read_text()


def test_cohort_stats_cli(files, tmp_path):
    out = tmp_path / "stats"
    assert main(["cohort-stats", str(files["metrics"]), str(files["cohort"]), "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["cohort_stats.json", "correlations.csv", "group_comparisons.csv", "tables.html", "tables.md"]
    summary = json.loads((out / "cohort_stats.json").read_text())
    assert set(summary["group_cols"]) == {"label", "sex", "term_status"}          # low-cardinality columns
    assert summary["metric_cols"] == ["dmv_count", "dmv_width_mm", "dmv_tortuosity"]
    assert set(summary["correlate_with"]) == {"birthweight_g", "gestational_age_weeks"}
    g = pd.read_csv(out / "group_comparisons.csv")
    row = g[(g.grouping == "sex") & (g.metric == "dmv_width_mm")]
    assert len(row) == 2 and row["n"].sum() == 79 and row["missing"].sum() == 1
    merged = files["frames"]["metrics"].rename(columns={"case_id": "subject_id"}).merge(
        files["frames"]["cohort"], on="subject_id")
    a = merged.loc[merged.sex == "F", "dmv_width_mm"].dropna()
    b = merged.loc[merged.sex == "M", "dmv_width_mm"].dropna()
    ref = (st.ttest_ind(b, a, equal_var=False).pvalue if row["test"].iloc[0] == "Welch t-test"
           else st.mannwhitneyu(b, a).pvalue)
    assert row["p_value"].iloc[0] == pytest.approx(ref, rel=1e-9)
    kw = g[(g.grouping == "term_status") & (g.metric == "dmv_count")]
    assert len(kw) == 3 and kw["test"].iloc[0] in ("Kruskal-Wallis H", "one-way ANOVA", "Welch ANOVA")
    c = pd.read_csv(out / "correlations.csv")
    assert len(c) == 6 and set(c.columns) >= {"x", "y", "method", "n", "r", "ci_low", "ci_high", "p_value", "q_value"}
    md = (out / "tables.md").read_text()
    assert "Metrics by sex" in md and "| dmv_width_mm" in md and "Correlations" in md
    assert "<table" in (out / "tables.html").read_text()
    # explicit options, and an existing non-empty folder is refused
    out2 = tmp_path / "stats2"
    assert main(["cohort-stats", str(files["metrics"]), str(files["cohort"]), "--out", str(out2),
                 "--group", "sex", "--metrics", "dmv_width_mm", "--correlate", "birthweight_g"]) == 0
    assert len(pd.read_csv(out2 / "group_comparisons.csv")) == 2
    assert main(["cohort-stats", str(files["metrics"]), str(files["cohort"]), "--out", str(out2)]) == 2
    assert main(["cohort-stats", str(files["metrics"]), str(files["cohort"]), "--out",
                 str(tmp_path / "x"), "--group", "nonexistent"]) == 2
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_compare_cli(files, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", str(files["pa"]), str(files["pb"]), "--cohort", str(files["cohort"]),
                 "--out", str(out)]) == 0
    res = json.loads((out / "compare.json").read_text())
    y = files["frames"]["cohort"]["label"].to_numpy()
    pa, pb = files["frames"]["pa"]["probability"], files["frames"]["pb"]["probability"]
    assert res["auc_a"] == pytest.approx(roc_auc_score(y, pa))
    assert res["auc_b"] == pytest.approx(roc_auc_score(y, pb))
    ref = roc.delong_test(y, pa, pb)
    assert res["p_value"] == pytest.approx(ref["p_value"]) and res["n"] == len(y)
    assert (out / "roc_compare.png").stat().st_size > 5000
    # mismatched subject sets are refused, naming the missing subject
    short = files["frames"]["pb"].iloc[1:]
    short.to_csv(tmp_path / "short.csv", index=False)
    capsys.readouterr()
    assert main(["compare", str(files["pa"]), str(tmp_path / "short.csv"), "--cohort", str(files["cohort"]),
                 "--out", str(tmp_path / "cmp2")]) == 2
    assert "sub-000" in capsys.readouterr().err


def test_nomogram_cli(files, tmp_path, capsys):
    out = tmp_path / "nomo"
    assert main(["nomogram", str(files["pa"]), str(files["cohort"]), "--clinical", "birthweight_g",
                 "--out", str(out), "--validation-predictions", str(files["pb"]),
                 "--validation-cohort", str(files["cohort"])]) == 0
    for name in ("nomogram.json", "nomogram.png", "calibration.png", "decision_curve.png", "decision_curve.csv"):
        assert (out / name).stat().st_size > 0
    d = json.loads((out / "nomogram.json").read_text())
    assert list(d["coefficients"]) == ["intercept", "dl_score", "birthweight_g"]
    cohort = files["frames"]["cohort"]
    X = sm.add_constant(np.c_[files["frames"]["pa"]["probability"], cohort["birthweight_g"]])
    glm = sm.GLM(cohort["label"], X, family=sm.families.Binomial()).fit()
    np.testing.assert_allclose([d["coefficients"][k] for k in ("intercept", "dl_score", "birthweight_g")],
                               glm.params, rtol=1e-5)
    assert d["auc"] == pytest.approx(roc_auc_score(cohort["label"], X @ glm.params))
    assert d["n"] == len(cohort)
    assert set(d["odds_ratios"]["birthweight_g"]) >= {"odds_ratio", "ci_low", "ci_high", "p_value"}
    assert {"slope", "intercept", "brier", "hosmer_lemeshow"} <= set(d["calibration"])
    vlp = np.c_[np.ones(len(cohort)), files["frames"]["pb"]["probability"], cohort["birthweight_g"]] @ glm.params
    assert d["validation"]["auc"] == pytest.approx(roc_auc_score(cohort["label"], vlp))
    dca = pd.read_csv(out / "decision_curve.csv")
    assert list(dca.columns[:4]) == ["threshold", "net_benefit_model", "net_benefit_all", "net_benefit_none"]
    # errors: unmatched subjects, missing clinical column, perfect separation
    extra = pd.concat([files["frames"]["pa"], pd.DataFrame({"subject_id": ["ghost"], "probability": [0.5]})])
    extra.to_csv(tmp_path / "extra.csv", index=False)
    capsys.readouterr()
    assert main(["nomogram", str(tmp_path / "extra.csv"), str(files["cohort"]), "--clinical", "birthweight_g",
                 "--out", str(tmp_path / "e1")]) == 2
    assert "ghost" in capsys.readouterr().err
    assert main(["nomogram", str(files["pa"]), str(files["cohort"]), "--clinical", "apgar",
                 "--out", str(tmp_path / "e2")]) == 2
    assert "apgar" in capsys.readouterr().err
    sep = files["frames"]["pa"].assign(probability=0.2 + 0.6 * cohort["label"])
    sep.to_csv(tmp_path / "sep.csv", index=False)
    assert main(["nomogram", str(tmp_path / "sep.csv"), str(files["cohort"]), "--clinical", "birthweight_g",
                 "--out", str(tmp_path / "e3")]) == 2
    assert "separated" in capsys.readouterr().err
    assert not (tmp_path / "e3").exists() or not any((tmp_path / "e3").iterdir())
