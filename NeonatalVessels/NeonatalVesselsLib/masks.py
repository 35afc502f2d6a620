"""Automatic masks on neonatal SWI magnitude: brain, ventricles, midline plane.

All functions take an array ``[i, j, k]`` plus the voxel spacing (mm) or the
affine; distances and sizes are in millimetres, so results do not depend on
voxel size or order.

* :func:`brain_mask` -- the head is the bright object on a dark background
  (Otsu threshold of the image smoothed with a 1 mm Gaussian, largest connected
  component, holes filled).  Neonatal SWI has little scalp/skull signal, so the
  object is the intracranial volume; veins and dark lesions inside are filled.
* :func:`ventricle_mask` -- on SWI magnitude CSF is brighter than white matter:
  voxels brighter than the Otsu threshold between tissue and CSF within the
  brain, kept when the component lies deep (its deepest voxel at least
  ``min_depth_mm`` from the brain surface), which excludes extra-cerebral CSF.
* :func:`midline_x_mm` -- the brain's left-right symmetry plane ``x = m`` (RAS):
  the ``m`` maximising the overlap of the brain mask with its mirror image,
  searched around the mask's centroid.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

import cc3d
import edt as edt_lib

from NeonatalBrainLib.imageio import Volume


def _otsu(values: np.ndarray) -> float:
    from skimage.filters import threshold_otsu

    return float(threshold_otsu(values))


def _ball(radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    r = np.maximum(1, np.floor(radius_mm / spacing).astype(int))
    g = np.ogrid[tuple(slice(-n, n + 1) for n in r)]
    d2 = sum((gi * s) ** 2 for gi, s in zip(g, spacing))
    return d2 <= radius_mm ** 2 + 1e-9


def largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = cc3d.connected_components(mask.astype(np.uint8), connectivity=6, return_N=True)
    if n == 0:
        return mask.astype(bool)
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    return labels == int(np.argmax(counts))


def brain_mask(image: np.ndarray, spacing_mm, *, erosion_mm: float = 2.5) -> np.ndarray:
    """Intracranial mask (bool) of a neonatal SWI magnitude image.

    Otsu threshold of the image smoothed with a 1 mm Gaussian; eroded by
    ``erosion_mm`` to cut thin bridges to the scalp through the (dark) skull; the
    largest 6-connected component; dilated back by the same ball inside the
    thresholded voxels; 3D holes (veins, dark lesions) filled.
    """
    spacing = np.asarray(spacing_mm, float)
    img = np.asarray(image, np.float32)
    sm = ndimage.gaussian_filter(img, sigma=1.0 / spacing, mode="nearest")
    step = tuple(max(1, n // 96) for n in sm.shape)
    sample = sm[:: step[0], :: step[1], :: step[2]]
    thr = _otsu(sample.ravel())
    fg = sm > thr
    # erosion / dilation by a ball of erosion_mm (mm, anisotropic) through exact Euclidean
    # distance transforms: same result as the ball structuring element, cost independent of its size
    aniso = tuple(float(x) for x in spacing)
    core = edt_lib.edt(np.ascontiguousarray(fg, dtype=np.uint8), anisotropy=aniso, black_border=True,
                       parallel=1) > erosion_mm + 1e-6
    if not core.any():
        core = fg
    core = largest_component(core)
    grow = edt_lib.edt(np.ascontiguousarray(~core, dtype=np.uint8), anisotropy=aniso, black_border=False,
                       parallel=1) <= erosion_mm + 1e-6
    mask = grow & fg
    mask = ndimage.binary_fill_holes(mask)
    return mask


def brain_depth_mm(brain: np.ndarray, spacing_mm) -> np.ndarray:
    """Distance (mm) of each brain voxel to the nearest non-brain voxel (anisotropic EDT)."""
    return edt_lib.edt(np.ascontiguousarray(brain, dtype=np.uint8), anisotropy=tuple(float(s) for s in spacing_mm),
                       black_border=True, parallel=1).astype(np.float32)


def normalise_intensity(image: np.ndarray, brain: np.ndarray, spacing_mm, *,
                        bias_sigma_mm: float = 20.0) -> np.ndarray:
    """Image divided by a smooth estimate of the tissue signal (bias correction), float32.

    The tissue signal is the Gaussian-weighted (``bias_sigma_mm``) mean of the
    image over brain voxels (normalised convolution), so slow multiplicative bias
    fields are removed and tissue is ~1 everywhere in the brain.
    """
    spacing = np.asarray(spacing_mm, float)
    img = np.asarray(image, np.float32)
    w = brain.astype(np.float32)
    # downsample for speed: the bias field is smooth
    factor = np.maximum(1, np.floor(4.0 / spacing).astype(int))
    sl = tuple(slice(None, None, int(f)) for f in factor)
    sig = bias_sigma_mm / (spacing * factor)
    num = ndimage.gaussian_filter(img[sl] * w[sl], sig, mode="constant")
    den = ndimage.gaussian_filter(w[sl], sig, mode="constant")
    field_small = np.where(den > 1e-3, num / np.maximum(den, 1e-3), 0).astype(np.float32)
    zoom = [n / m for n, m in zip(img.shape, field_small.shape)]
    field = ndimage.zoom(field_small, zoom, order=1, mode="nearest")
    field = field[: img.shape[0], : img.shape[1], : img.shape[2]]
    if field.shape != img.shape:
        field = np.pad(field, [(0, a - b) for a, b in zip(img.shape, field.shape)], mode="edge")
    med = float(np.median(img[brain])) if brain.any() else 1.0
    field = np.where(field > 0.05 * med, field, med)
    out = img / field
    # rescale so that the median tissue value is 1
    inside = out[brain]
    if inside.size:
        out /= np.float32(np.median(inside))
    return out.astype(np.float32)


def ventricle_mask(norm_image: np.ndarray, brain: np.ndarray, spacing_mm, *,
                   depth_mm: np.ndarray | None = None, min_depth_mm: float = 12.0,
                   min_median_depth_mm: float = 8.0, min_volume_mm3: float = 50.0) -> np.ndarray:
    """Lateral + third ventricles (bool) from a bias-normalised SWI (CSF bright).

    Bright components (above max(Otsu of the upper half, 1.2) after 0.8 mm smoothing)
    of >= ``min_volume_mm3`` that reach ``min_depth_mm`` below the brain surface and
    whose median depth is >= ``min_median_depth_mm``: the ventricles lie deep as a
    whole, whereas sulcal / Sylvian / posterior-fossa CSF joined to the surface
    (median depth 2-4 mm on the phantoms) can reach deep at one end only; such a
    component taken as ventricle made veins next to it pass as wall veins or DMVs.
    """
    spacing = np.asarray(spacing_mm, float)
    sm = ndimage.gaussian_filter(norm_image, sigma=0.8 / spacing, mode="nearest")
    inside = sm[brain]
    if inside.size == 0:
        return np.zeros(brain.shape, bool)
    hi = inside[inside > np.percentile(inside, 50)]
    thr = max(_otsu(hi), 1.2)
    cand = (sm > thr) & brain
    if depth_mm is None:
        depth_mm = brain_depth_mm(brain, spacing)
    labels, n = cc3d.connected_components(cand.astype(np.uint8), connectivity=6, return_N=True)
    if n == 0:
        return np.zeros(brain.shape, bool)
    voxel_mm3 = float(np.prod(spacing))
    counts = np.bincount(labels.ravel(), minlength=n + 1)
    index = np.arange(1, n + 1)
    max_depth = np.asarray(ndimage.maximum(depth_mm, labels, index=index))
    med_depth = np.asarray(ndimage.median(depth_mm, labels, index=index))
    keep = np.zeros(n + 1, bool)
    keep[1:] = ((max_depth >= min_depth_mm) & (med_depth >= min_median_depth_mm)
                & (counts[1:] * voxel_mm3 >= min_volume_mm3))
    return keep[labels]


def midline_x_mm(brain: np.ndarray, affine: np.ndarray, *, search_mm: float = 8.0, step_mm: float = 0.25) -> float:
    """RAS x (mm) of the brain's left-right symmetry plane (see module docstring)."""
    idx = np.argwhere(brain[::2, ::2, ::2]) * 2
    if len(idx) == 0:
        return float(affine[0, 3])
    ras = idx @ affine[:3, :3].T + affine[:3, 3]
    x0 = float(np.mean(ras[:, 0]))
    # symmetry: for each (y, z) cell the brain's x-extent midpoint; robust median over cells
    cell = 1.0
    keys = np.floor(ras[:, 1:] / cell).astype(np.int64)
    order = np.lexsort((keys[:, 1], keys[:, 0]))
    k = keys[order]
    x = ras[order, 0]
    boundaries = np.flatnonzero(np.any(np.diff(k, axis=0) != 0, axis=1)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(k)]])
    mids = []
    for s, e in zip(starts, ends):
        if e - s >= 8:
            xs = x[s:e]
            lo, hi = xs.min(), xs.max()
            if hi - lo > 20.0:
                mids.append(0.5 * (lo + hi))
    if len(mids) < 10:
        return x0
    m = float(np.median(mids))
    return m if abs(m - x0) <= search_mm else x0


def as_array_on_grid(mask, reference: Volume, name: str) -> np.ndarray:
    """Array of a mask given as an array or a :class:`Volume`; must lie on ``reference``'s grid."""
    from NeonatalBrainLib.imageio import InputError, check_same_grid

    if isinstance(mask, Volume):
        check_same_grid(reference, mask, "SWI", name)
        arr = mask.array
    else:
        arr = np.asarray(mask)
        if arr.shape != reference.shape:
            raise InputError(f"{name} is on another grid than SWI: shape {arr.shape} vs {reference.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InputError(f"{name}: voxel type {arr.dtype} is not numeric")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise InputError(f"{name}: contains NaN or Inf")
    return arr
