"""NeonatalClassify Cohort tab at the MRML level: nomogram, curves and images as Slicer nodes.

Uses files on disk (a cohort CSV and a predictions CSV as written by ``evaluate``) and
checks that the scene shows exactly what the statistics wrote: coefficients, calibration
bins, decision curve, ROC points, and the nomogram picture as an image node.  The
network-dependent steps (train/evaluate) are covered by the engine's tests and by the
subject scenario in test_classify_module_mrml.py.
"""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")

from NeonatalBrainLib import mrml  # noqa: E402
from NeonatalBrainLib.imageio import InputError  # noqa: E402
from NeonatalClassifyLib import mrml_logic  # noqa: E402


@pytest.fixture
def cohort_files(tmp_path):
    """80 subjects: label ~ Bernoulli(logistic(-1 + 4 dl - 0.002 (bw - 3000))), predictions on disk."""
    rng = np.random.default_rng(11)
    n = 80
    dl = rng.uniform(0, 1, n)
    bw = rng.normal(3000, 450, n)
    p = 1 / (1 + np.exp(-(-1.5 + 3.5 * dl - 0.002 * (bw - 3000))))
    y = (rng.uniform(0, 1, n) < p).astype(int)
    cohort = tmp_path / "cohort.csv"
    with open(cohort, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["subject_id", "t1", "label", "center", "birthweight_g", "gestational_age_weeks", "sex"])
        for i in range(n):
            w.writerow([f"sub{i:03d}", f"sub{i:03d}/t1.nii.gz", y[i], "A", f"{bw[i]:.1f}", 39.0, "F" if i % 2 else "M"])
    predictions = tmp_path / "predictions.csv"
    with open(predictions, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["subject_id", "probability"])
        for i in range(n):
            w.writerow([f"sub{i:03d}", f"{dl[i]:.10g}"])
    return {"cohort": cohort, "predictions": predictions, "y": y, "dl": dl, "bw": bw}


def test_nomogram_nodes_show_what_the_statistics_wrote(mrml_scene, cohort_files, tmp_path):
    scene = mrml_scene.scene
    stages = []
    res = mrml_logic.fit_nomogram(scene, cohort_files["cohort"], tmp_path / "runs", clinical=["birthweight_g"],
                                  predictions_csv=cohort_files["predictions"],
                                  progress=lambda f, s: stages.append(f))
    nom_dir = res.out_dir / "nomogram"
    written = json.loads((nom_dir / "nomogram.json").read_text())
    # coefficients table = nomogram.json (raw-unit coefficients, odds ratios)
    rows = {r["term"]: r for r in mrml.rows_from_table_node(res.tables["coefficients"])}
    assert set(rows) == {"intercept", "dl_score", "birthweight_g"}
    for term, beta in written["coefficients"].items():
        assert rows[term]["coefficient"] == pytest.approx(beta, rel=1e-12)
    assert rows["dl_score"]["odds_ratio"] == pytest.approx(np.exp(written["coefficients"]["dl_score"]), rel=1e-9)
    assert rows["dl_score"]["coefficient"] > 0 and rows["birthweight_g"]["coefficient"] < 0  # the simulated signs
    assert res.summary["auc"] == pytest.approx(written["auc"])

    # calibration chart plots the bins of nomogram.json
    bins = written["calibration"]["bins"]
    cal = mrml.rows_from_table_node(res.tables["calibration"])
    assert [r["mean_predicted"] for r in cal] == pytest.approx([b["mean_predicted"] for b in bins])
    assert [r["observed_rate"] for r in cal] == pytest.approx([b["observed_rate"] for b in bins])
    chart = res.figures["Calibration curve"]
    assert chart.IsA("vtkMRMLPlotChartNode") and chart.GetNumberOfPlotSeriesNodes() == 2
    series = chart.GetNthPlotSeriesNode(0)
    assert series.GetTableNode() is res.tables["calibration"]
    assert (series.GetXColumnName(), series.GetYColumnName()) == ("mean_predicted", "observed_rate")

    # decision curve table = decision_curve.csv
    with open(nom_dir / "decision_curve.csv", newline="") as fh:
        dca_file = list(csv.DictReader(fh))
    dca = mrml.rows_from_table_node(res.tables["decision_curve"])
    assert len(dca) == len(dca_file) == 99
    assert [r["net_benefit_model"] for r in dca] == pytest.approx([float(r["net_benefit_model"]) for r in dca_file])
    assert res.figures["Decision curve"].GetNumberOfPlotSeriesNodes() == 3

    # the nomogram picture as an RGB image node of the PNG's size
    import matplotlib.image as mpimg

    png = mpimg.imread(nom_dir / "nomogram.png")
    image_node = res.figures["Nomogram"]
    assert image_node.IsA("vtkMRMLVectorVolumeNode")
    assert image_node.GetImageData().GetDimensions() == (png.shape[1], png.shape[0], 1)
    assert image_node.GetImageData().GetNumberOfScalarComponents() == 3
    assert stages and stages[-1] == pytest.approx(1.0)

    # a second run goes to a new folder; nothing is overwritten
    res2 = mrml_logic.fit_nomogram(scene, cohort_files["cohort"], tmp_path / "runs", clinical=["birthweight_g"],
                                   predictions_csv=cohort_files["predictions"])
    assert res2.out_dir != res.out_dir and res.out_dir.exists()
    assert json.loads((nom_dir / "nomogram.json").read_text()) == written


def test_roc_chart_points_match_sklearn(mrml_scene, cohort_files):
    from sklearn.metrics import roc_curve

    y, dl = cohort_files["y"], cohort_files["dl"]
    table, chart = mrml_logic.roc_table_and_chart(mrml_scene.scene, "cohort", {"demo": dl, "noise": dl[::-1]}, y)
    rows = mrml.rows_from_table_node(table)
    fpr_ref, tpr_ref, _ = roc_curve(y, dl, drop_intermediate=False)
    pts = sorted({(r["fpr_demo"], r["tpr_demo"]) for r in rows})
    ref = sorted(set(zip(fpr_ref.tolist(), tpr_ref.tolist())))
    assert np.allclose(pts, ref)
    assert chart.GetNumberOfPlotSeriesNodes() == 3  # two models + chance line


def test_failed_or_cancelled_runs_leave_nothing(mrml_scene, cohort_files, tmp_path):
    from NeonatalBrainLib.progress import OperationCancelled, Progress

    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "older-run").mkdir()
    with pytest.raises(InputError, match="predictions CSV or a model"):
        mrml_logic.fit_nomogram(mrml_scene.scene, cohort_files["cohort"], runs, clinical=["birthweight_g"])
    with pytest.raises(InputError, match="birthweight_kg"):
        mrml_logic.fit_nomogram(mrml_scene.scene, cohort_files["cohort"], runs, clinical=["birthweight_kg"],
                                predictions_csv=cohort_files["predictions"])
    cancelled = Progress()
    cancelled.cancel()
    with pytest.raises(OperationCancelled):
        mrml_logic.fit_nomogram(mrml_scene.scene, cohort_files["cohort"], runs, clinical=["birthweight_g"],
                                predictions_csv=cohort_files["predictions"], progress=cancelled)
    assert sorted(p.name for p in runs.iterdir()) == ["older-run"]
