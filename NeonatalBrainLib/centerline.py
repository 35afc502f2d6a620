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
* ``describe`` with ``smoothing_mm`` > 0 (the vessel measurements): tortuosity and
  curvature of the *shape line*, the centreline resampled and smoothed with a Gaussian
  of ``smoothing_mm`` along the arc (end points fixed); the length stays that of the
  centreline.  Voxel-scale wiggle left on a traced centreline lengthens its arc: on the
  phantoms it read near-straight DMVs (true tortuosity < 1.03) 0.022 too tortuous.
  The smoothing also shortens a real bend of radius R by about sigma^2 / (2 R^2)
  (0.8 % for sigma 1 mm, R 8 mm), so strongly curved veins read slightly straighter.
* ``mean_curvature_per_mm``: the arc-length weighted mean of the unsigned
  curvature ``kappa = |r' x r''| / |r'|^3`` (1/mm) along the centreline after
  resampling it at a uniform arc-length step and (optionally) smoothing it with a
  Gaussian of ``smoothing_mm`` along the arc.  A circle of radius R has
  kappa = 1/R; a straight line 0.

Implementation note: the functions are called thousands of times per scan on short
polylines, so each is one compiled (numba) kernel on the validated points.  Every step
performs the floating-point operations of numpy's generic wrappers (``np.linalg.norm``
of the segments, ``np.sum``'s pairwise summation, ``np.cumsum``, ``np.linspace``,
``np.interp``, ``gaussian_filter1d``'s symmetric correlation, ``np.gradient``,
``np.cross``), so lengths, resampled and smoothed points are bit-identical to them; the
chord (a sequential sum of squares where ``np.linalg.norm`` calls the BLAS dot) and the
cube in the curvature (libm ``pow`` where numpy may use its SIMD power) differ from
those by at most a few units in the last place and do not depend on the CPU's BLAS or
SIMD kernels (checked in ``Testing/test_vessel_measure_equivalence.py``).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numba import njit

#: Default resampling step (mm) for centrelines written to disk.
DEFAULT_STEP_MM = 0.25

_GAUSS_TRUNCATE = 4.0          # scipy.ndimage.gaussian_filter1d's default truncation


def _as_points(points) -> np.ndarray:
    p = np.ascontiguousarray(points, dtype=float)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"centreline points must be an (N, 3) array, got shape {p.shape}")
    return p


@njit(cache=True)
def _block_sum(a: np.ndarray, lo: int, n: int) -> float:
    """numpy's pairwise summation of ``a[lo:lo + n]`` for ``n`` <= 128: sequential below 8
    values, otherwise eight running sums combined pairwise, then the remainder."""
    if n < 8:
        res = -0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    m = n - n % 8
    while i < m:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@njit(cache=True)
def _pairwise_sum(a: np.ndarray) -> float:
    """``np.sum(a)`` of a 1-D float64 array, by numpy's pairwise summation: blocks of up to 128
    values (:func:`_block_sum`), larger runs split in two at a multiple of 8 below the middle
    and the halves' sums added (the recursion unrolled on an explicit stack)."""
    n = a.size
    if n == 0:
        return 0.0
    if n <= 128:
        return _block_sum(a, 0, n)
    depth = 64
    f_lo = np.empty(depth, np.int64)
    f_n = np.empty(depth, np.int64)
    f_stage = np.zeros(depth, np.int64)
    f_left = np.empty(depth)
    f_lo[0], f_n[0], f_stage[0] = 0, n, 0
    top = 1
    result = 0.0
    while top > 0:
        f = top - 1
        if f_n[f] > 128:        # a run to split: push its left half (stage 0), then its right (1)
            half = f_n[f] // 2
            half -= half % 8
            if f_stage[f] == 0:
                f_lo[top], f_n[top] = f_lo[f], half
            else:
                f_lo[top], f_n[top] = f_lo[f] + half, f_n[f] - half
            f_stage[f] += 1
            f_stage[top] = 0
            top += 1
            continue
        # a block (a frame with two halves is finished, and popped, when its right half is)
        value = _block_sum(a, f_lo[f], f_n[f])
        top -= 1
        while top > 0:
            parent = top - 1
            if f_stage[parent] == 1:        # the left half: keep it, then sum the right one
                f_left[parent] = value
                break
            value = f_left[parent] + value  # the right half: the parent is done
            top -= 1
        if top == 0:
            result = value
    return result


