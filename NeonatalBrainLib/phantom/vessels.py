"""Venous tree of the phantom: analytic tubes (centreline + constant diameter) in the brain frame.

Regions (``anatomy.VESSEL_REGIONS``):

* ``dmv``: deep medullary veins.  Each starts on the superolateral wall of the
  lateral ventricle (frontal horn, body, atrium), runs outward through the
  periventricular white matter roughly perpendicular to the wall (a radial fan),
  gently curved (a quadratic bend plus a small sinusoidal wiggle growing along the
  vein; tortuosity ~1.01-1.1), and stops
  ``end_depth`` mm below the cortical surface.  DMVs keep a minimum surface-to-
  surface separation from every other vessel (``MIN_SEPARATION_MM``).
* ``thalamic``: thalamostriate vein in the caudothalamic groove, running forward
  to the foramen of Monro.
* ``anterior_caudate``: veins over the caudate head joining the thalamostriate
  vein near the foramen.
* ``internal_cerebral``: the paired paramedian internal cerebral veins above the
  third ventricle (side "midline").
* ``other``: vein of Galen + straight sinus and the superior sagittal sinus.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from .. import centerline
from .anatomy_model import BrainModel, _smooth_curve

#: Minimum gap (mm) between the walls of a DMV and of any other vessel.
MIN_SEPARATION_MM = 0.8
#: Spacing (mm) of the exact centreline written to vessels.json.
CENTRELINE_STEP_MM = 0.2


def _vessel(region: str, side: str, diameter_mm: float, points_b: np.ndarray) -> dict:
    pts = centerline.resample_polyline(points_b, CENTRELINE_STEP_MM)
    return {"region": region, "side": side, "diameter_mm": float(diameter_mm), "points_b": pts}


def _major_veins(model: BrainModel, rng: np.random.Generator) -> list[dict]:
    s = model.s
    ds = model.preset.vein_diameter_scale
    out = []
    for sign, side in ((-1.0, "left"), (1.0, "right")):
        def pts(ctrl):
            c = np.array(ctrl, float) * s
            c[:, 0] *= sign
            return _smooth_curve(c, 0.2)
        jitter = rng.uniform(-0.6, 0.6, 3)
        # thalamostriate: caudothalamic groove (lateral floor of the ventricle body) -> foramen of Monro
        tsv = pts([[16.0 + jitter[0], -19.0, 10.0], [13.5, -10.0, 10.6 + jitter[1] * 0.3],
                   [10.5, -1.0, 10.2], [6.0, 3.5, 9.2], [3.2, 3.0, 8.3]])
        out.append(_vessel("thalamic", side, rng.uniform(1.2, 1.6) * ds, tsv))
        # anterior caudate veins over the caudate head
        n_acv = 2 if rng.random() < 0.5 else 1
        for k in range(n_acv):
            y0 = 14.5 - 4.5 * k + jitter[2]
            acv = pts([[12.0, y0, 11.5 - k], [10.0, y0 - 4.0, 11.0], [7.6, 5.0 - 0.5 * k, 10.0]])
            out.append(_vessel("anterior_caudate", side, rng.uniform(0.7, 1.0) * ds, acv))
        # internal cerebral vein: paramedian above the third ventricle
        icv = pts([[2.6, 3.0, 8.0], [2.3, -6.0, 9.5], [2.0, -16.0, 10.0], [1.8, -24.0, 8.5]])
        out.append(_vessel("internal_cerebral", "midline", rng.uniform(1.5, 1.9) * ds, icv))
    # vein of Galen and straight sinus
    galen = _smooth_curve(np.array([[0, -26.5, 8.0], [0, -31.0, 9.0], [0, -38.0, 3.0], [0, -50.0, -8.0]]) * s, 0.2)
    out.append(_vessel("other", "midline", 2.6 * ds, galen))
    # superior sagittal sinus: midline, over the convexity in the extracerebral space
    a, b, c = model.half_axes
    ang = np.linspace(np.deg2rad(-20), np.deg2rad(200), 60)
    rr = 1.0 + (model.preset.extracerebral_csf_mm + 1.0) / c
    sss = np.column_stack([np.zeros_like(ang), b * rr * np.cos(ang) * 0.98, c * rr * np.sin(ang)])
    sss = sss[sss[:, 2] > -0.2 * c]
    out.append(_vessel("other", "midline", 3.5 * ds, sss))
    return out


def _dmv_candidates(model: BrainModel, rng: np.random.Generator, side: str, n: int):
    sign = -1.0 if side == "left" else 1.0
    tube = model.ventricle[side]
    m = len(tube.points)
    lo, hi = int(0.06 * m), int(0.72 * m)   # frontal horn .. atrium (not the temporal horn)
    dmin, dmax = model.preset.dmv_diameter_mm
    fan_centre = np.array([sign * 8.0, -4.0, 10.0]) * model.s
    for _ in range(n):
        i = int(rng.integers(lo, hi))
        phi = np.deg2rad(rng.uniform(-10.0, 55.0))   # angle above the lateral direction
        lat, ver, tan = tube.lateral[i], tube.vertical[i], tube.tangent[i]
        if ver[2] < 0:
            ver = -ver
        start = tube.points[i] + 0.9 * (tube.half_w[i] * np.cos(phi) * lat + tube.half_h[i] * np.sin(phi) * ver)
        radial = start - fan_centre          # fan: away from the ventricle's centre in the axial plane
        radial[2] = 0.0
        radial /= max(np.linalg.norm(radial), 1e-6)
        direction = (np.cos(phi) * lat + np.sin(phi) * ver * 1.2 + 0.7 * np.cos(phi) * radial
                     + rng.uniform(-0.25, 0.25) * tan)
        direction /= np.linalg.norm(direction)
        bend_dir = np.cross(direction, rng.normal(size=3))
        bend_dir /= np.linalg.norm(bend_dir)
        length = rng.uniform(18.0, 34.0) * float(np.mean(model.s))
        u = np.linspace(0.0, 1.0, int(length / 0.1) + 1)
        bend = rng.uniform(0.15, 0.45) * length       # sagitta of the bend: a quarter of this
        wiggle_amp = rng.uniform(0.2, 0.8)
        wiggle_k = 2 * np.pi / rng.uniform(5.0, 10.0)
        wig_dir = np.cross(direction, bend_dir)
        pts = (start + np.outer(u * length, direction) + np.outer(bend * u ** 2, bend_dir)
               + np.outer(wiggle_amp * np.sin(wiggle_k * u * length) * u, wig_dir))
        # stop before the cortex (end_depth below the envelope surface) and inside the brain
        depth = model.envelope_depth(pts)
        end_depth = model.preset.cortex_thickness_mm + rng.uniform(3.0, 7.0)
        stop = np.flatnonzero(depth < end_depth)
        k = int(stop[0]) if stop.size else len(pts)
        if k * 0.1 < 6.0:
            continue
        diameter = float(np.exp(rng.uniform(np.log(dmin), np.log(dmax))))
        yield _vessel("dmv", side, diameter, pts[:k])


def build_vessels(model: BrainModel, rng: np.random.Generator) -> list[dict]:
    """All vessels of one subject (brain-frame centrelines ``points_b``)."""
    vessels = _major_veins(model, rng)
    pts = np.vstack([v["points_b"] for v in vessels])
    rad = np.concatenate([np.full(len(v["points_b"]), v["diameter_mm"] / 2) for v in vessels])
    trees = [(cKDTree(pts), rad)]
    rmax_all = rad.max()
    lo_n, hi_n = model.preset.dmv_per_side
    for side in ("left", "right"):
        target = int(rng.integers(lo_n, hi_n + 1))
        accepted = 0
        for cand in _dmv_candidates(model, rng, side, target * 12):
            if accepted >= target:
                break
            p = cand["points_b"]
            r = cand["diameter_mm"] / 2
            if model.ventricle[side].inside(p[5:]).any():
                continue
            ok = True
            for tree, rads in trees:
                d, idx = tree.query(p, distance_upper_bound=r + rmax_all + MIN_SEPARATION_MM + 0.3)
                fin = np.isfinite(d)
                if np.any(d[fin] < r + rads[idx[fin]] + MIN_SEPARATION_MM):
                    ok = False
                    break
            if not ok:
                continue
            vessels.append(cand)
            trees.append((cKDTree(p), np.full(len(p), r)))
            accepted += 1
    return vessels
