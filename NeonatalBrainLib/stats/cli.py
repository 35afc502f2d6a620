"""Sub-commands ``cohort-stats``, ``compare`` and ``nomogram`` of ``neonatal-brain``.

File formats
------------
* predictions CSV: ``subject_id, probability`` (one row per subject; extra columns ignored),
  as written by ``neonatal-brain evaluate``.
* cohort CSV: ``subject_id, label`` (1 = injured, 0 = control) plus clinical columns.
"""
from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..imageio import InputError
from ..outputs import staged_output

__all__ = ["register", "read_predictions", "read_cohort", "json_safe"]


def json_safe(obj):
    """Nested dicts/lists with numpy scalars and NaN/Inf made valid JSON (NaN/Inf -> None)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [json_safe(v) for v in obj.tolist()]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    return obj


def _split(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def _ids(df: pd.DataFrame, name: str, path) -> pd.DataFrame:
    if "subject_id" not in df.columns:
        raise InputError(f"{name} {path}: column 'subject_id' is missing (columns: {list(df.columns)})")
    if df["subject_id"].isna().any():
        raise InputError(f"{name} {path}: {int(df['subject_id'].isna().sum())} row(s) without subject_id")
    df = df.copy()
    df["subject_id"] = df["subject_id"].astype(str).str.strip()
    dup = df.loc[df["subject_id"].duplicated(), "subject_id"].unique().tolist()
    if dup:
        raise InputError(f"{name} {path}: duplicate subject_id {dup[:10]}")
    return df


def read_predictions(path, name: str = "predictions CSV") -> pd.DataFrame:
    """``subject_id`` (text) and ``probability`` (finite float) of a predictions CSV."""
    from .cohort import read_csv_table

    df = _ids(read_csv_table(path, name), name, path)
    if "probability" not in df.columns:
        raise InputError(f"{name} {path}: column 'probability' is missing (columns: {list(df.columns)})")
    prob = pd.to_numeric(df["probability"], errors="coerce")
    bad = prob.isna() | ~np.isfinite(prob.to_numpy(dtype=float, na_value=np.nan))
    if bad.any():
        raise InputError(f"{name} {path}: probability is missing or not a number for "
                         f"{df.loc[bad, 'subject_id'].tolist()[:10]}")
    return pd.DataFrame({"subject_id": df["subject_id"], "probability": prob.astype(float)})


def read_cohort(path, outcome: str = "label", name: str = "cohort CSV") -> pd.DataFrame:
    """A cohort CSV with ``subject_id`` and a 0/1 ``outcome`` column (other columns kept)."""
    from .cohort import read_csv_table

    df = _ids(read_csv_table(path, name), name, path)
    if outcome not in df.columns:
        raise InputError(f"{name} {path}: outcome column '{outcome}' is missing (columns: {list(df.columns)})")
    y = pd.to_numeric(df[outcome], errors="coerce")
    bad = ~y.isin([0, 1])
    if bad.any():
        raise InputError(f"{name} {path}: '{outcome}' must be 0 or 1; bad or missing for "
                         f"{df.loc[bad, 'subject_id'].tolist()[:10]}")
    df[outcome] = y.astype(int)
    return df


def _match(pred: pd.DataFrame, cohort: pd.DataFrame, pred_name: str, cohort_name: str) -> pd.DataFrame:
    """Inner join on subject_id that refuses unmatched subjects on either side, naming them."""
    p_ids, c_ids = set(pred["subject_id"]), set(cohort["subject_id"])
    only_p, only_c = sorted(p_ids - c_ids), sorted(c_ids - p_ids)
    if only_p or only_c:
        parts = []
        if only_p:
            parts.append(f"{len(only_p)} subject(s) of {pred_name} are not in {cohort_name}: {only_p[:10]}")
        if only_c:
            parts.append(f"{len(only_c)} subject(s) of {cohort_name} have no prediction in {pred_name}: "
                         f"{only_c[:10]}")
        raise InputError("; ".join(parts))
    return pred.merge(cohort, on="subject_id", how="inner", validate="one_to_one")


# ----------------------------------------------------------------------------- cohort-stats
def _run_cohort_stats(args) -> int:
    from .cohort import cohort_statistics

    res = cohort_statistics(args.metrics_csv, args.clinical_csv, group_cols=_split(args.group),
                            metric_cols=_split(args.metrics), correlate_with=_split(args.correlate),
                            out_dir=args.out, correlation_method=args.method,
                            exclude_below=_minimums(args.exclude_below))
    print(f"cohort-stats: {res['n_subjects']} subjects, {len(res['metric_cols'])} metrics, "
          f"groupings {res['group_cols']}, correlations with {res['correlate_with']} -> {args.out}")
    for rule, ids in res["excluded"].items():
        print(f"  {len(ids)} subject(s) left out by {rule}")
    for warning in res["quality_warnings"]:
        print(f"  warning: {warning}", file=sys.stderr)
    return 0


def _minimums(items: Sequence[str]) -> dict[str, float]:
    """``["col=2.3", ...]`` -> ``{"col": 2.3}``; InputError naming a malformed item."""
    out = {}
    for item in items:
        col, sep, value = str(item).partition("=")
        try:
            low = float(value)
        except ValueError:
            low = float("nan")
        if not sep or not col.strip() or not np.isfinite(low):
            raise InputError(f"--exclude-below {item!r}: expected COLUMN=NUMBER, e.g. dmv_detectability_index=2.3")
        out[col.strip()] = low
    return out


# ----------------------------------------------------------------------------- compare
def _run_compare(args) -> int:
    from . import roc

    a = read_predictions(args.pred_a, "predictions A")
    b = read_predictions(args.pred_b, "predictions B")
    only_a = sorted(set(a["subject_id"]) - set(b["subject_id"]))
    only_b = sorted(set(b["subject_id"]) - set(a["subject_id"]))
    if only_a or only_b:
        msg = []
        if only_a:
            msg.append(f"missing from {args.pred_b}: {only_a[:10]}{' ...' if len(only_a) > 10 else ''}")
        if only_b:
            msg.append(f"missing from {args.pred_a}: {only_b[:10]}{' ...' if len(only_b) > 10 else ''}")
        raise InputError("the two prediction files must hold the same subjects (paired test); "
                         + "; ".join(msg))
    cohort = read_cohort(args.cohort, args.outcome)
    missing = sorted(set(a["subject_id"]) - set(cohort["subject_id"]))
    if missing:
        raise InputError(f"cohort CSV {args.cohort} has no label for {len(missing)} predicted subject(s): "
                         f"{missing[:10]}")
    merged = (a.rename(columns={"probability": "score_a"})
              .merge(b.rename(columns={"probability": "score_b"}), on="subject_id")
              .merge(cohort[["subject_id", args.outcome]], on="subject_id"))
    y = merged[args.outcome].to_numpy()
    names = _split(args.names) or [Path(args.pred_a).stem, Path(args.pred_b).stem]
    if len(names) != 2:
        raise InputError(f"--names needs two names separated by a comma, got {args.names!r}")
    if names[0] == names[1]:
        names = [str(Path(args.pred_a)), str(Path(args.pred_b))]
    result = roc.delong_test(y, merged["score_a"], merged["score_b"], alpha=args.alpha)
    ci_a = roc.delong_auc_ci(y, merged["score_a"], alpha=args.alpha)
    ci_b = roc.delong_auc_ci(y, merged["score_b"], alpha=args.alpha)
    out = {"model_a": names[0], "model_b": names[1],
           "predictions_a": str(args.pred_a), "predictions_b": str(args.pred_b),
           "cohort": str(args.cohort), "test": "paired DeLong (DeLong 1988; Sun & Xu 2014)",
           **result, "alpha": args.alpha,
           "auc_a_ci_low": ci_a[1], "auc_a_ci_high": ci_a[2],
           "auc_b_ci_low": ci_b[1], "auc_b_ci_high": ci_b[2]}
    with staged_output(args.out) as stage:
        (stage / "compare.json").write_text(json.dumps(json_safe(out), indent=2, allow_nan=False),
                                            encoding="utf-8")
        roc.plot_roc({names[0]: (y, merged["score_a"]), names[1]: (y, merged["score_b"])},
                     stage / "roc_compare.png",
                     title=f"DeLong p = {result['p_value']:.3g} (n = {result['n']})", alpha=args.alpha)
    print(f"compare: AUC {names[0]} {result['auc_a']:.3f} vs {names[1]} {result['auc_b']:.3f}, "
          f"difference {result['difference']:+.3f}, p = {result['p_value']:.3g} -> {args.out}")
    return 0


# ----------------------------------------------------------------------------- nomogram
def _nomogram_table(pred_path, cohort_path, outcome: str, clinical: list[str], what: str) -> pd.DataFrame:
    pred = read_predictions(pred_path, f"{what} predictions CSV")
    cohort = read_cohort(cohort_path, outcome, f"{what} cohort CSV")
    missing = [c for c in clinical if c not in cohort.columns]
    if missing:
        raise InputError(f"{what} cohort CSV {cohort_path}: clinical column(s) {missing} missing "
                         f"(columns: {list(cohort.columns)})")
    cohort = cohort[["subject_id", outcome] + clinical]
    merged = _match(pred, cohort, f"{what} predictions {pred_path}", f"{what} cohort {cohort_path}")
    return merged.rename(columns={"probability": "dl_score"})


def _run_nomogram(args) -> int:
    from . import nomogram as nm

    clinical = _split(args.clinical) or []
    if "dl_score" in clinical:
        raise InputError("--clinical: dl_score is always included (the predictions' probability)")
    if bool(args.validation_predictions) != bool(args.validation_cohort):
        raise InputError("give both --validation-predictions and --validation-cohort, or neither")
    train = _nomogram_table(args.predictions, args.cohort, args.outcome, clinical, "training")
    predictors = ["dl_score"] + clinical
    model = nm.fit_nomogram(train, outcome=args.outcome, predictors=predictors)
    y = train[args.outcome].to_numpy()
    p = model.predict_proba(train)
    cal = nm.calibration(y, p, n_bins=args.n_bins)
    dca = nm.decision_curve(y, p)
    result = {"coefficients": model.coefficients, "auc": model.auc, "odds_ratios": model.odds_ratios,
              "calibration": cal, "n": model.n}
    extra = {k: v for k, v in model.to_dict().items() if k not in result}
    valid = None
    if args.validation_predictions:
        vdf = _nomogram_table(args.validation_predictions, args.validation_cohort, args.outcome,
                              clinical, "validation")
        valid = nm.validate_nomogram(model, vdf, n_bins=args.n_bins)
        result["validation"] = valid
    preds = nm.apply_nomogram(model, train).assign(cohort="training", label=y)
    with staged_output(args.out) as stage:
        nm.plot_nomogram(model, stage / "nomogram.png")
        nm.plot_calibration(y, p, stage / "calibration.png", n_bins=args.n_bins,
                            title=f"Calibration (training, n = {model.n})", result=cal)
        curves = {"nomogram (training)": dca}
        dca.to_csv(stage / "decision_curve.csv", index=False)
        nm.plot_decision_curve(curves, stage / "decision_curve.png", title="Decision curve (training)")
        if valid is not None:
            vy = vdf[args.outcome].to_numpy()
            vp = model.predict_proba(vdf)
            nm.plot_calibration(vy, vp, stage / "validation_calibration.png", n_bins=args.n_bins,
                                title=f"Calibration (validation, n = {valid['n']})",
                                result=valid["calibration"])
            vdca = nm.decision_curve(vy, vp)
            vdca.to_csv(stage / "validation_decision_curve.csv", index=False)
            nm.plot_decision_curve({"nomogram (validation)": vdca}, stage / "validation_decision_curve.png",
                                   title="Decision curve (validation)")
            preds = pd.concat([preds, nm.apply_nomogram(model, vdf).assign(cohort="validation", label=vy)],
                              ignore_index=True)
        preds.to_csv(stage / "nomogram_predictions.csv", index=False)
        (stage / "nomogram.json").write_text(
            json.dumps(json_safe({**result, **extra}), indent=2, allow_nan=False), encoding="utf-8")
    coef = ", ".join(f"{k} {v:.4g}" for k, v in model.coefficients.items())
    print(f"nomogram: n = {model.n}, AUC {model.auc:.3f}; coefficients {coef}"
          + (f"; validation AUC {valid['auc']:.3f} (n = {valid['n']})" if valid else "") + f" -> {args.out}")
    return 0


# ----------------------------------------------------------------------------- registration
def register(subparsers) -> None:
    """Add ``cohort-stats``, ``compare`` and ``nomogram`` to the ``neonatal-brain`` parser."""
    p = subparsers.add_parser(
        "cohort-stats", help="group comparisons and correlations of per-subject metrics",
        description="Merge METRICS.csv (subject_id or case_id, e.g. vessels-batch metrics.csv) with "
                    "CLINICAL.csv on the subject id; compare metrics between groups (mean ± SD or "
                    "median [IQR], test chosen by the distribution, effect sizes, BH q-values) and "
                    "correlate them with clinical variables. Writes group_comparisons.csv, "
                    "correlations.csv, tables.md, tables.html, cohort_stats.json.")
    p.add_argument("metrics_csv", metavar="METRICS.csv")
    p.add_argument("clinical_csv", metavar="CLINICAL.csv")
    p.add_argument("--out", required=True, metavar="DIR", help="new or empty output folder")
    p.add_argument("--group", metavar="COL[,COL...]",
                   help="grouping columns (default: every clinical column with 2-6 distinct values)")
    p.add_argument("--metrics", metavar="COL[,COL...]",
                   help="metric columns (default: every numeric column of METRICS.csv)")
    p.add_argument("--correlate", metavar="COL[,COL...]",
                   help="clinical variables to correlate the metrics with (default: numeric clinical "
                        "columns with more than 6 distinct values)")
    p.add_argument("--method", choices=("auto", "spearman", "pearson"), default="auto",
                   help="correlation coefficient (auto: Pearson if both look normal, else Spearman)")
    p.add_argument("--exclude-below", metavar="COL=VALUE", action="append", default=[],
                   help="leave out subjects whose metrics-CSV column COL is below VALUE or missing, e.g. "
                        "dmv_detectability_index=2.3 (scans where many DMVs are likely missed); repeatable")
    p.set_defaults(func=_run_cohort_stats)

    p = subparsers.add_parser(
        "compare", help="paired DeLong test between two models' predictions",
        description="Paired DeLong test of AUC_A = AUC_B on the same subjects; labels from the "
                    "cohort CSV. Writes compare.json and roc_compare.png.")
    p.add_argument("pred_a", metavar="PRED_A.csv")
    p.add_argument("pred_b", metavar="PRED_B.csv")
    p.add_argument("--cohort", required=True, metavar="COHORT.csv", help="subject_id and label columns")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--outcome", default="label", help="label column of the cohort (default: label)")
    p.add_argument("--names", metavar="A,B", help="model names for the report (default: file names)")
    p.add_argument("--alpha", type=float, default=0.05, help="1 - confidence level (default 0.05)")
    p.set_defaults(func=_run_compare)

    p = subparsers.add_parser(
        "nomogram", help="deep-learning + clinical logistic nomogram with calibration and DCA",
        description="Unpenalised logistic regression label ~ dl_score + clinical variables (raw "
                    "units); dl_score is the probability column of PREDICTIONS.csv. Writes "
                    "nomogram.json, nomogram.png, calibration.png, decision_curve.png, "
                    "decision_curve.csv, nomogram_predictions.csv (+ validation files).")
    p.add_argument("predictions", metavar="PREDICTIONS.csv")
    p.add_argument("cohort", metavar="COHORT.csv")
    p.add_argument("--clinical", required=True, metavar="COL[,COL...]",
                   help="clinical predictors in raw units, e.g. birthweight_g")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--outcome", default="label", help="outcome column of the cohort (default: label)")
    p.add_argument("--validation-predictions", metavar="P.csv")
    p.add_argument("--validation-cohort", metavar="C.csv")
    p.add_argument("--n-bins", type=int, default=10, help="Hosmer-Lemeshow / calibration groups")
    p.set_defaults(func=_run_nomogram)

