"""Accuracy of a vessel analysis against ground truth (phantom ``vessels.json``).

Matching rule (the acceptance criterion of the project): a predicted DMV
*matches* a true DMV when more than half of its centreline points lie within
``max(1 mm, true diameter)`` of the true centreline; each predicted DMV is
assigned to the true DMV that covers the largest share of its points.

Metrics
-------
* ``sensitivity``: true DMVs matched by at least one predicted DMV / true DMVs.
* ``ppv``: predicted DMVs that match a true DMV / predicted DMVs.
* ``count_error_left/right``: ``|n_pred - n_true| / n_true`` per hemisphere.
* ``width_mae_mm``, ``tortuosity_mae``, ``curvature_mae_per_mm``: mean absolute
  error over matched pairs (for a true DMV matched by several predicted pieces,
  the piece covering it best).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree


def load_truth(path: str | os.PathLike) -> dict:
    """Read a phantom ``vessels.json`` (file or the folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "vessels.json"
    return json.loads(path.read_text())


def match_vessels(pred: dict[int, np.ndarray], truth: list[dict], *, min_tolerance_mm: float = 1.0) -> dict[int, tuple[int, float]]:
    """predicted id -> (matched true vessel_id or 0, fraction of points within tolerance)."""
    trees = [(v["vessel_id"], cKDTree(np.asarray(v["centerline_ras_mm"], float)),
              max(min_tolerance_mm, float(v["diameter_mm"]))) for v in truth]
    out = {}
    for pid, pts in pred.items():
        pts = np.asarray(pts, float)
        best, best_frac = 0, 0.0
        for tid, tree, tol in trees:
            d, _ = tree.query(pts, distance_upper_bound=tol)
            frac = float(np.mean(np.isfinite(d))) if len(pts) else 0.0
            if frac > best_frac:
                best, best_frac = tid, frac
        out[pid] = (best if best_frac > 0.5 else 0, best_frac)
    return out


def evaluate(vessels: pd.DataFrame, centerlines: dict[int, np.ndarray], truth: dict, *,
             region: str = "dmv") -> dict:
    """Detection and measurement accuracy of one analysis for ``region`` (see module docstring)."""
    true = [v for v in truth["vessels"] if v["region"] == region]
    pred_rows = vessels[vessels["region"] == region]
    pred = {int(r.vessel_id): centerlines[int(r.vessel_id)] for r in pred_rows.itertuples()}
    matches = match_vessels(pred, true)
    matched_true = {m for m, _ in matches.values() if m}
    n_true, n_pred = len(true), len(pred)
    out: dict = {
        "n_true": n_true, "n_pred": n_pred,
        "sensitivity": len(matched_true) / n_true if n_true else float("nan"),
        "ppv": sum(1 for m, _ in matches.values() if m) / n_pred if n_pred else float("nan"),
    }
    for side in ("left", "right"):
        nt = sum(1 for v in true if v["side"] == side)
        npred = int((pred_rows["side"] == side).sum())
        out[f"n_true_{side}"], out[f"n_pred_{side}"] = nt, npred
        out[f"count_error_{side}"] = abs(npred - nt) / nt if nt else float("nan")
    by_true: dict[int, tuple[int, float]] = {}
    for pid, (tid, frac) in matches.items():
        if tid and (tid not in by_true or len(pred[pid]) > len(pred[by_true[tid][0]])):
            by_true[tid] = (pid, frac)
    tmap = {v["vessel_id"]: v for v in true}
    rows = pred_rows.set_index("vessel_id")
    errs = {"width": [], "tort": [], "curv": []}
    for tid, (pid, _) in by_true.items():
        t = tmap[tid]
        r = rows.loc[pid]
        errs["width"].append(abs(float(r["width_mm"]) - float(t["diameter_mm"])))
        errs["tort"].append(abs(float(r["tortuosity"]) - float(t["tortuosity"])))
        errs["curv"].append(abs(float(r["curvature_per_mm"]) - float(t["curvature_per_mm"])))
    out["width_mae_mm"] = float(np.nanmean(errs["width"])) if errs["width"] else float("nan")
    out["tortuosity_mae"] = float(np.nanmean(errs["tort"])) if errs["tort"] else float("nan")
    out["curvature_mae_per_mm"] = float(np.nanmean(errs["curv"])) if errs["curv"] else float("nan")
    out["width_bias_mm"] = float(np.mean([float(rows.loc[p]["width_mm"]) - float(tmap[t]["diameter_mm"])
                                          for t, (p, _) in by_true.items()])) if by_true else float("nan")
    return out


#: Acceptance targets of the project (issue 3).
TARGETS = {"sensitivity": (">=", 0.90), "ppv": (">=", 0.90), "count_error_left": ("<=", 0.10),
           "count_error_right": ("<=", 0.10), "width_mae_mm": ("<=", 0.15), "tortuosity_mae": ("<=", 0.03)}


def meets_targets(result: dict) -> dict[str, bool]:
    out = {}
    for key, (op, value) in TARGETS.items():
        x = result.get(key, float("nan"))
        out[key] = bool(np.isfinite(x) and (x >= value if op == ">=" else x <= value))
    return out
