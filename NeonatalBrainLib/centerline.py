"""Centreline geometry: the one definition of length, tortuosity and curvature.

Used by the phantom (ground truth) and by the vessel measurements, so truth and
measurement share exactly the same conventions.  Points are ``(N, 3)`` arrays in
RAS millimetres, ordered along the vessel.

Definitions
-----------
* ``arc_length_mm``: sum of the Euclidean lengths of the polyline segments.
* ``tortuosity``: distance metric ``arc length / chord length`` (chord = the
  straight distance between the two end points); 1 for a straight vessel,
  always >= 1.  Tools disagree here: some report ``arc/chord - 1`` (0 for a
  straight vessel) or a sum-of-angles metric; NeonatalBrain reports the ratio.
  Reference: Bullitt et al., IEEE TMI 22(9), 2003 ("distance metric").
* ``mean_curvature_per_mm``: the arc-length weighted mean of the unsigned
  curvature ``kappa = |r' x r''| / |r'|^3`` (1/mm) along the centreline after
  resampling it at a uniform arc-length step and (optionally) smoothing it with a
  Gaussian of ``smoothing_mm`` along the arc.  A circle of radius R has
  kappa = 1/R; a straight line 0.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

#: Default resampling step (mm) for centrelines written to disk.
DEFAULT_STEP_MM = 0.25


def _as_points(points) -> np.ndarray:
    p = np.asarray(points, dtype=float)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"centreline points must be an (N, 3) array, got shape {p.shape}")
    return p


def segment_lengths_mm(points) -> np.ndarray:
    p = _as_points(points)
    return np.linalg.norm(np.diff(p, axis=0), axis=1)


def arc_length_mm(points) -> float:
    """Polyline length in mm."""
    return float(segment_lengths_mm(points).sum())


def chord_length_mm(points) -> float:
    p = _as_points(points)
    return float(np.linalg.norm(p[-1] - p[0]))


def tortuosity(points) -> float:
    """Arc length / chord length (>= 1).  NaN for fewer than 2 points or a closed loop."""
    p = _as_points(points)
    if len(p) < 2:
        return float("nan")
    chord = chord_length_mm(p)
    if chord <= 1e-9:
        return float("nan")
    return max(1.0, arc_length_mm(p) / chord)


def resample_polyline(points, step_mm: float = DEFAULT_STEP_MM) -> np.ndarray:
    """Points at uniform arc-length spacing <= ``step_mm`` (end points kept)."""
    p = _as_points(points)
    if len(p) < 2:
        return p.copy()
    seg = segment_lengths_mm(p)
    keep = np.concatenate([[True], seg > 1e-12])
    p = p[keep]
    seg = seg[seg > 1e-12]
    if len(p) < 2:
        return p[:1].copy()
    s = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(2, int(np.ceil(s[-1] / step_mm)) + 1)
    t = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(t, s, p[:, d]) for d in range(3)], axis=1)


def smooth_polyline(points, smoothing_mm: float, step_mm: float) -> np.ndarray:
    """Gaussian smoothing along the arc (sigma in mm) of a uniformly resampled polyline.

    End points are kept fixed (the chord, hence tortuosity, is not shortened).
    """
    p = _as_points(points)
    if smoothing_mm <= 0 or len(p) < 3:
        return p.copy()
    sigma = smoothing_mm / step_mm
    out = gaussian_filter1d(p, sigma=sigma, axis=0, mode="nearest")
    out[0], out[-1] = p[0], p[-1]
    return out


def curvature_per_mm(points, step_mm: float = DEFAULT_STEP_MM, smoothing_mm: float = 0.0) -> np.ndarray:
    """Unsigned curvature (1/mm) at each point of the resampled (and smoothed) polyline."""
    p = resample_polyline(points, step_mm)
    if len(p) < 3:
        return np.zeros(len(p))
    p = smooth_polyline(p, smoothing_mm, step_mm)
    d1 = np.gradient(p, step_mm, axis=0, edge_order=2)
    d2 = np.gradient(d1, step_mm, axis=0, edge_order=2)
    speed = np.linalg.norm(d1, axis=1)
    cross = np.linalg.norm(np.cross(d1, d2), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = np.where(speed > 1e-12, cross / np.maximum(speed, 1e-12) ** 3, 0.0)
    return kappa


def mean_curvature_per_mm(points, step_mm: float = DEFAULT_STEP_MM, smoothing_mm: float = 0.0) -> float:
    """Arc-length weighted mean unsigned curvature (1/mm); NaN for fewer than 2 points."""
    p = _as_points(points)
    if len(p) < 2 or arc_length_mm(p) <= 1e-9:
        return float("nan")
    kappa = curvature_per_mm(p, step_mm, smoothing_mm)
    if len(kappa) < 3:
        return 0.0
    # Uniform resampling: every sample carries the same arc length except the two end halves.
    w = np.ones(len(kappa))
    w[0] = w[-1] = 0.5
    return float(np.sum(w * kappa) / np.sum(w))


def describe(points, step_mm: float = DEFAULT_STEP_MM, smoothing_mm: float = 0.0) -> dict:
    """length_mm, tortuosity and curvature_per_mm of one centreline, as a dict."""
    return {
        "length_mm": arc_length_mm(points),
        "tortuosity": tortuosity(points),
        "curvature_per_mm": mean_curvature_per_mm(points, step_mm, smoothing_mm),
    }
