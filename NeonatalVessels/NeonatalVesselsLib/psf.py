"""The scanner's point-spread beyond the voxel, estimated from the ventricle walls.

The width fit (:func:`.measure.fit_width`) models a vein's cross-section as a disk blurred by
the voxel (box and interpolation) and by an extra Gaussian of sigma ``psf_extra_sigma_mm``:
the blur of a scanner whose point-spread is wider than its voxels (zero-filled, i.e.
interpolated, reconstructions; k-space filters).  Blur that the model does not know of is read
as vein width: on the independent phantom (Gaussian point-spread of 0.42 voxel, and blooming)
the DMV width error at 3 T was 0.31 mm with no extra blur, 0.21 mm with this estimate and 0.16 mm
with the phantom's own sigma given.

Estimate (:func:`estimate_extra_psf_sigma_mm`).  The wall of the lateral ventricles is the one
large, sharp edge every neonatal SWI has (bright CSF against white matter).  At the wall voxels
with the strongest gradient whose normal lies in the slice plane (thick slices: the in-plane
point-spread is the one that can be measured; isotropic voxels: any normal), the normalised
image is sampled along the normal (linear interpolation, 0.1 mm steps, +-``half_width_mm``
around the steepest rise within 1.5 mm of the wall voxel: a mask a voxel or two off the edge
measures the same edges)
and one edge sigma common to all profiles is fitted: each profile ``b + a Phi((t - t0) /
sigma)`` with its own levels and position (``a`` >= 0, closed form; ``t0`` on a 0.025 mm grid),
``sigma`` minimising the summed squared residual (0.0025 mm grid).  A perfect step is fitted
with ``sigma`` ~0.48 ``h`` (``h``: the voxel's extent along the normal, ``sqrt(sum((s_a
n_a)^2))``; box average and interpolation); the calibration table ``EDGE_SIGMA_PER_VOXEL``,
measured on rendered edges with known continuous point-spreads, converts ``sigma / h`` into the
extra sigma (0 when the walls are no wider than a perfect step).  On rendered walls with new
seeds, radius, noise and a grid not used for the table, known sigmas of 0-0.3 mm came back
within 0.04 mm (one in 16 within 0.07 mm).

Limits: a wall blurred by anatomy (partial volume with the ependyma, a vein running along it,
the choroid plexus) reads as point-spread, and noise biases ``sigma`` up a little; on the
project's phantoms (no point-spread beyond the voxel; their walls are rendered slightly sharper
than a box-averaged step) it was 0 on 45 of 60 cases and 0.04-0.15 mm on 15, and their DMV
width error (55 cases) went from 0.0705 to 0.0702 mm.  The through-slice point-spread of thick slices is not
measured: the in-plane estimate is applied along every axis.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.special import ndtr

from .masks import _bbox

#: Calibration (module docstring): a step edge blurred by a continuous Gaussian of sigma
#: ``EXTRA_SIGMA_PER_VOXEL x h``, averaged over voxels (``h``: the voxel's extent along the
#: normal) and sampled as :func:`estimate_extra_psf_sigma_mm` samples it, is fitted with an
#: edge sigma of ``EDGE_SIGMA_PER_VOXEL x h``.  Measured on exact partial-volume renderings of a
#: bright cylinder (radius 12 mm, axis tilted 3 degrees, 6 x 6 x 3 sub-samples per voxel, the
#: point-spread applied to the sub-samples) on 0.45 x 0.45 x 1, 0.6 x 0.6 x 2 and 0.6 mm
#: isotropic voxels, three seeds each: mean of the three grids, which agreed within 0.02 up to
#: 0.8 (within 0.07 at 1.5).  ``Testing/test_vessels_psf.py`` renders such volumes and checks
#: that known point-spreads are recovered.  Wider edges are read as 1.5 voxels (the table's end).
EXTRA_SIGMA_PER_VOXEL = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5])
EDGE_SIGMA_PER_VOXEL = np.array([0.478, 0.49, 0.52, 0.566, 0.625, 0.694, 0.767, 0.927, 1.094, 1.305, 1.518])


@dataclass(frozen=True)
class PsfEstimate:
    """Result of :func:`estimate_extra_psf_sigma_mm` (all mm)."""

    extra_sigma_mm: float      #: point-spread sigma beyond the voxel (0 when the edges are no wider)
    edge_sigma_mm: float       #: fitted sigma of the wall profiles
    base_sigma_mm: float       #: sigma of a perfect step sampled in the same way
    n_edges: int               #: wall profiles fitted

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def _gradients_at(image: np.ndarray, points: np.ndarray, spacing: np.ndarray, sigma_mm: float,
                  box: tuple[slice, ...]) -> np.ndarray:
    """Gradient (per mm) of ``image`` smoothed by a Gaussian of ``sigma_mm`` at the integer voxel
    ``points`` (K, 3; inside ``box``, at least one voxel from its faces): central differences of
    the smoothed ``box`` (the smoothing reaches outside it, clipped to the array)."""
    radius = np.ceil(4.0 * sigma_mm / spacing).astype(int) + 1
    outer = tuple(slice(max(0, b.start - r), min(n, b.stop + r)) for b, r, n in zip(box, radius, image.shape))
    smooth = ndimage.gaussian_filter(np.asarray(image[outer], np.float32), sigma_mm / spacing, mode="nearest")
    p = points - np.array([o.start for o in outer])
    grad = np.empty((len(p), 3))
    for a in range(3):
        step = np.zeros(3, int)
        step[a] = 1
        hi, lo = p + step, p - step
        grad[:, a] = (smooth[tuple(hi.T)] - smooth[tuple(lo.T)]) / (2.0 * spacing[a])
    return grad


def estimate_extra_psf_sigma_mm(norm_image: np.ndarray, ventricles: np.ndarray, spacing_mm, *,
                                max_edges: int = 600, min_edges: int = 50, half_width_mm: float = 1.5,
                                recentre_mm: float = 1.5,
                                max_normal_tilt: float = 0.05, min_step: float = 0.2,
                                seed: int = 0) -> PsfEstimate | None:
    """Point-spread sigma beyond the voxel (mm) from the ventricle walls (module docstring).

    ``norm_image``: bias-normalised SWI (tissue ~1, CSF bright); ``ventricles``: bool mask on
    the same grid (voxel axes, ``spacing_mm`` per axis).  Thick slices (largest voxel side
    >= 1.2 x the smallest): only walls whose normal leaves the slice plane by less than
    ``max_normal_tilt`` (the normal's component along the slice axis).  Profiles with a fitted
    step below ``min_step`` (fraction of tissue) are dropped.  Each profile is centred on the
    steepest rise within ``recentre_mm`` of its wall voxel along the normal.  None when fewer than
    ``min_edges`` walls qualify (no or tiny ventricles).  Deterministic (``seed`` picks the walls).
    """
    spacing = np.asarray(spacing_mm, float)
    vent = np.asarray(ventricles, bool)
    box = _bbox(vent, 2)
    if box is None:
        return None
    sub = vent[box]
    wall = np.argwhere(sub & ~ndimage.binary_erosion(sub)) + np.array([b.start for b in box])
    if len(wall) < min_edges:
        return None
    image = np.asarray(norm_image)
    rng = np.random.default_rng(seed)
    inner = np.all((wall >= 1) & (wall <= np.array(image.shape) - 2), axis=1)
    wall = wall[inner]
    if len(wall) < min_edges:
        return None
    grad = _gradients_at(image, wall, spacing, max(0.6, float(spacing.min())),
                         tuple(slice(int(lo) - 1, int(hi) + 2) for lo, hi in zip(wall.min(0), wall.max(0))))
    gnorm = np.linalg.norm(grad, axis=1)
    ok = gnorm > 0
    slice_axis = int(np.argmax(spacing))
    if spacing.max() >= 1.2 * spacing.min():
        ok &= np.abs(grad[:, slice_axis]) < max_normal_tilt * np.maximum(gnorm, 1e-12)
    ok &= gnorm >= np.median(gnorm[ok]) if ok.any() else ok
    pick = np.flatnonzero(ok)
    if len(pick) < min_edges:
        return None
    pick = np.sort(rng.choice(pick, min(max_edges, len(pick)), replace=False))
    normals = grad[pick] / gnorm[pick, None]
    if spacing.max() >= 1.2 * spacing.min():
        normals[:, slice_axis] = 0.0
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    image32 = image.astype(np.float32, copy=False)

    def sample(centres: np.ndarray, t: np.ndarray) -> np.ndarray:
        coords = centres[:, None, :] + t[None, :, None] * normals[:, None, :] / spacing
        return ndimage.map_coordinates(image32, coords.reshape(-1, 3).T, order=1,
                                       mode="nearest").reshape(len(centres), len(t)).astype(np.float64)

    # the mask's boundary voxel may lie off the edge (a mask drawn or thresholded a voxel wider or
    # narrower): each profile is centred on the steepest rise along its normal within
    # +-recentre_mm (derivative of the profile smoothed by 0.3 mm)
    centres = wall[pick].astype(float)
    if recentre_mm > 0:
        wide = np.arange(-recentre_mm - 1.0, recentre_mm + 1.0 + 1e-9, 0.1)
        rise = ndimage.gaussian_filter1d(sample(centres, wide), 3.0, axis=1, order=1)
        inside = np.abs(wide) <= recentre_mm + 1e-9
        shift = wide[inside][np.argmax(rise[:, inside], axis=1)]
        centres += shift[:, None] * normals / spacing
    t = np.arange(-half_width_mm, half_width_mm + 1e-9, 0.1)
    profiles = sample(centres, t)
    h = float(np.sqrt(np.mean(((normals * spacing) ** 2).sum(1))))    # voxel extent along the normals (rms)
    sigma, keep = _common_edge_sigma(profiles, t, min_step)
    if keep.sum() < min_edges:
        return None
    if not np.all(keep):
        sigma, _ = _common_edge_sigma(profiles[keep], t, min_step)
    base = float(EDGE_SIGMA_PER_VOXEL[0] * h)
    extra = float(np.interp(sigma / h, EDGE_SIGMA_PER_VOXEL, EXTRA_SIGMA_PER_VOXEL) * h) if sigma > base else 0.0
    return PsfEstimate(extra_sigma_mm=extra, edge_sigma_mm=float(sigma), base_sigma_mm=base,
                       n_edges=int(keep.sum()))


def _common_edge_sigma(profiles: np.ndarray, t: np.ndarray, min_step: float) -> tuple[float, np.ndarray]:
    """(sigma, profiles whose fitted step is >= min_step) of the common-sigma erf fit."""
    centred = profiles - profiles.mean(1, keepdims=True)
    ss = (centred ** 2).sum(1)
    shifts = np.arange(-1.0, 1.0 + 1e-9, 0.025)

    def fit(sigmas):
        best_rss = np.empty(len(sigmas))
        best_step = None
        for n, s in enumerate(sigmas):
            templ = ndtr((t[None, :] - shifts[:, None]) / s)             # (shifts, T)
            templ -= templ.mean(1, keepdims=True)
            var = (templ ** 2).sum(1)
            cov = centred @ templ.T                                       # (K, shifts)
            step = np.maximum(cov / var, 0.0)
            rss = ss[:, None] - 2 * step * cov + step ** 2 * var
            j = np.argmin(rss, axis=1)
            best_rss[n] = rss[np.arange(len(rss)), j].sum()
            if best_step is None or best_rss[n] <= best_rss[:n].min(initial=np.inf):
                best_step = step[np.arange(len(rss)), j]
        k = int(np.argmin(best_rss))
        return float(sigmas[k]), best_step

    coarse, _ = fit(np.arange(0.05, 1.0, 0.02))
    sigma, step = fit(np.arange(max(0.02, coarse - 0.02), coarse + 0.0201, 0.0025))
    return sigma, step >= min_step
