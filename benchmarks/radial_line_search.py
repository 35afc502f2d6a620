"""What a whole-vein search adds to the engine: straight radial lines from the ventricle wall.

Usage::

    .venv/bin/python benchmarks/radial_line_search.py --presets preterm oblique_low_snr --seeds 1 15 \
        [--generator independent|project] [--cache DIR] [--out lines.csv]

Round 24 (``vessel_detectability.py``) bounded the sensitivity any detector could reach by
``Phi(z - 4.5)``, ``z`` a matched filter that knows each vein's place and shape.  This script
runs a search that knows neither and integrates whole candidate veins, to see how much of that
bound a detector that must find the veins gets.  A DMV runs out from the lateral ventricle's
wall through the white matter, so the candidates are straight lines:

* evidence ``E``: the normalised image (``pipeline._prepare``) smoothed in-plane by a Gaussian of
  ``smoothing_mm``, subtracted from its median over a ``background_mm`` box (dark is positive),
  divided by its robust SD (1.4826 x MAD) in the search region (brain, not ventricle, within
  17 mm of the ventricles, deeper than 2 mm);
* starts: one voxel per 1 mm cell of the white matter 0.5-1.5 mm from the ventricles;
  directions: the 600 points of a Fibonacci sphere within ``cone_deg`` of the outward gradient
  of the ventricle distance; lengths 6, 9, 12 and 16 mm, sampled every 0.5 mm;
* ranking: the mean of ``E`` along the line times sqrt(samples); lines are taken greedily in
  that order, skipping a line with more than 30 % of its voxels within 2 voxels of a line
  already taken, up to ``max_lines``;
* ``lateral_z`` of each line taken: its mean ``E`` against the same line moved 1.5, 2.5 and
  3.5 mm sideways in 8 directions, ``(on - mean) / SD`` of the 24 copies.  A dark band wider
  than a vein, an edge or a noisy region scores low; a thin dark line high.

Per case and ``lateral_z`` threshold: the lines at or above it, those matching a true DMV
(``evaluation.match_vessels``: more than half of the line within ``max(1 mm, diameter)``), and
the true DMVs they match that the fully automatic engine misses (``new``); per case, the true
DMVs that any line taken matches (whatever its ``lateral_z``).  ``--out`` writes one row per
line taken.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))

LENGTHS_MM = (6.0, 9.0, 12.0, 16.0)
STEP_MM = 0.5
THRESHOLDS = (5.0, 5.5, 6.0)


def fibonacci_sphere(n: int) -> np.ndarray:
    """``n`` unit vectors spread evenly over the sphere (rows)."""
    i = np.arange(n) + 0.5
    polar = np.arccos(1.0 - 2.0 * i / n)
    azimuth = np.pi * (1.0 + 5.0 ** 0.5) * i
    return np.stack([np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)], axis=1)


def evidence(norm: np.ndarray, spacing, region: np.ndarray, *, smoothing_mm: float = 0.35,
             background_mm: float = 3.0) -> np.ndarray:
    """Darkness below the local median in units of its robust SD over ``region`` (see the module docstring)."""
    spacing = np.asarray(spacing, float)
    sigma = [smoothing_mm / s if s < 1.0 else 0.0 for s in spacing]    # in-plane only for thick slices
    smoothed = ndimage.gaussian_filter(np.asarray(norm, np.float32), sigma)
    size = [max(1, int(2 * round(background_mm / 2 / s) + 1)) for s in spacing]
    e = ndimage.median_filter(smoothed, size=size) - smoothed
    values = e[region]
    sd = 1.4826 * float(np.median(np.abs(values - np.median(values))))
    return (e / sd).astype(np.float32)


def _sample(image: np.ndarray, points_vox: np.ndarray) -> np.ndarray:
    """Trilinear samples of ``image`` at ``points_vox`` (..., 3)."""
    flat = points_vox.reshape(-1, 3).T
    return ndimage.map_coordinates(image, flat, order=1, mode="nearest").reshape(points_vox.shape[:-1])


def _perpendicular(direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.cross(direction, [0.0, 0.0, 1.0])
    if np.linalg.norm(a) < 1e-3:
        a = np.cross(direction, [1.0, 0.0, 0.0])
    a /= np.linalg.norm(a)
    return a, np.cross(direction, a)


def lateral_z(e: np.ndarray, points_vox: np.ndarray, direction_mm: np.ndarray, spacing) -> float:
    """The line's mean ``e`` against 24 copies moved 1.5 / 2.5 / 3.5 mm sideways: (on - mean) / SD."""
    spacing = np.asarray(spacing, float)
    a, b = _perpendicular(direction_mm)
    copies = []
    for r in (1.5, 2.5, 3.5):
        for k in range(8):
            angle = 2.0 * np.pi * k / 8
            shift = (np.cos(angle) * a + np.sin(angle) * b) * r / spacing
            copies.append(_sample(e, points_vox + shift).mean())
    copies = np.asarray(copies)
    return float((_sample(e, points_vox).mean() - copies.mean()) / copies.std())


