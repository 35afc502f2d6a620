"""Evaluate a trained model on a cohort: predictions.csv, metrics.json, roc.png.

* ``predictions.csv``: ``subject_id,probability`` (P(injured) from ``inference.classify_t1``
  on the T1 alone - ROIs from the model's atlas or ``atlas`` - the label column is
  never read for prediction), one row per subject in cohort order.
* ``metrics.json`` (from ``NeonatalBrainLib.stats.roc`` on exactly those values):
  ``auc`` = Mann-Whitney P(p+ > p-) + 1/2 P(p+ = p-); ``auc_ci_low/high`` = 95 % DeLong
  interval; ``threshold`` = the model card's threshold (a subject is positive iff
  probability >= threshold); ``accuracy, sensitivity, specificity, precision, npv, f1``
  of that rule; ``n`` and the confusion counts.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from NeonatalBrainLib.imageio import InputError, load_volume
from NeonatalBrainLib.outputs import require_empty_dir, staged_output
from NeonatalBrainLib.progress import as_progress
from NeonatalBrainLib.stats import roc as _roc

from .cohort import read_cohort
from .inference import atlas_from_card, classify_t1, load_model


def predict_cohort(cohort_csv: str | os.PathLike, model_dir: str | os.PathLike, atlas=None,
                   progress=None, rois: str = "atlas") -> pd.DataFrame:
    """``subject_id, probability`` for every subject of the cohort (labels not needed).

    ``rois="atlas"`` (default): ROIs segmented with the model's atlas (or ``atlas``), as
    ``classify`` does on a lone T1; ``rois="cohort"``: the cohort's
    ``<subject_id>/labels.nii.gz`` (ground-truth ROIs; every subject must have them).
    """
    if rois not in ("atlas", "cohort"):
        raise InputError(f"rois must be 'atlas' or 'cohort', got {rois!r}")
    prog = as_progress(progress)
    df = read_cohort(cohort_csv, require_label=False, require_two_classes=False)
    lm = load_model(model_dir)
    if rois == "cohort":
        lacking = df["subject_id"][df["labels_path"].isna()].tolist()
        if lacking:
            raise InputError(f"cohort CSV {cohort_csv}: --rois cohort needs <subject_id>/labels.nii.gz and "
                             f"labels.csv beside the CSV; missing for {', '.join(lacking[:5])}")
        from .cohort import cohort_label_table
        from .inference import UserRois

        table = cohort_label_table(cohort_csv)
    if atlas is None:
        atlas = atlas_from_card(dict(lm.card, _model_dir=str(lm.model_dir)))
    atlas_obj = None
    if atlas is not None:
        try:
            from .atlas import load_atlas

            atlas_obj = load_atlas(atlas)  # load once for the whole cohort
        except ImportError:
            atlas_obj = atlas
    probs = []
    n = len(df)
    for i, row in enumerate(df.itertuples()):
        prog.update(i / n, str(row.subject_id))
        t1 = load_volume(row.t1_path, f"T1 of {row.subject_id}")
        given = None
        if rois == "cohort":
            lab = load_volume(row.labels_path, f"labels of {row.subject_id}")
            given = UserRois(lab, table, str(row.labels_path))
        res = classify_t1(t1, model_dir, rois=given, atlas=atlas_obj, gradcam=False,
                          progress=prog.sub(i / n, (i + 1) / n))
        probs.append(res.probability)
    prog.update(1.0, "done")
    return pd.DataFrame({"subject_id": df["subject_id"].to_numpy(), "probability": np.asarray(probs, float)})


def compute_metrics(y_true, probability, threshold: float) -> dict:
    """metrics.json content for labels ``y_true`` and scores ``probability``."""
    y = np.asarray(y_true, int)
    p = np.asarray(probability, float)
    out = {"n": int(len(y)), "n_injured": int(y.sum()), "n_control": int((1 - y).sum())}
    a, lo, hi = _roc.delong_auc_ci(y, p)
    out.update({"auc": float(a), "auc_ci_low": float(lo), "auc_ci_high": float(hi)})
    m = _roc.binary_metrics(y, p, float(threshold))
    out.update({k: (None if v is None else (int(v) if k in ("n", "tp", "fp", "tn", "fn") else float(v)))
                for k, v in m.items()})
    out["threshold"] = float(threshold)
    out["definitions"] = {
        "auc": "Mann-Whitney P(p_injured > p_control) + 0.5 P(equal) over predictions.csv",
        "auc_ci": "95% DeLong confidence interval",
        "positive": "probability >= threshold (threshold from the model card)",
    }
    return out


def evaluate(cohort_csv: str | os.PathLike, model_dir: str | os.PathLike, out_dir: str | os.PathLike,
             atlas=None, progress=None, rois: str = "atlas") -> dict:
    """Write predictions.csv, metrics.json and roc.png into the new/empty ``out_dir``;
    returns the metrics dict."""
    prog = as_progress(progress)
    df = read_cohort(cohort_csv, require_label=True, require_two_classes=True)
    require_empty_dir(out_dir, create=False)
    lm = load_model(model_dir)
    pred = predict_cohort(cohort_csv, model_dir, atlas=atlas, progress=prog.sub(0.0, 0.95), rois=rois)
    y = df.set_index("subject_id").loc[pred["subject_id"], "label"].to_numpy(int)
    metrics = compute_metrics(y, pred["probability"], float(lm.card["threshold"]))
    metrics["model_id"] = lm.model_id
    metrics["cohort_csv"] = str(Path(cohort_csv).resolve())
    metrics["rois"] = rois
    with staged_output(out_dir) as stage:
        pred.to_csv(stage / "predictions.csv", index=False, float_format="%.10g")
        # metrics from the values exactly as written
        written = pd.read_csv(stage / "predictions.csv", dtype={"subject_id": str})
        metrics.update({k: v for k, v in compute_metrics(y, written["probability"], metrics["threshold"]).items()})
        (stage / "metrics.json").write_text(json.dumps(metrics, indent=2))
        _roc.plot_roc({lm.model_id: (y, written["probability"].to_numpy())}, stage / "roc.png",
                      title=f"{Path(cohort_csv).name}: {lm.model_id}")
    prog.update(1.0, "done")
    return metrics


def read_predictions(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"predictions {path}: file not found")
    df = pd.read_csv(path, dtype={"subject_id": str})
    if not {"subject_id", "probability"} <= set(df.columns):
        raise InputError(f"predictions {path}: needs columns subject_id,probability")
    return df