@njit(cache=True)
def _norm3(d0: float, d1: float, d2: float) -> float:
    return math.sqrt((d0 * d0 + d1 * d1) + d2 * d2)


@njit(cache=True)
def _segments(p: np.ndarray) -> np.ndarray:
    """Segment lengths of a validated (N, 3) array (``np.linalg.norm(np.diff(p, axis=0), axis=1)``)."""
    out = np.empty(max(p.shape[0] - 1, 0))
    for i in range(p.shape[0] - 1):
        out[i] = _norm3(p[i + 1, 0] - p[i, 0], p[i + 1, 1] - p[i, 1], p[i + 1, 2] - p[i, 2])
    return out


@njit(cache=True)
def _chord(p: np.ndarray) -> float:
    n = p.shape[0] - 1
    return _norm3(p[n, 0] - p[0, 0], p[n, 1] - p[0, 1], p[n, 2] - p[0, 2])


@njit(cache=True)
def _cumulative(seg: np.ndarray) -> np.ndarray:
    """``[0, cumsum(seg)]``."""
    s = np.empty(seg.size + 1)
    s[0] = 0.0
    for i in range(seg.size):
        s[i + 1] = s[i] + seg[i]
    return s


def segment_lengths_mm(points) -> np.ndarray:
    return _segments(_as_points(points))


def cumulative_arc_mm(points) -> np.ndarray:
    """Arc length (mm) from the first point to each point: ``[0, s_1, ..., length]``."""
    return _cumulative(_segments(_as_points(points)))


def arc_length_mm(points) -> float:
    """Polyline length in mm."""
    seg = _segments(_as_points(points))
    return float(_pairwise_sum(seg))


def chord_length_mm(points) -> float:
    p = _as_points(points)
    return float(_chord(p)) if len(p) else float("nan")


@njit(cache=True)
def _tortuosity(p: np.ndarray, arc: float) -> float:
    if p.shape[0] < 2:
        return np.nan
    chord = _chord(p)
    if chord <= 1e-9:
        return np.nan
    return max(1.0, arc / chord)


def tortuosity(points) -> float:
    """Arc length / chord length (>= 1).  NaN for fewer than 2 points or a closed loop."""
    p = _as_points(points)
    seg = _segments(p)
    return float(_tortuosity(p, _pairwise_sum(seg)))


@njit(cache=True)
def _interp_column(t: np.ndarray, s: np.ndarray, p: np.ndarray, col: int, out: np.ndarray) -> None:
    """``out[:, col] = np.interp(t, s, p[:, col])`` for increasing ``t`` within ``[s[0], s[-1]]``
    and strictly increasing ``s`` (numpy's formula and its guards)."""
    m = s.size
    j = 0
    for i in range(t.size):
        x = t[i]
        if x > s[m - 1]:
            out[i, col] = p[m - 1, col]
            continue
        if x < s[0]:
            out[i, col] = p[0, col]
            continue
        while j + 1 < m and s[j + 1] <= x:
            j += 1
        if j == m - 1 or s[j] == x:
            out[i, col] = p[j, col]
            continue
        slope = (p[j + 1, col] - p[j, col]) / (s[j + 1] - s[j])
        v = slope * (x - s[j]) + p[j, col]
        if math.isnan(v):
            v = slope * (x - s[j + 1]) + p[j + 1, col]
            if math.isnan(v) and p[j, col] == p[j + 1, col]:
                v = p[j, col]
        out[i, col] = v


