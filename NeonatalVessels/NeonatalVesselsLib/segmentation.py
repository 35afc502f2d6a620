"""Vessel mask from the bias-normalised SWI: dark-tube vesselness, gated by darkness and local
contrast, hysteresis threshold, small and short components removed (steps 3-4 of
:mod:`.pipeline`'s docstring)."""
from __future__ import annotations

import numpy as np

from NeonatalBrainLib import filters

from . import masks as mk
from .params import VesselParams
from .vesselness import bounding_box, inner_box, vesselness_in_box


def segment_vessels(norm: np.ndarray, brain: np.ndarray, depth_mm: np.ndarray, spacing,
                    params: VesselParams, progress=None, *, noise_sd: float = 0.0,
                    acquired_spacing_mm=None) -> np.ndarray:
    """Binary vessel mask from the bias-normalised SWI (steps 3-4 of :mod:`.pipeline`'s docstring).

    ``noise_sd``: noise SD of ``norm`` (:func:`masks.noise_sd`); the local-contrast gate is
    :func:`contrast_gate`, on ``acquired_spacing_mm`` (default ``spacing``: the voxels hold
    independent noise).
    """
    roi = brain & (depth_mm > params.surface_margin_mm)
    seg = np.zeros(roi.shape, bool)
    # the vesselness only counts in the ROI, so every step after it (thresholds, connected
    # components) gives the same result on the ROI's bounding box as on the whole volume
    rbox = bounding_box(roi)
    if any(b.stop - b.start < 1 for b in rbox):
        return seg
    # voxels that can be vessel: in the ROI, dark, darker than their local background
    dark = roi[rbox] & (norm[rbox] < params.max_relative_intensity)
    if params.min_local_contrast > 0:
        gate = contrast_gate(params, noise_sd, spacing if acquired_spacing_mm is None else acquired_spacing_mm)
        cbox, contrast = _local_contrast_in_box(norm, spacing, background_mm=params.local_background_mm,
                                                smoothing_mm=params.contrast_smoothing_mm, mask=roi)
        dark &= contrast[inner_box(cbox, rbox)] >= gate
        del contrast
    # the vesselness (smoothed in the ROI's box) is evaluated at those voxels only: elsewhere it is
    # not used, so the Hessian eigen-analysis is skipped there
    candidates = np.zeros(roi.shape, bool)
    candidates[rbox] = dark
    vbox, v_sub = vesselness_in_box(norm, spacing, params.scales_mm, mask=roi, alpha=params.frangi_alpha,
                                    beta=params.frangi_beta, c=params.frangi_c, dark=True, only=candidates,
                                    progress=progress, acquired_spacing_mm=acquired_spacing_mm)
    if v_sub is None:
        return seg
    v = v_sub[inner_box(vbox, rbox)]   # 0 outside the candidates
    sub = hysteresis_threshold(v, params.threshold_low, params.threshold_high)
    min_vox = max(1, int(np.ceil(params.min_component_mm3 / float(np.prod(spacing)))))
    seg[rbox] = drop_small_components(sub, spacing, min_voxels=min_vox,
                                      min_extent_mm=max(0.0, params.min_component_extent_mm))
    return seg


def contrast_gate(params: VesselParams, noise_sd: float, spacing) -> float:
    """Local contrast (fraction of tissue) a vessel voxel needs:
    ``max(min_local_contrast, local_contrast_noise_factor * noise_sd * f)``, ``f`` =
    :func:`.masks.smoothed_noise_factor` of ``contrast_smoothing_mm`` on these voxels: the
    contrast is measured on the smoothed image, whose noise falls with the number of voxels
    the smoothing averages (a fixed multiple of the image noise SD would be ~1.7x stricter on
    0.6 mm isotropic voxels than on 0.6 x 0.6 x 2 mm ones).  ``spacing``: the acquired voxel
    size (:attr:`.pipeline._Context.acquired_spacing_mm`): on an interpolated image the smoothing averages
    fewer independent samples than voxels.
    """
    f = mk.smoothed_noise_factor(spacing, params.contrast_smoothing_mm)
    return max(params.min_local_contrast, params.local_contrast_noise_factor * float(noise_sd) * f)