def radial_lines(norm: np.ndarray, spacing, brain: np.ndarray, ventricles: np.ndarray, vent_dist_mm: np.ndarray,
                 depth_mm: np.ndarray, *, cone_deg: float = 40.0, max_lines: int = 400) -> list[dict]:
    """Lines taken by the search (module docstring): dicts of ``points_vox`` (n, 3), ``length_mm``,
    ``score`` and ``lateral_z``, in the order taken."""
    spacing = np.asarray(spacing, float)
    region = brain & ~ventricles & (vent_dist_mm <= 17.0) & (depth_mm > 2.0)
    e = evidence(norm, spacing, region)
    e[~region] = 0.0
    wall = np.argwhere(region & (vent_dist_mm >= 0.5) & (vent_dist_mm <= 1.5))
    _, first = np.unique(np.floor(wall * spacing).astype(int), axis=0, return_index=True)
    starts = wall[first].astype(float)
    gradient = np.stack(np.gradient(vent_dist_mm.astype(np.float32), *spacing), axis=-1)
    outward = gradient[tuple(starts.astype(int).T)]
    outward /= np.linalg.norm(outward, axis=1, keepdims=True) + 1e-9
    sphere = fibonacci_sphere(600)
    start_idx, dir_idx = np.nonzero(outward @ sphere.T >= np.cos(np.deg2rad(cone_deg)))
    t = np.arange(0.0, max(LENGTHS_MM) + 1e-6, STEP_MM)
    points = starts[start_idx][:, None, :] + t[None, :, None] * (sphere[dir_idx] / spacing)[:, None, :]
    running = np.cumsum(_sample(e, points), axis=1)
    candidates = []
    for length in LENGTHS_MM:
        n = int(round(length / STEP_MM)) + 1
        score = running[:, n - 1] / n * np.sqrt(n)
        candidates.append(np.stack([np.arange(len(start_idx)), np.full(len(start_idx), n), score], axis=1))
    candidates = np.vstack(candidates)
    taken: list[dict] = []
    near = np.zeros(e.shape, bool)
    upper = np.array(e.shape) - 1
    for row, n, score in candidates[np.argsort(-candidates[:, 2])]:
        p = points[int(row), :int(n)]
        voxels = tuple(np.clip(np.round(p).astype(int), 0, upper).T)
        if near[voxels].mean() > 0.3:
            continue
        # the line's voxels dilated twice (6-neighbours), in its box padded by the 2 voxels it can grow
        lo = np.maximum(np.min(voxels, axis=1) - 2, 0)
        hi = np.minimum(np.max(voxels, axis=1) + 3, e.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        line = np.zeros(hi - lo, bool)
        line[tuple(v - a for v, a in zip(voxels, lo))] = True
        near[box] |= ndimage.binary_dilation(line, iterations=2)
        direction = sphere[dir_idx[int(row)]]
        taken.append({"points_vox": p, "length_mm": (n - 1) * STEP_MM, "score": float(score),
                      "lateral_z": lateral_z(e, p, direction, spacing)})
        if len(taken) >= max_lines:
            break
    return taken


def case_lines(folder: Path) -> tuple[pd.DataFrame, int, set[int]]:
    """(one row per line taken, with the true DMV it matches or 0; number of true DMVs; true DMVs the
    engine finds)."""
    from NeonatalBrainLib.imageio import load_volume
    from NeonatalVesselsLib.evaluation import load_truth, match_vessels
    from NeonatalVesselsLib.params import checked_params
    from NeonatalVesselsLib.pipeline import _prepare, _reorient
    from NeonatalBrainLib.progress import as_progress
    from vessel_detectability import engine_detections

    swi, _, _ = _reorient(load_volume(folder / "swi.nii.gz"), {})
    ctx = _prepare(swi, None, None, None, checked_params(None), as_progress(None))
    lines = radial_lines(ctx.norm, swi.spacing_mm, ctx.brain, ctx.ventricles, ctx.vent_dist_mm, ctx.depth_mm)
    affine = swi.affine
    ras = {k + 1: line["points_vox"] @ affine[:3, :3].T + affine[:3, 3] for k, line in enumerate(lines)}
    true = [v for v in load_truth(folder)["vessels"] if v["region"] == "dmv"]
    matches = match_vessels(ras, true)
    df = pd.DataFrame({"line": list(ras), "length_mm": [x["length_mm"] for x in lines],
                       "score": [x["score"] for x in lines], "lateral_z": [x["lateral_z"] for x in lines],
                       "true_dmv": [matches[k][0] for k in ras]})
    return df, len(true), engine_detections(folder)


def main(argv=None) -> int:
    from eval_vessels import phantom_folder

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", nargs="+", default=["preterm", "oblique_low_snr", "term_1p5t"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 15])
    ap.add_argument("--generator", choices=("independent", "project"), default="independent")
    ap.add_argument("--cache", default="/tmp/neonatal_vessel_phantoms")
    ap.add_argument("--out", help="CSV of the lines taken")
    args = ap.parse_args(argv)
    tables, summary = [], []
    for preset in args.presets:
        for seed in args.seeds:
            t0 = time.perf_counter()
            df, n_true, found = case_lines(phantom_folder(preset, seed, Path(args.cache), args.generator))
            df.insert(0, "seed", seed)
            df.insert(0, "preset", preset)
            tables.append(df)
            for threshold in THRESHOLDS:
                kept = df[df.lateral_z >= threshold]
                on = kept[kept.true_dmv > 0]
                summary.append({"preset": preset, "seed": seed, "lateral_z_min": threshold, "lines": len(kept),
                                "on_dmv": len(on), "ppv": len(on) / len(kept) if len(kept) else float("nan"),
                                "true_dmvs": n_true, "engine_found": len(found),
                                "new": len(set(on.true_dmv) - found)})
            reached = set(df.true_dmv[df.true_dmv > 0])
            print(f"{preset} seed {seed}: {len(df)} lines reach {len(reached)} of {n_true} DMVs "
                  f"({len(reached - found)} the engine misses); the engine finds {len(found)} "
                  f"[{time.perf_counter() - t0:.0f} s]", flush=True)
    if args.out:
        pd.concat(tables, ignore_index=True).to_csv(args.out, index=False, float_format="%.4g")
    print(pd.DataFrame(summary).round(2).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