@njit(cache=True)
def _resample(p: np.ndarray, step_mm: float) -> np.ndarray:
    """:func:`resample_polyline` of a validated array: zero-length segments dropped, then
    ``np.interp`` of each coordinate at ``np.linspace(0, length, n)``."""
    n_in = p.shape[0]
    if n_in < 2:
        return p.copy()
    seg = _segments(p)
    n_kept = 1
    for i in range(n_in - 1):
        if seg[i] > 1e-12:
            n_kept += 1
    q = np.empty((n_kept, 3))
    kept_seg = np.empty(n_kept - 1)
    for d in range(3):     # rows copied element by element (a row assignment compiles numba's shape-error path)
        q[0, d] = p[0, d]
    k = 1
    for i in range(n_in - 1):
        if seg[i] > 1e-12:
            for d in range(3):
                q[k, d] = p[i + 1, d]
            kept_seg[k - 1] = seg[i]
            k += 1
    if n_kept < 2:
        return q[:1].copy()
    s = _cumulative(kept_seg)
    total = s[n_kept - 1]
    n = max(2, int(math.ceil(total / step_mm)) + 1)
    step = total / (n - 1)
    t = np.empty(n)
    for i in range(n):
        t[i] = float(i) * step
    t[n - 1] = total
    out = np.empty((n, 3))
    for d in range(3):
        _interp_column(t, s, q, d, out)
    return out


def resample_polyline(points, step_mm: float = DEFAULT_STEP_MM) -> np.ndarray:
    """Points at uniform arc-length spacing <= ``step_mm`` (end points kept)."""
    return _resample(_as_points(points), float(step_mm))


@lru_cache(maxsize=64)
def _gauss_weights(sigma: float) -> np.ndarray:
    # the kernel of scipy.ndimage.gaussian_filter1d (order 0, truncate 4; symmetric)
    radius = int(_GAUSS_TRUNCATE * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x ** 2)
    phi = phi / phi.sum()
    phi.flags.writeable = False
    return phi


