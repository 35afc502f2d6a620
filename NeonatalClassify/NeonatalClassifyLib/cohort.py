"""Cohort CSV reading and validation.

A cohort CSV has the header ``subject_id,t1,label,center,birthweight_g,
gestational_age_weeks,sex`` (``t1`` relative to the CSV's folder; ``label`` 1 = injured,
0 = control; extra columns ignored).  A training cohort may carry
``<csv folder>/<subject_id>/labels.nii.gz`` plus ``<csv folder>/labels.csv``
(anatomical labels on the T1 grid).
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from NeonatalBrainLib import anatomy
from NeonatalBrainLib.imageio import InputError


def read_cohort(csv_path: str | os.PathLike, *, require_label: bool = True,
                require_two_classes: bool = True) -> pd.DataFrame:
    """Validated cohort table with absolute ``t1_path`` (and ``labels_path`` or None).

    Raises InputError for a missing file, missing columns, duplicate subject ids,
    missing T1 files, labels other than 0/1, or (``require_two_classes``) a cohort with
    fewer than two subjects of each class.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise InputError(f"cohort CSV {csv_path}: file not found")
    try:
        df = pd.read_csv(csv_path, dtype={"subject_id": str})
    except Exception as exc:
        raise InputError(f"cohort CSV {csv_path}: cannot be parsed: {exc}") from None
    required = ["subject_id", "t1"] + (["label"] if require_label else [])
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(f"cohort CSV {csv_path}: missing column(s) {', '.join(missing)} "
                         f"(has {', '.join(map(str, df.columns))})")
    if df.empty:
        raise InputError(f"cohort CSV {csv_path}: no subjects")
    df = df.copy()
    df["subject_id"] = df["subject_id"].astype(str).str.strip()
    dup = df["subject_id"][df["subject_id"].duplicated()].unique()
    if len(dup):
        raise InputError(f"cohort CSV {csv_path}: duplicate subject_id {', '.join(dup[:5])}")
    base = csv_path.resolve().parent
    paths, absent = [], []
    for sid, t1 in zip(df["subject_id"], df["t1"]):
        if not isinstance(t1, str) or not t1.strip():
            absent.append(f"{sid} (empty t1)")
            paths.append(None)
            continue
        p = Path(t1.strip())
        p = p if p.is_absolute() else base / p
        if not p.exists():
            absent.append(f"{sid} ({p})")
        paths.append(p)
    if absent:
        raise InputError(f"cohort CSV {csv_path}: T1 file(s) missing for {len(absent)} subject(s): "
                         + "; ".join(absent[:5]) + (" ..." if len(absent) > 5 else ""))
    df["t1_path"] = paths
    if "label" in df.columns and (require_label or df["label"].notna().all()):
        lab = pd.to_numeric(df["label"], errors="coerce")
        bad = df["subject_id"][~lab.isin([0, 1])]
        if len(bad):
            raise InputError(f"cohort CSV {csv_path}: label must be 0 (control) or 1 (injured); "
                             f"bad for {', '.join(bad[:5])}")
        df["label"] = lab.astype(int)
        if require_two_classes:
            counts = df["label"].value_counts()
            if len(counts) < 2:
                raise InputError(f"cohort CSV {csv_path}: single-class cohort (all labels = "
                                 f"{int(df['label'].iloc[0])}); need injured and control subjects")
            if counts.min() < 2:
                raise InputError(f"cohort CSV {csv_path}: need at least 2 subjects of each class, "
                                 f"got {counts.to_dict()}")
    table = base / "labels.csv"
    df["labels_path"] = [
        (base / sid / "labels.nii.gz") if (table.is_file() and (base / sid / "labels.nii.gz").is_file()) else None
        for sid in df["subject_id"]]
    return df


def cohort_label_table(csv_path: str | os.PathLike) -> dict[int, str]:
    """The ``labels.csv`` beside a cohort CSV, or the project's table when absent."""
    table = Path(csv_path).resolve().parent / "labels.csv"
    return anatomy.read_label_table(table) if table.is_file() else dict(anatomy.LABELS)


def cohort_summary(df: pd.DataFrame) -> dict:
    """JSON-ready summary (counts per class and centre, clinical variable ranges)."""
    out = {"n": int(len(df))}
    if "label" in df.columns:
        out["n_injured"] = int((df["label"] == 1).sum())
        out["n_control"] = int((df["label"] == 0).sum())
    if "center" in df.columns:
        out["centers"] = {str(k): int(v) for k, v in df["center"].astype(str).value_counts().sort_index().items()}
    for col in ("birthweight_g", "gestational_age_weeks"):
        if col in df.columns:
            v = pd.to_numeric(df[col], errors="coerce").dropna()
            if len(v):
                out[col] = {"mean": round(float(v.mean()), 3), "min": float(v.min()), "max": float(v.max())}
    return out
