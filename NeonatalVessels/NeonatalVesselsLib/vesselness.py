"""Multiscale dark-tube vesselness (Frangi et al., MICCAI 1998) with scales in millimetres.

Definition
----------
For each scale ``sigma_mm`` the image is smoothed with a separable Gaussian whose
standard deviation along voxel axis ``a`` is ``sqrt(sigma_mm^2 + (s_max^2 - s_a^2)/12) / s_a``
voxels (``s`` = voxel size in mm): the voxel's own box blur (variance ``s^2/12``)
plus the smoothing is then the same in every direction, in millimetres, whatever
the voxel size (thick slices otherwise flatten round veins into plates), then the Hessian
is taken by second-order central finite differences divided by the voxel
spacings (units intensity/mm^2) and normalised by the total variance
``sigma_mm**2 + s_max**2/12`` (Lindeberg's
gamma = 2 scale normalisation).  Because the grid axes are orthogonal (the
affine is a rotation times a scaling), the eigenvalues of this Hessian equal
those of the Hessian in RAS; the result does not depend on voxel order or
orientation.

With eigenvalues sorted ``|l1| <= |l2| <= |l3|``, a *dark* tube (a vein in SWI)
has ``l2, l3 > 0`` and the response is::

    V = (1 - exp(-Ra^2 / 2 alpha^2)) * exp(-Rb^2 / 2 beta^2) * (1 - exp(-S^2 / 2 c^2))
    Ra = |l2| / |l3|,  Rb = |l1| / sqrt(|l2 l3|),  S = sqrt(l1^2 + l2^2 + l3^2)

(0 where ``l2 <= 0`` or ``l3 <= 0``).

Thick slices (largest voxel size >= ``thick_slice_ratio`` x the smallest, e.g.
0.5 x 0.5 x 2 mm): a vein lying within one slice has no measurable curvature
across the slices (``l2 ~ 0``), so the tube-vs-plate term is dropped and the
response is ``V = exp(-Rb'^2 / 2 beta^2) (1 - exp(-S^2 / 2 c^2))`` with
``Rb' = |l1| / |l3|`` (needs ``l3 > 0`` and ``l2 >= -l3 / 2``); blobs are still
suppressed, dark sheets are not (they are rare in white matter).  ``c`` is in the units of the normalised
image (the pipeline divides the SWI by its median brain intensity, so ``c`` is a
fraction of the tissue signal).  The output is the maximum over scales.

Implementation: one Gaussian smoothing per scale (``NeonatalBrainLib.filters.gaussian_filter``:
``scipy.ndimage.gaussian_filter``, bit for bit, on several threads) on the
region of interest (bounding box of the mask plus a margin), then one fused
numba kernel (``prange`` over the first axis, float32, ``fastmath``,
``cache=True``) computes the Hessian, its closed-form eigenvalues (Smith 1961,
trigonometric solution for symmetric 3x3 matrices), the response and the running
maximum, only at mask voxels.  No per-scale full-volume temporaries besides the
smoothed image.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from numba import njit, prange

from NeonatalBrainLib import filters


@njit(cache=True, fastmath=True, inline="always")
def _sym3_eigenvalues(a11, a22, a33, a12, a13, a23):
    """Eigenvalues of a symmetric 3x3 matrix sorted by absolute value (closed form)."""
    p1 = a12 * a12 + a13 * a13 + a23 * a23
    q = (a11 + a22 + a33) / 3.0
    b11 = a11 - q
    b22 = a22 - q
    b33 = a33 - q
    p2 = b11 * b11 + b22 * b22 + b33 * b33 + 2.0 * p1
    if p2 < 1e-30:
        e1 = a11
        e2 = a22
        e3 = a33
    else:
        p = math.sqrt(p2 / 6.0)
        inv = 1.0 / p
        c11 = b11 * inv
        c22 = b22 * inv
        c33 = b33 * inv
        c12 = a12 * inv
        c13 = a13 * inv
        c23 = a23 * inv
        det = (c11 * (c22 * c33 - c23 * c23) - c12 * (c12 * c33 - c23 * c13)
               + c13 * (c12 * c23 - c22 * c13))
        r = det * 0.5
        if r <= -1.0:
            phi = math.pi / 3.0
        elif r >= 1.0:
            phi = 0.0
        else:
            phi = math.acos(r) / 3.0
        e1 = q + 2.0 * p * math.cos(phi)
        e3 = q + 2.0 * p * math.cos(phi + 2.0 * math.pi / 3.0)
        e2 = 3.0 * q - e1 - e3
    # sort by absolute value
    if abs(e1) > abs(e2):
        e1, e2 = e2, e1
    if abs(e2) > abs(e3):
        e2, e3 = e3, e2
    if abs(e1) > abs(e2):
        e1, e2 = e2, e1
    return e1, e2, e3


@njit(parallel=True, cache=True, fastmath=True)
def _vesselness_kernel(sm, mask, out, inv_sp, norm, alpha, beta, c, dark, thick):
    """Fused Hessian + eigenvalues + Frangi response; ``out = max(out, V)`` at mask voxels."""
    ni, nj, nk = sm.shape
    ia2 = inv_sp[0] * inv_sp[0] * norm
    ja2 = inv_sp[1] * inv_sp[1] * norm
    ka2 = inv_sp[2] * inv_sp[2] * norm
    ij = 0.25 * inv_sp[0] * inv_sp[1] * norm
    ik = 0.25 * inv_sp[0] * inv_sp[2] * norm
    jk = 0.25 * inv_sp[1] * inv_sp[2] * norm
    two_a2 = 2.0 * alpha * alpha
    two_b2 = 2.0 * beta * beta
    two_c2 = 2.0 * c * c
    sign = 1.0 if dark else -1.0
    s2_min = 2e-3 * two_c2
    for i in prange(1, ni - 1):
        for j in range(1, nj - 1):
            for k in range(1, nk - 1):
                if not mask[i, j, k]:
                    continue
                v0 = sm[i, j, k]
                hii = (sm[i + 1, j, k] - 2.0 * v0 + sm[i - 1, j, k]) * ia2
                hjj = (sm[i, j + 1, k] - 2.0 * v0 + sm[i, j - 1, k]) * ja2
                hkk = (sm[i, j, k + 1] - 2.0 * v0 + sm[i, j, k - 1]) * ka2
                hij = (sm[i + 1, j + 1, k] - sm[i + 1, j - 1, k] - sm[i - 1, j + 1, k] + sm[i - 1, j - 1, k]) * ij
                hik = (sm[i + 1, j, k + 1] - sm[i + 1, j, k - 1] - sm[i - 1, j, k + 1] + sm[i - 1, j, k - 1]) * ik
                hjk = (sm[i, j + 1, k + 1] - sm[i, j + 1, k - 1] - sm[i, j - 1, k + 1] + sm[i, j - 1, k - 1]) * jk
                # early outs: a dark tube needs a positive trace (l2 + l3 > |l1|), and a
                # Hessian norm S much below c gives a negligible response (< 1e-3).
                if sign * (hii + hjj + hkk) <= 0.0:
                    continue
                s2 = (hii * hii + hjj * hjj + hkk * hkk
                      + 2.0 * (hij * hij + hik * hik + hjk * hjk))
                if s2 < s2_min:
                    continue
                l1, l2, l3 = _sym3_eigenvalues(hii, hjj, hkk, hij, hik, hjk)
                l2 *= sign
                l3 *= sign
                if thick:
                    # thick slices: a vein inside one slice has no resolvable second
                    # across-slice curvature, so the line/plate term is dropped
                    if l3 <= 0.0 or l2 < -0.5 * l3:
                        continue
                    rb2 = (l1 * l1) / (l3 * l3)
                    v = math.exp(-rb2 / two_b2) * (1.0 - math.exp(-s2 / two_c2))
                else:
                    if l2 <= 0.0 or l3 <= 0.0:
                        continue
                    ra2 = (l2 * l2) / (l3 * l3)
                    rb2 = (l1 * l1) / (l2 * l3)
                    v = (1.0 - math.exp(-ra2 / two_a2)) * math.exp(-rb2 / two_b2) * (1.0 - math.exp(-s2 / two_c2))
                if v > out[i, j, k]:
                    out[i, j, k] = v


def _occupied(mask: np.ndarray) -> list[np.ndarray]:
    """Per axis of ``mask`` (non-empty, >= 1-D): whether each index along it holds a nonzero voxel,
    i.e. ``np.any(mask, axis=<all other axes>)``.  The first axis from each C-order row of the
    other axes (a view of a contiguous array, no copy), the others from the OR of the planes along
    the first axis: two passes over the data instead of one reduction over strided axes per axis."""
    m = np.asarray(mask, bool)
    if m.ndim == 1:
        return [m]
    first = m.reshape(m.shape[0], -1).any(axis=1)
    return [first] + _occupied(np.logical_or.reduce(m, axis=0))


def bounding_box(mask: np.ndarray, margin: int | Sequence[int] = 0) -> tuple[slice, ...]:
    """Slices of the smallest box holding ``mask`` (grown by ``margin`` voxels per axis, an int
    or one per axis, and clipped to the array); empty slices ``(0, 0)`` when ``mask`` is empty."""
    mask = np.asarray(mask)
    nd = mask.ndim
    margin = np.broadcast_to(np.asarray(margin, dtype=int), (nd,))
    idx = [np.flatnonzero(x) for x in _occupied(mask)] if mask.size else [np.zeros(0, int)] * nd
    if any(len(x) == 0 for x in idx):
        return tuple(slice(0, 0) for _ in range(nd))
    return tuple(slice(max(0, int(x[0]) - int(m)), min(n, int(x[-1]) + 1 + int(m)))
                 for x, m, n in zip(idx, margin, mask.shape))


def inner_box(outer: tuple[slice, ...], inner: tuple[slice, ...]) -> tuple[slice, ...]:
    """Box ``inner`` (array coordinates, inside box ``outer``) in the coordinates of ``outer``."""
    return tuple(slice(i.start - o.start, i.stop - o.start) for o, i in zip(outer, inner))


def vesselness(image: np.ndarray, spacing_mm: Sequence[float], scales_mm: Sequence[float], *,
               mask: np.ndarray | None = None, alpha: float = 0.5, beta: float = 0.5,
               c: float = 0.08, dark: bool = True, equalise_voxel_blur: bool = True,
               thick_slice_ratio: float = 2.5,
               progress=None) -> np.ndarray:
    """Maximum over ``scales_mm`` of the Frangi response of dark (``dark=True``) or bright tubes.

    ``image``: 3D array ``[i, j, k]``; ``spacing_mm``: voxel size along i, j, k (mm);
    ``scales_mm``: Gaussian standard deviations in mm; ``mask``: voxels where the
    response is computed (others are 0); ``equalise_voxel_blur``: add to the finer
    axes the blur that makes voxel box + smoothing isotropic (variance
    ``sigma^2 + max(s^2)/12`` on every axis), so a round vein stays round in
    thick-slice data instead of looking like a plate.  Returns float32 of the image's shape, in [0, 1].
    """
    image = np.asarray(image)
    out = np.zeros(image.shape, np.float32)
    box, sub_out = vesselness_in_box(image, spacing_mm, scales_mm, mask=mask, alpha=alpha, beta=beta, c=c,
                                     dark=dark, equalise_voxel_blur=equalise_voxel_blur,
                                     thick_slice_ratio=thick_slice_ratio, progress=progress)
    if sub_out is not None:
        out[box] = sub_out
    return out


def vesselness_in_box(image: np.ndarray, spacing_mm: Sequence[float], scales_mm: Sequence[float], *,
                      mask: np.ndarray | None = None, alpha: float = 0.5, beta: float = 0.5,
                      c: float = 0.08, dark: bool = True, equalise_voxel_blur: bool = True,
                      thick_slice_ratio: float = 2.5, only: np.ndarray | None = None,
                      progress=None, acquired_spacing_mm=None) -> tuple[tuple[slice, slice, slice], np.ndarray | None]:
    """:func:`vesselness` as ``(box, values in box)``: the box holds every voxel of ``mask``
    (bounding box plus the smoothing margin), the response is 0 outside it.  ``None`` for the
    values when the box is too small to compute anything (the response is 0 everywhere).
    ``acquired_spacing_mm``: the voxel the scanner sampled, when the image was interpolated
    onto a finer grid: the slices count as thick only when they are thick on the grid and as
    sampled (an interpolated 0.3 x 0.3 x 1 mm grid of 0.45 x 0.45 x 1 mm samples keeps the plate
    term; slices thick as sampled but resampled thinner keep it too: dropping it there let
    2.7x more voxels into the benchmark volume's segmentation, benchmarks/README.md round 19).

    ``only``: the response is computed only at the voxels of ``mask`` that are also in
    ``only`` (0 at the others); the box, hence the smoothing and every computed value, is
    still that of ``mask``.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"vesselness: expected a 3D image, got shape {image.shape}")
    spacing = np.asarray(spacing_mm, dtype=float)
    if mask is None:
        mask = np.ones(image.shape, bool)
    mask = np.asarray(mask, bool)
    max_sigma = max(scales_mm)
    margin = np.ceil(3.0 * max_sigma / spacing).astype(int) + 1
    box = bounding_box(mask, margin)
    if any(s.stop - s.start < 3 for s in box):
        return box, None
    sub = np.ascontiguousarray(image[box], dtype=np.float32)
    sub_mask = np.ascontiguousarray(mask[box])
    if only is not None:
        sub_mask &= np.asarray(only, bool)[box]
    # zeroed here, not by np.zeros: calloc'd pages first read and then written by the kernel's
    # threads fault twice each under contention (0.2-0.4 s of kernel time on the benchmark volume)
    sub_out = np.empty(sub.shape, np.float32)
    sub_out.fill(0.0)
    smoothed = np.empty_like(sub)
    inv_sp = (1.0 / spacing).astype(np.float32)
    thick = bool(spacing.max() >= thick_slice_ratio * spacing.min())
    if acquired_spacing_mm is not None:
        acquired = np.asarray(acquired_spacing_mm, float)
        thick &= bool(acquired.max() >= thick_slice_ratio * acquired.min())
    # equalise the voxels' own blur (a box of width s has variance s^2 / 12): the
    # finer axes get the extra blur that makes the total isotropic
    box_var = spacing ** 2 / 12.0 if equalise_voxel_blur else np.zeros(3)
    for n, sigma_mm in enumerate(scales_mm):
        sig_axes = np.sqrt(sigma_mm ** 2 + box_var.max() - box_var)
        filters.gaussian_filter(sub, sig_axes / spacing, output=smoothed, mode="nearest", truncate=3.0)
        _vesselness_kernel(smoothed, sub_mask, sub_out, inv_sp, np.float32(sigma_mm ** 2 + box_var.max()),
                           np.float32(alpha), np.float32(beta), np.float32(c), dark, thick)
        if progress is not None:
            progress.update((n + 1) / len(scales_mm), f"vesselness scale {sigma_mm:g} mm")
    return box, sub_out