@njit(cache=True)
def _smooth_kernel(p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``correlate1d(p, w, axis=0, mode="nearest")`` for a symmetric ``w`` of odd size, as
    scipy sums it (centre, then the pairs from the outermost in), end points kept."""
    n = p.shape[0]
    r = (w.size - 1) // 2
    out = np.empty((n, 3))
    for d in range(3):
        for i in range(n):
            acc = p[i, d] * w[r]
            for k in range(-r, 0):
                lo = max(i + k, 0)
                hi = min(i - k, n - 1)
                acc += (p[lo, d] + p[hi, d]) * w[r + k]
            out[i, d] = acc
    for d in range(3):
        out[0, d] = p[0, d]
        out[n - 1, d] = p[n - 1, d]
    return out


def _smooth(p: np.ndarray, smoothing_mm: float, step_mm: float) -> np.ndarray:
    """:func:`smooth_polyline` of a validated array."""
    if smoothing_mm <= 0 or len(p) < 3:
        return p.copy()
    return _smooth_kernel(p, _gauss_weights(smoothing_mm / step_mm))


def smooth_polyline(points, smoothing_mm: float, step_mm: float) -> np.ndarray:
    """Gaussian smoothing along the arc (sigma in mm) of a uniformly resampled polyline.

    End points are kept fixed (the chord, hence tortuosity, is not shortened).
    """
    return _smooth(_as_points(points), smoothing_mm, step_mm)


@njit(cache=True)
def _gradient(f: np.ndarray, h: float) -> np.ndarray:
    """``np.gradient(f, h, axis=0, edge_order=2)`` (uniform spacing, >= 3 rows)."""
    n = f.shape[0]
    out = np.empty_like(f)
    for d in range(3):
        for i in range(1, n - 1):
            out[i, d] = (f[i + 1, d] - f[i - 1, d]) / (2. * h)
        out[0, d] = ((-1.5 / h) * f[0, d] + (2. / h) * f[1, d]) + (-0.5 / h) * f[2, d]
        out[n - 1, d] = ((0.5 / h) * f[n - 3, d] + (-2. / h) * f[n - 2, d]) + (1.5 / h) * f[n - 1, d]
    return out


@njit(cache=True)
def _kappa(p: np.ndarray, step_mm: float) -> np.ndarray:
    """Unsigned curvature ``|r' x r''| / |r'|^3`` (1/mm) at each point of a uniformly
    resampled polyline (>= 3 points); 0 where ``|r'|`` <= 1e-12."""
    d1 = _gradient(p, step_mm)
    d2 = _gradient(d1, step_mm)
    out = np.empty(p.shape[0])
    for i in range(p.shape[0]):
        a0, a1, a2 = d1[i, 0], d1[i, 1], d1[i, 2]
        b0, b1, b2 = d2[i, 0], d2[i, 1], d2[i, 2]
        speed = _norm3(a0, a1, a2)
        cross = _norm3(a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0)
        out[i] = cross / math.pow(max(speed, 1e-12), 3.0) if speed > 1e-12 else 0.0
    return out


@njit(cache=True)
def _arc_mean(kappa: np.ndarray) -> float:
    """Arc-length weighted mean of values at uniformly resampled points: every sample carries
    the same arc length except the two end halves (``np.sum(w * kappa) / np.sum(w)``)."""
    n = kappa.size
    if n < 3:
        return 0.0
    weights = np.ones(n)
    weights[0] = 0.5
    weights[n - 1] = 0.5
    weighted = np.empty(n)
    for i in range(n):
        weighted[i] = weights[i] * kappa[i]
    return _pairwise_sum(weighted) / _pairwise_sum(weights)


def _shape_line(p: np.ndarray, step_mm: float, smoothing_mm: float) -> np.ndarray:
    """``p`` resampled at ``step_mm`` and smoothed along the arc (sigma ``smoothing_mm``; end
    points fixed, so the chord is that of ``p``)."""
    q = _resample(p, float(step_mm))
    if len(q) < 3:
        return q
    return _smooth(q, smoothing_mm, step_mm)


def curvature_per_mm(points, step_mm: float = DEFAULT_STEP_MM, smoothing_mm: float = 0.0) -> np.ndarray:
    """Unsigned curvature (1/mm) at each point of the resampled (and smoothed) polyline."""
    q = _shape_line(_as_points(points), step_mm, smoothing_mm)
    return _kappa(q, float(step_mm)) if len(q) >= 3 else np.zeros(len(q))


def mean_curvature_per_mm(points, step_mm: float = DEFAULT_STEP_MM, smoothing_mm: float = 0.0) -> float:
    """Arc-length weighted mean unsigned curvature (1/mm); NaN for fewer than 2 points."""
    return describe(points, step_mm, smoothing_mm)["curvature_per_mm"]


_NO_WEIGHTS = np.ones(1)


@njit(cache=True)
def _describe(p: np.ndarray, step_mm: float, weights: np.ndarray, smoothed: bool) -> tuple[float, float, float]:
    """(length, tortuosity, mean curvature) of :func:`describe`; ``weights``: the smoothing
    kernel when ``smoothed``."""
    seg = _segments(p)
    arc = _pairwise_sum(seg)
    if p.shape[0] < 2:
        return arc, np.nan, np.nan
    if arc <= 1e-9:
        return arc, _tortuosity(p, arc), np.nan
    q = _resample(p, step_mm)
    if q.shape[0] < 3:
        return arc, _tortuosity(p, arc), 0.0
    if smoothed:
        q = _smooth_kernel(q, weights)
    curvature = _arc_mean(_kappa(q, step_mm))
    if not smoothed:
        return arc, _tortuosity(p, arc), curvature
    shape_seg = _segments(q)
    return arc, _tortuosity(q, _pairwise_sum(shape_seg)), curvature


def describe(points, step_mm: float = DEFAULT_STEP_MM, smoothing_mm: float = 0.0) -> dict:
    """length_mm, tortuosity and curvature_per_mm of one centreline, as a dict.

    ``length_mm`` is the arc length of the given polyline.  With ``smoothing_mm`` > 0 the
    tortuosity and the curvature are those of the shape line: the polyline resampled at
    ``step_mm`` and smoothed with a Gaussian of ``smoothing_mm`` along the arc (end points,
    hence the chord, fixed), which removes voxel-scale wiggle that lengthens the arc of a
    traced centreline; with 0 both are of the given polyline (the phantom's ground truth).
    """
    p = _as_points(points)
    smoothed = smoothing_mm > 0
    weights = _gauss_weights(smoothing_mm / step_mm) if smoothed else _NO_WEIGHTS
    length, tort, curvature = _describe(p, float(step_mm), weights, smoothed)
    return {"length_mm": float(length), "tortuosity": float(tort), "curvature_per_mm": float(curvature)}
