"""Per-vessel measurements: centreline in RAS, width (sub-voxel model fit), tortuosity, curvature.

Centreline
----------
The ordered skeleton voxels of a vessel are mapped to RAS mm through the affine,
resampled at ``step_mm`` (0.25 mm) along the arc and smoothed with a Gaussian of
``smoothing_mm`` (arc length, end points fixed; removes the voxel staircase),
then resampled again at ``step_mm``.  ``length_mm`` = arc length, ``tortuosity`` =
arc / chord and ``curvature_per_mm`` = arc-length mean unsigned curvature, all
from :mod:`NeonatalBrainLib.centerline` on that centreline (curvature with no
further smoothing).

Width (apparent diameter, mm)
-----------------------------
Cross-sections perpendicular to the centreline are sampled every 1 mm (linear
interpolation of the bias-normalised SWI, 0.15 mm grid over +-``patch_mm``) and
averaged along the vessel.  Model of the averaged cross-section::

    I(u, v) = b - c * (D_d * G_Sigma)(u - u0, v - v0)

``D_d``: a disk of diameter ``d`` (the vein's lumen; a cylinder seen end-on),
``G_Sigma``: the imaging + interpolation point-spread function, a Gaussian with
per-voxel-axis variance ``spacing^2 / 4`` (box partial-volume ``s^2/12`` plus
linear interpolation ``s^2/6``) projected into the cross-section plane through
the affine -- so a 2 mm slice blurs a vein lying in-plane much more than one
crossing the slices.  ``b`` (local tissue), ``c`` (vein contrast), ``d`` and the
centre offset are fitted by non-linear least squares.  The blur preserves the
integral, so the *dark area* ``A = c * pi d^2 / 4`` is well determined even for
veins thinner than the voxels, whereas ``c`` and ``d`` separately are not.  Hence
``d`` is taken from the fit when the vein is resolved (fitted ``d`` larger than
the PSF's FWHM along the cross-section's sharper axis, where the flat top of the disk shows); otherwise
``d = sqrt(4 A / (pi c_subject))`` with ``c_subject`` the 0.8 quantile of the contrasts of the
resolved veins of the same scan (see :func:`finalize_widths`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, optimize, signal

from NeonatalBrainLib import centerline as cl

STEP_MM = 0.25


def centreline_ras(path_ijk: np.ndarray, affine: np.ndarray, *, smoothing_mm: float = 0.6,
                   step_mm: float = STEP_MM) -> np.ndarray:
    """Smoothed, uniformly resampled centreline (N, 3) in RAS mm of an ordered voxel path."""
    ijk = np.asarray(path_ijk, float)
    ras = ijk @ affine[:3, :3].T + affine[:3, 3]
    if len(ras) < 2:
        return ras
    p = cl.resample_polyline(ras, step_mm)
    p = cl.smooth_polyline(p, smoothing_mm, step_mm)
    return cl.resample_polyline(p, step_mm)


def smooth_centreline(points_ras: np.ndarray, *, smoothing_mm: float = 0.6, step_mm: float = STEP_MM,
                      slice_direction=None, slice_smoothing_mm: float = 0.0) -> np.ndarray:
    """Resample at ``step_mm``, Gaussian-smooth along the arc (``smoothing_mm``), resample again.

    Thick slices: with ``slice_direction`` (unit vector in RAS, the slice normal) and
    ``slice_smoothing_mm`` > ``smoothing_mm``, the coordinate along the slice normal is
    smoothed with the larger sigma and the in-plane coordinates with ``smoothing_mm``:
    the slice staircase (jumps of one slice thickness) is removed while the well
    sampled in-plane course is kept.
    """
    p = np.asarray(points_ras, float)
    if len(p) < 2:
        return p
    p = cl.resample_polyline(p, step_mm)
    smooth = cl.smooth_polyline(p, smoothing_mm, step_mm)
    if slice_direction is not None and slice_smoothing_mm > smoothing_mm:
        n = np.asarray(slice_direction, float)
        n = n / np.linalg.norm(n)
        thick = cl.smooth_polyline(p, slice_smoothing_mm, step_mm)
        smooth = smooth + ((thick - smooth) @ n)[:, None] * n
    return cl.resample_polyline(smooth, step_mm)


def _normal_basis(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.array([0.0, 0.0, 1.0]) if abs(t[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = np.cross(t, ref)
    u /= np.linalg.norm(u)
    v = np.cross(t, u)
    return u, v


@dataclass
class WidthFit:
    diameter_mm: float      #: fitted lumen diameter d
    contrast: float         #: fitted c / b (relative vein contrast)
    dark_area_mm2: float    #: (c / b) * pi d^2 / 4
    resolved: bool          #: d larger than the PSF FWHM (fit of d trustworthy)
    n_sections: int
    within_bounds: bool = True   #: the fitted d is not at the search limit (a non-tubular dark region)


def _render(d: float, u0: float, v0: float, grid_u: np.ndarray, grid_v: np.ndarray, h: float,
            kernel: np.ndarray) -> np.ndarray:
    r = np.hypot(grid_u - u0, grid_v - v0)
    disk = np.clip(0.5 + (0.5 * d - r) / h, 0.0, 1.0)
    return signal.fftconvolve(disk, kernel, mode="same")


class _BlurredDisk:
    """Renders ``(D_d * G)(u - u0, v - v0)`` on a fixed grid; the kernel's FFT is computed once.

    Same values as :func:`_render` (``fftconvolve(..., mode="same")``).
    """

    def __init__(self, grid_u: np.ndarray, grid_v: np.ndarray, h: float, kernel: np.ndarray):
        from scipy import fft

        self.u, self.v, self.h = grid_u, grid_v, h
        n = np.asarray(grid_u.shape)
        m = np.asarray(kernel.shape)
        self.shape = tuple(int(fft.next_fast_len(int(a + b - 1), real=True)) for a, b in zip(n, m))
        self.k_hat = fft.rfft2(kernel, s=self.shape)
        self.crop = tuple(slice((b - 1) // 2, (b - 1) // 2 + a) for a, b in zip(n, m))
        self._fft = fft

    def __call__(self, d: float, u0: float, v0: float) -> np.ndarray:
        r = np.hypot(self.u - u0, self.v - v0)
        disk = np.clip(0.5 + (0.5 * d - r) / self.h, 0.0, 1.0)
        f = self._fft
        return f.irfft2(f.rfft2(disk, s=self.shape) * self.k_hat, s=self.shape)[self.crop]


def _gauss_kernel(cov: np.ndarray, h: float) -> np.ndarray:
    sd = np.sqrt(np.maximum(np.linalg.eigvalsh(cov).max(), 1e-6))
    half = int(np.ceil(3.5 * sd / h))
    g = np.arange(-half, half + 1) * h
    uu, vv = np.meshgrid(g, g, indexing="ij")
    inv = np.linalg.inv(cov + 1e-9 * np.eye(2))
    q = inv[0, 0] * uu * uu + 2 * inv[0, 1] * uu * vv + inv[1, 1] * vv * vv
    k = np.exp(-0.5 * q)
    return k / k.sum()


def fit_width(norm_image: np.ndarray, affine: np.ndarray, points_ras: np.ndarray, *,
              patch_mm: float = 2.0, grid_mm: float = 0.15, station_mm: float = 1.0,
              end_margin_mm: float = 0.75, psf_extra_sigma_mm: float = 0.0) -> WidthFit | None:
    """Fit the blurred-disk cross-section model to one vessel (see module docstring)."""
    p = np.asarray(points_ras, float)
    if len(p) < 2:
        return None
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    direction = affine[:3, :3] / spacing
    inv = np.linalg.inv(affine)
    s = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))])
    total = s[-1]
    tang = np.gradient(p, axis=0)
    tang /= np.maximum(np.linalg.norm(tang, axis=1, keepdims=True), 1e-9)
    if total > 2 * end_margin_mm + station_mm:
        stations = np.arange(end_margin_mm, total - end_margin_mm + 1e-9, station_mm)
    else:
        stations = np.array([0.5 * total])
    idx = np.clip(np.searchsorted(s, stations), 0, len(p) - 1)
    g = np.arange(-patch_mm, patch_mm + 1e-9, grid_mm)
    uu, vv = np.meshgrid(g, g, indexing="ij")
    psf_cov_ras = direction @ np.diag(spacing ** 2 / 4.0 + psf_extra_sigma_mm ** 2) @ direction.T
    acc = np.zeros(uu.shape)
    cov_uv = np.zeros((2, 2))
    n = 0
    for i in idx:
        t = tang[i]
        u, v = _normal_basis(t)
        pts = p[i] + uu[..., None] * u + vv[..., None] * v
        ijk = pts.reshape(-1, 3) @ inv[:3, :3].T + inv[:3, 3]
        vals = ndimage.map_coordinates(norm_image, ijk.T, order=1, mode="nearest")
        acc += vals.reshape(uu.shape)
        b = np.stack([u, v], axis=1)
        cov_uv += b.T @ psf_cov_ras @ b
        n += 1
    prof = acc / n
    cov_uv /= n
    kernel = _gauss_kernel(cov_uv, grid_mm)
    b0 = float(np.median(np.concatenate([prof[0], prof[-1], prof[:, 0], prof[:, -1]])))

    render = _BlurredDisk(uu, vv, grid_mm, kernel)
    target = prof.ravel()

    def linear_bc(m: np.ndarray) -> tuple[float, float]:
        # b and c enter linearly (variable projection): least squares of prof ~ b - c m, clipped to [0, 3]
        mm = m.ravel()
        mean_m, mean_p = mm.mean(), target.mean()
        var = float(((mm - mean_m) ** 2).sum())
        c = -float(((mm - mean_m) * (target - mean_p)).sum()) / var if var > 1e-12 else 0.0
        c = min(max(c, 0.0), 3.0)
        b = min(max(float(mean_p + c * mean_m), 0.0), 3.0)
        return b, c

    def resid(x):
        m = render(*x)
        b, c = linear_bc(m)
        return b - c * m.ravel() - target

    d_max = 2 * patch_mm - 0.5
    lo = [0.05, -0.6, -0.6]
    hi = [d_max, 0.6, 0.6]
    # start d from the dark area of the profile (deficit integral / contrast guess)
    area = float(np.clip(b0 - prof, 0, None).sum()) * grid_mm ** 2 / max(b0, 1e-6)
    x0 = [float(np.clip(np.sqrt(4 * area / np.pi / 0.8), 0.2, hi[0] - 0.1)), 0.0, 0.0]
    try:
        best = optimize.least_squares(resid, x0, bounds=(lo, hi), x_scale=[0.2, 0.1, 0.1], max_nfev=60)
    except ValueError:
        return None
    d = float(best.x[0])
    b, c = linear_bc(render(*best.x))
    if b <= 0:
        return None
    rel_c = c / b
    fwhm = 2.3548 * float(np.sqrt(np.linalg.eigvalsh(cov_uv).min()))
    return WidthFit(diameter_mm=float(d), contrast=float(rel_c),
                    dark_area_mm2=float(rel_c * np.pi * d * d / 4.0),
                    resolved=bool(d > fwhm), n_sections=int(n), within_bounds=bool(d < d_max - 0.25))


def subject_contrast(fits: list[WidthFit | None], default: float = 0.6, quantile: float = 0.5) -> float:
    """``quantile`` (default the median) of the relative contrasts of the resolved veins (``default`` if fewer than 3).

    Fits whose diameter reached the search limit (broad dark regions such as deep
    grey matter, not veins) are not used.  An upper quantile counters the bias of the
    averaged cross-sections: centreline misalignment and curvature only blur a vein
    (wider, shallower), never deepen it.
    """
    cs = [f.contrast for f in fits if f is not None and f.resolved and f.within_bounds and 0.05 < f.contrast < 1.5]
    if len(cs) < 3:
        return float(default)
    return float(np.quantile(cs, quantile))


def finalize_widths(fits: list[WidthFit | None], c_subject: float) -> list[float]:
    """Diameter (mm) per vessel: the fitted d when resolved, else sqrt(4 A / (pi c_subject))."""
    out = []
    for f in fits:
        if f is None:
            out.append(float("nan"))
        elif f.resolved:
            out.append(f.diameter_mm)
        else:
            out.append(float(np.sqrt(4.0 * f.dark_area_mm2 / (np.pi * c_subject))))
    return out


def shape_metrics(points_ras: np.ndarray, *, step_mm: float = STEP_MM) -> dict:
    """length_mm, tortuosity, curvature_per_mm of a centreline (NeonatalBrainLib.centerline)."""
    p = np.asarray(points_ras, float)
    if len(p) < 2:
        return {"length_mm": 0.0, "tortuosity": float("nan"), "curvature_per_mm": float("nan")}
    return {
        "length_mm": cl.arc_length_mm(p),
        "tortuosity": cl.tortuosity(p),
        "curvature_per_mm": cl.mean_curvature_per_mm(p, step_mm=step_mm, smoothing_mm=0.0),
    }