def local_contrast(image: np.ndarray, spacing, *, background_mm: float = 3.0, smoothing_mm: float = 0.5,
                   mask: np.ndarray | None = None) -> np.ndarray:
    """Darkness of each voxel below its local background (black top-hat), in image units.

    ``closing(G * image) - G * image`` with ``G`` a Gaussian of ``smoothing_mm`` (noise)
    and the closing (grey dilation then erosion) by a box about ``background_mm`` wide
    along every axis (odd voxel counts, at least 1): dark structures narrower than the
    box (veins) keep their full contrast, whereas the interior of wide dark regions
    (deep grey matter) and the dark side of a bright structure's edge (CSF, where a
    Hessian filter also responds) get ~0.  Computed in the bounding box of ``mask``.
    """
    out = np.zeros(np.shape(image), np.float32)
    box, values = _local_contrast_in_box(image, spacing, background_mm=background_mm, smoothing_mm=smoothing_mm,
                                         mask=mask)
    if values is not None:
        out[box] = values
    return out


def _local_contrast_in_box(image: np.ndarray, spacing, *, background_mm: float = 3.0, smoothing_mm: float = 0.5,
                           mask: np.ndarray | None = None) -> tuple[tuple[slice, ...], np.ndarray | None]:
    """:func:`local_contrast` as ``(box, values in box)`` (0 outside the box; values None: 0 everywhere)."""
    spacing = np.asarray(spacing, float)
    size = [max(1, int(2 * round(background_mm / 2 / s) + 1)) for s in spacing]
    if mask is None:
        mask = np.ones(np.shape(image), bool)
    box = bounding_box(mask, [n + 2 for n in size])
    if any(b.stop - b.start < 1 for b in box):
        return box, None
    sm = filters.gaussian_filter(np.asarray(image[box], np.float32), smoothing_mm / spacing, mode="nearest")
    closed = filters.minimum_filter(filters.maximum_filter(sm, size, mode="nearest"), size, mode="nearest")
    closed -= sm
    return box, closed


def hysteresis_threshold(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Voxels above ``low`` in 6-connected components that hold a voxel above ``high``.

    Same result as ``skimage.filters.apply_hysteresis_threshold`` (strict ``>``, face
    connectivity), with cc3d labelling and no per-label sums over the whole volume.
    """
    import cc3d

    above = image > low
    labels = cc3d.connected_components(above.view(np.uint8), connectivity=6)
    keep = np.zeros(int(labels.max()) + 1, bool)
    keep[np.unique(labels[image > high])] = True
    keep[0] = False
    return keep[labels]


def drop_short_components(mask: np.ndarray, spacing, min_extent_mm: float) -> np.ndarray:
    """Remove 26-connected components whose bounding-box diagonal is shorter than ``min_extent_mm``.

    The diagonal joins the centres of the box's corner voxels, in mm
    (``sqrt(sum(((n_a - 1) s_a)^2))``, ``n_a`` voxels of size ``s_a`` along axis ``a``),
    an upper bound of the length of the component's centreline: such
    pieces cannot become a vessel of that length, and skeletonising thousands of them
    dominated the run time.
    """
    return drop_small_components(mask, spacing, min_extent_mm=min_extent_mm)


def drop_small_components(mask: np.ndarray, spacing, *, min_voxels: int = 1,
                          min_extent_mm: float = 0.0) -> np.ndarray:
    """Keep the 26-connected components of ``mask`` with at least ``min_voxels`` voxels and a
    bounding-box diagonal (:func:`drop_short_components`) of at least ``min_extent_mm``.

    The same as ``cc3d.dust(mask, threshold=min_voxels, connectivity=26)`` followed by
    :func:`drop_short_components` (dusting removes whole components and leaves the others
    as they are), with one labelling.
    """
    import cc3d

    labels, n = cc3d.connected_components(np.asarray(mask, np.uint8), connectivity=26, return_N=True)
    if n == 0:
        return np.asarray(mask, bool)
    stats = cc3d.statistics(labels, no_slice_conversion=True)
    # boxes: (min, max) voxel index per axis, both inclusive; labels without voxels have count 0
    box = stats["bounding_boxes"][1:].astype(float)
    ext = (box[:, 1::2] - box[:, 0::2]) * np.asarray(spacing, float)
    diagonal = np.sqrt((ext[:, 0] ** 2 + ext[:, 1] ** 2) + ext[:, 2] ** 2)
    keep = np.zeros(n + 1, bool)
    keep[1:] = (stats["voxel_counts"][1:] >= max(1, min_voxels)) & (diagonal >= min_extent_mm)
    return keep[labels]
