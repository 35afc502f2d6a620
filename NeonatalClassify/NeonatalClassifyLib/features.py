"""Deep features per ROI and their relation to co-registered parametric maps (FA, CBF ...).

Definitions
-----------
* For each deep grey structure present (caudate, putamen, globus pallidus, thalamus),
  the model's slices are placed through that structure (bilateral, same input spec
  as the model: ``slices.extract_slices`` with the structure's left+right labels).
* **Deep features of ROI r** = the activation of the architecture's last convolutional
  block (``models.GRADCAM_LAYERS``; for ResNet18 ``layer4``, whose global average is
  the input of the final linear layer, i.e. the penultimate layer) averaged over the
  feature-grid cells covering r, each cell weighted by the fraction of its pixels in r,
  over all slices.  Columns ``f000 ...``.
* **Map ROI mean**: mean of the map (resampled onto the T1 grid through the affines,
  linear) over r's voxels.
* **Cross-validated regression features -> map**: samples are feature-grid cells with
  >= 50 % of their pixels in one ROI; X = the cell's activation vector, y = the map's
  mean over the cell's pixels; ridge regression (standardised X, alpha chosen by
  ``RidgeCV`` from 1e-2..1e4 inside each training fold), predictions by
  ``GroupKFold`` over ROIs (a structure is never in its own training fold; KFold(5)
  if fewer than 3 ROIs).  Reported: RMSE (map units) and RMSE / mean(y).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from NeonatalBrainLib import anatomy
from NeonatalBrainLib.imageio import InputError, Volume, resample_to_grid, validate_scalar_volume
from NeonatalBrainLib.outputs import staged_output

from . import models as _models
from .inference import load_model, resolve_rois
from .slices import extract_slices


@dataclass
class FeatureResult:
    features: pd.DataFrame                 # one row per ROI: roi, n_cells, [map means], f000...
    regression: pd.DataFrame               # one row per map
    cells: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)
    model_id: str = ""


def _activations(lm, images: np.ndarray) -> np.ndarray:
    import torch

    store = {}
    layer = _models.get_submodule(lm.model, _models.GRADCAM_LAYERS[lm.arch])
    h = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o.detach()))
    try:
        lm.model.eval()
        with torch.no_grad():
            lm.model(torch.from_numpy(np.ascontiguousarray(images)))
    finally:
        h.remove()
    return store["a"].cpu().numpy().astype(np.float64)


def _block_mean(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Mean of 2D ``a`` over the pixels of each cell of a ``shape`` grid (area weights)."""
    h, w = a.shape
    rows = np.minimum((np.arange(h) * shape[0]) // h, shape[0] - 1)
    cols = np.minimum((np.arange(w) * shape[1]) // w, shape[1] - 1)
    out = np.zeros(shape)
    cnt = np.zeros(shape)
    np.add.at(out, (rows[:, None], cols[None, :]), a)
    np.add.at(cnt, (rows[:, None], cols[None, :]), 1)
    return out / np.maximum(cnt, 1)


def _sample_on_slices(vol: Volume, stack) -> np.ndarray:
    inv = np.linalg.inv(vol.affine)
    out = []
    for s in range(len(stack.z_mm)):
        pr = stack.pixel_ras(s).reshape(-1, 3)
        vox = pr @ inv[:3, :3].T + inv[:3, 3]
        out.append(ndimage.map_coordinates(np.asarray(vol.array, np.float64), vox.T, order=1,
                                           mode="nearest").reshape(stack.raw[s].shape))
    return np.stack(out)


def cv_regression(x: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int = 0) -> dict:
    """Cross-validated ridge regression (see module docstring); returns rmse, relative_rmse ..."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import GroupKFold, KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n = len(y)
    ng = len(np.unique(groups))
    if n < 4:
        return {"n_samples": int(n), "rmse": None, "relative_rmse": None, "note": "fewer than 4 samples"}
    if ng >= 3:
        cv, kw, scheme = GroupKFold(n_splits=min(5, ng)), {"groups": groups}, f"GroupKFold({min(5, ng)}) over ROIs"
    else:
        k = min(5, n)
        cv, kw, scheme = KFold(k, shuffle=True, random_state=seed), {}, f"KFold({k})"
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13)))
    pred = cross_val_predict(model, x, y, cv=cv, **kw)
    rmse = float(np.sqrt(np.mean((pred - y) ** 2)))
    mean = float(np.mean(y))
    ss = float(np.sum((y - mean) ** 2))
    return {"n_samples": int(n), "n_groups": int(ng), "cv": scheme, "rmse": rmse, "mean": mean,
            "relative_rmse": rmse / abs(mean) if mean != 0 else None,
            "r2_cv": 1.0 - float(np.sum((pred - y) ** 2)) / ss if ss > 0 else None}


def extract_roi_features(t1: Volume, model_dir: str | os.PathLike, rois=None,
                         maps: dict[str, Volume] | None = None, *, atlas=None, progress=None) -> pd.DataFrame:
    """Deep features per deep-grey ROI: one row per ROI (``roi``, ``feature_weight``,
    ``<map>_mean`` per map, ``f000 ...``); the map regressions are in
    ``df.attrs["regression"]`` (list of dicts).  See :func:`compute_roi_features`."""
    res = compute_roi_features(t1, model_dir, rois, maps, atlas=atlas, progress=progress)
    df = res.features.copy()
    df.attrs["regression"] = res.regression.to_dict(orient="records")
    df.attrs["model_id"] = res.model_id
    return df


def compute_roi_features(t1: Volume, model_dir: str | os.PathLike, rois=None,
                         maps: dict[str, Volume] | None = None, *, atlas=None, progress=None) -> FeatureResult:
    """Deep features per deep-grey ROI (+ map means and map regressions); see module docstring."""
    validate_scalar_volume(t1, "T1")
    lm = load_model(model_dir)
    labels, names, _ = resolve_rois(t1, rois, atlas, dict(lm.card, _model_dir=str(lm.model_dir)), progress)
    if labels.shape != t1.shape or not np.allclose(labels.affine, t1.affine, atol=1e-3):
        raise InputError("ROI labels are on another grid than the T1")
    maps = dict(maps or {})
    on_grid = {}
    for name, m in maps.items():
        validate_scalar_volume(m, f"map {name}", allow_constant=True)
        on_grid[name] = m if m.same_grid(t1) else resample_to_grid(m, t1, interpolation="linear")
    by_name = {v: k for k, v in names.items()}
    rows, cells = [], []
    for struct in anatomy.DEEP_GREY_STRUCTURES:
        pair = tuple(f"{struct}_{s}" for s in ("left", "right"))
        present = [n for n in pair if n in by_name and np.any(labels.array == by_name[n])]
        if not present:
            continue
        stack = extract_slices(t1, labels, names, lm.spec, roi_names=tuple(present))
        act = _activations(lm, stack.images)                       # (n, C, h, w)
        grid = act.shape[2:]
        lab_slices = _sample_on_slices(labels.with_array(labels.array.astype(np.float32)), stack)
        map_slices = {k: _sample_on_slices(v, stack) for k, v in on_grid.items()}
        for roi in present:
            value = by_name[roi]
            wsum, fsum = 0.0, np.zeros(act.shape[1])
            for s in range(act.shape[0]):
                frac = _block_mean(np.rint(lab_slices[s]) == value, grid)
                wsum += frac.sum()
                fsum += (act[s] * frac[None]).sum(axis=(1, 2))
                mcell = {k: _block_mean(v[s], grid) for k, v in map_slices.items()}
                for r, c in zip(*np.nonzero(frac >= 0.5)):
                    cells.append({"roi": roi, "slice": s, "row": int(r), "col": int(c),
                                  "features": act[s, :, r, c].copy(),
                                  **{f"{k}_cell_mean": float(mcell[k][r, c]) for k in mcell}})
            row = {"roi": roi, "feature_weight": float(wsum)}
            mask = labels.array == value
            for k, v in on_grid.items():
                row[f"{k}_mean"] = float(np.mean(v.array[mask]))
            feats = fsum / wsum if wsum > 0 else np.full(act.shape[1], np.nan)
            row.update({f"f{i:03d}": float(f) for i, f in enumerate(feats)})
            rows.append(row)
    if not rows:
        raise InputError("ROI labels: none of the deep grey-matter structures is present")
    feats = pd.DataFrame(rows)
    reg = []
    if maps and cells:
        x = np.stack([c["features"] for c in cells])
        groups = np.array([c["roi"] for c in cells])
        for k in on_grid:
            y = np.array([c[f"{k}_cell_mean"] for c in cells])
            reg.append({"map": k, **cv_regression(x, y, groups)})
    cell_df = pd.DataFrame([{kk: vv for kk, vv in c.items() if kk != "features"} for c in cells])
    return FeatureResult(feats, pd.DataFrame(reg), cell_df, lm.model_id)


def write_feature_outputs(result: FeatureResult, out_dir: str | os.PathLike) -> Path:
    """``roi_features.csv`` (+ ``map_regression.csv/.json`` when maps were given)."""
    with staged_output(out_dir) as stage:
        result.features.to_csv(stage / "roi_features.csv", index=False)
        if len(result.regression):
            result.regression.to_csv(stage / "map_regression.csv", index=False)
            (stage / "map_regression.json").write_text(json.dumps(
                {"model_id": result.model_id, "regressions": json.loads(result.regression.to_json(orient="records"))},
                indent=2))
    return Path(out_dir)
