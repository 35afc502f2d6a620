"""NeonatalVessels engine: automatic DMV segmentation and quantification on SWI magnitude.

Pipeline (:func:`run_vessel_analysis`)
--------------------------------------
1. Validation (3D, finite, non-constant, positive spacing; a T1 is refused when its
   deep CSF is dark).
2. Brain mask, bias-field normalisation (tissue = 1), distance to the brain surface,
   ventricles (bright CSF), the head's frame and its midline plane -- unless given (:mod:`.masks`).
3. Dark-tube vesselness at ``VesselParams.scales_mm`` (:mod:`.vesselness`, :mod:`.segmentation`), inside
   the brain deeper than ``surface_margin_mm``.
4. Vessel mask: hysteresis threshold of the vesselness (``threshold_low/high``)
   restricted to voxels darker than ``max_relative_intensity`` of the tissue and darker
   than their local background by ``min_local_contrast`` (black top-hat,
   :func:`.segmentation.local_contrast`: removes the Hessian's halo beside bright CSF and the
   interior of the deep grey matter); components smaller than ``min_component_mm3``
   or shorter than ``min_component_extent_mm`` removed.
5. The measurement of :func:`measure_vessel_mask` on that mask: split into vessels at
   junctions (:mod:`.skeleton`), centrelines in RAS, region and side (:mod:`.regions`);
   here only (not for a given mask) pieces too short to be DMVs grown by
   minimum-intensity tracking (:mod:`.tracking`); width by cross-section model fit with the
   scanner's point-spread estimated from the ventricle walls (:mod:`.psf`) unless given,
   tortuosity and curvature (:mod:`.measure`), per-subject summary.

All sizes are in millimetres and all geometry goes through the affine, so voxel
order, orientation and anisotropy do not change the results.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from NeonatalBrainLib import __version__ as _lib_version
from NeonatalBrainLib import filters
from NeonatalBrainLib.imageio import (InputError, Volume, crop_volume, from_canonical_order, grid_summary,
                                      reorient_to_canonical, to_canonical_order, uncrop_array, validate_scalar_volume,
                                      zero_padding_box)
from NeonatalBrainLib.progress import as_progress
from NeonatalBrainLib.runtime import without_numpy_hugepage_advice

from . import dmvscore as ds
from . import masks as mk
from . import measure as ms
from .params import VesselParams, checked_params
from .regions import classify_vessels, foramen_y_mm, region_label_table, region_value
from .segmentation import contrast_gate, segment_vessels
from .skeleton import merge_fragments, paths_from_labels, relabel_pieces, relabelled, split_vessels, voxel_counts
from .vesselness import bounding_box, inner_box

#: Columns of vessels.csv (and of VesselAnalysis.vessels), in order.
VESSEL_COLUMNS = ("vessel_id", "region", "side", "length_mm", "width_mm", "tortuosity", "curvature_per_mm",
                  "n_voxels", "volume_mm3", "mean_x_mm", "mean_y_mm", "mean_z_mm", "width_method",
                  "dmv_probability")
#: Keys of summary.json required by the output contract (provenance is added beside them).
SUMMARY_KEYS = ("dmv_count", "dmv_count_left", "dmv_count_right", "dmv_width_mm", "dmv_tortuosity",
                "dmv_curvature_per_mm", "thalamic_vein_width_mm_left", "thalamic_vein_width_mm_right",
                "anterior_caudate_vein_width_mm_left", "anterior_caudate_vein_width_mm_right")
#: Regions of the veins that run along the ventricle wall (their width rules and flank contrast).
WALL_VEIN_REGIONS = ("thalamic", "anterior_caudate")


#: below this DMV detectability index (:func:`detectability`) automatic DMV detection misses many DMVs
#: (round 12): of 95 phantom cases of two generators, the 24 below 2.3 (all 2 mm slices at low SNR of
#: the independent generator, index 1.0-2.2) had a DMV sensitivity of 0.06-0.61, the 71 above it
#: (index 2.3-17.3) 0.78-1.00; the project's term 3 T seed 0 and 1.5 T seed 2 with added noise gave
#: 0.49-0.86 at index 1.5-2.2 and 0.84-0.94 at 2.6-6.9
MIN_DMV_DETECTABILITY = 2.3


#: a DMV whose centreline is less than this x the darkness a DMV needs (``provenance.min_dmv_darkness``)
#: is near the detection threshold (:func:`near_threshold_fraction`)
NEAR_THRESHOLD_DARKNESS_RATIO = 1.5
#: an automatic run above :data:`MIN_DMV_DETECTABILITY` still warns when at least this fraction of its
#: DMVs, and at least :data:`MIN_DMVS_JUDGED` of them, are near the detection threshold (round 21): the
#: darkness of the DMVs found is then cut off by the threshold, and the fainter ones were missed.  Of
#: 135 phantom cases of both generators none reached it above index 2.3; of 60 project phantoms with
#: fainter veins it flagged the five preterm ones above index 2.3 that found 0.39-0.60 of their DMVs
MAX_NEAR_THRESHOLD_FRACTION = 0.5
MIN_DMVS_JUDGED = 5
#: an automatic run warns when it finds fewer DMVs than this in a hemisphere (round 27): on every project
#: phantom it found >= 9 per hemisphere (preterm) and >= 19 at term; a slab resampled onto a rotated grid,
#: its field of view then bounded by a slanted border of zeros, found none, without any other warning
MIN_DMVS_PER_HEMISPHERE = 3


def near_threshold_fraction(darkness: np.ndarray, needed: float) -> float | None:
    """Fraction of the DMVs whose centreline darkness (1 - mean normalised intensity) is less than
    :data:`NEAR_THRESHOLD_DARKNESS_RATIO` x ``needed``, the darkness a DMV needs; None without DMVs."""
    darkness = np.asarray(darkness, float)
    if darkness.size == 0 or needed <= 0:
        return None
    return round(float(np.mean(darkness < NEAR_THRESHOLD_DARKNESS_RATIO * float(needed))), 3)


def detectability(vein_contrast: float, n_resolved: int, noise_sd: float, spacing_mm, *,
                  near_threshold: float | None = None, n_dmvs: int = 0) -> dict[str, Any]:
    """DMV detectability index of a scan: ``(c / sigma) x (0.6 mm / largest voxel side)``, the
    contrast-to-noise per voxel of a 0.6 mm DMV lying in the slice plane (``c``: the scan's vein
    contrast from the resolved width fits, a fraction of tissue; ``sigma``: the noise SD of the
    normalised image; a thin vein fills about 0.6 mm of a thicker voxel).  None (not judged)
    with fewer than 3 resolved veins or no noise estimate.  ``near_threshold``: the
    :func:`near_threshold_fraction` of the scan's ``n_dmvs`` DMVs."""
    largest = float(np.max(spacing_mm))
    index = None
    if n_resolved >= 3 and noise_sd > 0:
        index = round(float(vein_contrast) / float(noise_sd) * 0.6 / largest, 2)
    return {"index": index, "vein_contrast": round(float(vein_contrast), 4), "resolved_veins": int(n_resolved),
            "noise_sd": round(float(noise_sd), 4), "largest_voxel_mm": round(largest, 3),
            "minimum_reliable": MIN_DMV_DETECTABILITY, "dmvs": int(n_dmvs),
            "dmv_near_threshold_fraction": near_threshold}


def detection_warnings(det: dict[str, Any]) -> list[str]:
    """Warnings on the automatic DMV detection of a scan from its :func:`detectability`."""
    if det["index"] is None:
        return [f"DMV detectability not judged: only {det['resolved_veins']} veins resolved by the width fit "
                f"(or no noise estimate); the counts may be unreliable"]
    if det["index"] < MIN_DMV_DETECTABILITY:
        return [f"DMV detectability index {det['index']:.2f} < {MIN_DMV_DETECTABILITY} (vein contrast "
                f"{det['vein_contrast']:.2f} / noise SD {det['noise_sd']:.3f}, {det['largest_voxel_mm']:.1f} mm "
                f"voxels): thin DMVs are near the noise; on phantoms below {MIN_DMV_DETECTABILITY} the automatic "
                f"detection found 6-86 % of the DMVs, so the counts are likely too low -- check the "
                f"segmentation, or use thinner slices / higher SNR"]
    fraction = det.get("dmv_near_threshold_fraction")
    if fraction is not None and det.get("dmvs", 0) >= MIN_DMVS_JUDGED and fraction >= MAX_NEAR_THRESHOLD_FRACTION:
        return [f"{100 * fraction:.0f} % of the {det['dmvs']} DMVs found are barely darker than a DMV must be "
                f"(< {NEAR_THRESHOLD_DARKNESS_RATIO} x the darkness threshold): the veins are faint for this scan's "
                f"noise and voxel size, fainter DMVs were likely missed and the counts are likely too low (on "
                f"phantoms such scans found 39-60 % of their DMVs) -- check the segmentation"]
    return []


def dmv_count_warnings(summary: dict[str, Any]) -> list[str]:
    """Warnings on an automatic run that found fewer than :data:`MIN_DMVS_PER_HEMISPHERE` DMVs in a
    hemisphere (the patient's side)."""
    return [f"only {summary[f'dmv_count_{side}']} DMV(s) found in the patient's {side} hemisphere (fewer than "
            f"{MIN_DMVS_PER_HEMISPHERE}): the counts are unlikely to be right -- check that the image is an SWI "
            f"magnitude (not a T1 or phase image), that the field of view covers the periventricular white "
            f"matter, the image quality and the segmentation"
            for side in ("left", "right") if summary[f"dmv_count_{side}"] < MIN_DMVS_PER_HEMISPHERE]


def field_of_view_warnings(cut_faces: list[str]) -> list[str]:
    """Warning for a field of view that cuts through the brain (``cut_faces``: the patient-side
    names of those faces, :data:`.masks.CANONICAL_FACE_NAMES`)."""
    if not cut_faces:
        return []
    return [f"the field of view cuts through the brain at its {' and '.join(cut_faces)} "
            f"face{'s' if len(cut_faces) > 1 else ''}: veins beyond it are not imaged, so DMV counts cover "
            f"only the imaged part of the brain, and a vein crossing the cut is measured on its imaged part "
            f"(the cut is not taken for brain surface: the depth rules measure the depth below the brain "
            f"surface inside the field of view)"]


#: a run whose ventricle mask holds less than this (mm^3) warns (round 30): the DMV rules judge each
#: line by its course from the ventricle wall, so DMVs starting where no ventricle was found are missed
MIN_VENTRICLES_MM3 = 500.0


def ventricle_warnings(ventricles_mm3: float, *, given: bool) -> list[str]:
    """Warning for a ventricle mask smaller than :data:`MIN_VENTRICLES_MM3` (``given``: the
    user's mask, else the automatic one of :func:`.masks.csf_masks`)."""
    if ventricles_mm3 >= MIN_VENTRICLES_MM3:
        return []
    source = "the ventricle mask given holds" if given else "the lateral and third ventricles found hold"
    return [f"{source} only {ventricles_mm3 / 1000.0:.2f} mL: DMVs are recognised by their course out from the "
            f"ventricle wall, so DMVs are missed where no ventricle is marked -- check the ventricles overlay"
            + ("" if given else " (slit or collapsed ventricles; a ventricle mask can be given)")]


def masked_data_warnings(masked_mm3: float) -> list[str]:
    """Warning for exact zeros inside the brain (:func:`.masks.zeros_inside_brain`)."""
    if masked_mm3 <= 0:
        return []
    return [f"{masked_mm3:.0f} mm^3 inside the brain are exactly 0 (masked or missing data, not tissue): "
            "veins there are not seen, so DMV counts cover the rest of the brain"]


def _scanner_psf(ctx: _Context, params: VesselParams) -> tuple[float, dict]:
    """(extra point-spread sigma in mm for the width fits, its provenance): the given
    ``params.psf_extra_sigma_mm``, or the estimate from the ventricle walls (:mod:`.psf`)."""
    from .psf import estimate_extra_psf_sigma_mm

    if params.psf_extra_sigma_mm is not None:
        return float(params.psf_extra_sigma_mm), {"extra_sigma_mm": float(params.psf_extra_sigma_mm),
                                                  "source": "given"}
    t0 = time.perf_counter()
    est = estimate_extra_psf_sigma_mm(ctx.norm, ctx.ventricles, ctx.swi.spacing_mm)
    ctx.timings["psf_s"] = time.perf_counter() - t0
    if est is None:
        return 0.0, {"extra_sigma_mm": 0.0, "source": "none: too few ventricle walls to estimate it"}
    return est.extra_sigma_mm, {**est.as_dict(), "source": "ventricle walls"}


@dataclass
class VesselAnalysis:
    """Result of :func:`run_vessel_analysis` / :func:`measure_vessel_mask`."""

    vessel_labels: Volume                      #: int32 vessel id per voxel, SWI grid
    vessels: pd.DataFrame                      #: one row per vessel (VESSEL_COLUMNS)
    centerlines: dict[int, np.ndarray]         #: vessel id -> (N, 3) RAS mm, step <= 0.5 mm
    summary: dict[str, Any]                    #: SUMMARY_KEYS (+ "provenance")
    minip: Volume                              #: minimum-intensity-projection slab volume
    brain_mask: Volume
    ventricles: Volume
    region_labels: Volume                      #: region+side value per vessel voxel
    region_table: list[tuple[int, str, tuple[float, float, float]]]
    provenance: dict[str, Any]
    swi: Volume | None = None                  #: the input (for overlays)
    #: automatic runs: the lines the DMV scorer judged (:mod:`.dmvscore`), one row per vessel id:
    #: its FEATURES, ``region_before`` (the rules' region before the veto) and ``dmv_probability``
    dmv_scores: pd.DataFrame | None = None


# ----------------------------------------------------------------------------- input checks
def _to_volume(swi) -> Volume:
    if isinstance(swi, Volume):
        return swi
    raise InputError(f"SWI: expected a Volume (array + affine), got {type(swi).__name__}")


#: an SWI magnitude is >= 0 (the modulus of a complex signal); more than this fraction of its
#: non-zero voxels below 0, reaching below -:data:`MAX_NEGATIVE_DEPTH` x its largest |value|, is a
#: signed image: a phase image (wrapped to -pi..pi or -4096..4095: 40-50 % of its voxels are
#: negative) or an intensity-shifted one (z-scored: about half).  A magnitude resampled with an
#: interpolator that undershoots at sharp edges stays below it (the term 3 T and 1.5 T phantoms
#: turned 10-12 degrees with SimpleITK's Lanczos, Hamming-sinc and B-spline: 1.3-3.1 % negative,
#: down to -0.17 to -0.22 x the maximum; round 35)
MAX_NEGATIVE_FRACTION = 0.2
MAX_NEGATIVE_DEPTH = 0.05


#: a given brain mask is closed by a ball of this radius (mm) for the depth below the brain surface
#: (``masks.closed_mask``): a mask of brain tissue without the CSF of the interhemispheric fissure and
#: the cisterns put the lateral ventricles 4 mm below its surface, and no ventricle passed the depth
#: rules (round 36, the MNI152-based phantom with its own brain mask given)
GIVEN_MASK_CLOSING_MM = 3.0


def validate_swi(swi: Volume) -> None:
    """Raise InputError for unusable SWI (see ``imageio.validate_scalar_volume``), and for a
    signed image (:data:`MAX_NEGATIVE_FRACTION`: a phase image, not the magnitude)."""
    if not isinstance(swi, Volume):
        raise InputError(f"SWI: expected a Volume, got {type(swi).__name__}")
    validate_scalar_volume(swi, "SWI")
    a = swi.array
    lowest = float(a.min())
    if lowest < 0:
        negative = int(np.count_nonzero(a < 0))
        fraction = negative / max(1, int(np.count_nonzero(a)))
        if fraction > MAX_NEGATIVE_FRACTION and -lowest > MAX_NEGATIVE_DEPTH * max(-lowest, float(a.max())):
            raise InputError(
                f"SWI: {100 * fraction:.0f} % of the non-zero voxels are negative (down to {lowest:g}), but an SWI "
                "magnitude image is >= 0: this looks like a phase image (or an intensity-shifted one, e.g. "
                "z-scored) -- give the magnitude or the processed SWI series")


#: :func:`deep_dark_blobs_mm3` measures the depth on the brain mask filled slice by slice when that
#: filling adds at least this volume (mm^3)
SLICE_HOLES_MIN_MM3 = 300.0
#: :func:`deep_dark_blobs_mm3` counts the dark blobs of at least this volume (mm^3) each (300 before
#: round 30, when the blobs alone refused a scan)
DARK_BLOB_MIN_MM3 = 100.0
#: deep dark blobs totalling more than this (mm^3) in a scan without veins are a T1's dark CSF
#: (:func:`t1_refusal`; 800 mm^3 of blobs >= 300 mm^3 before round 30, which let term T1s run) ...
T1_DARK_BLOBS_MM3 = 200.0
#: ... and in a scan with veins, more than this (mm^3) is a dark region worth a warning (a haemorrhage)
DARK_REGION_WARNING_MM3 = 800.0
#: :func:`deep_dark_blobs_mm3` counts the voxels below this fraction of the tissue signal (after 1.5 mm
#: smoothing) as dark CSF (0.5 before round 35: the term 1.5 T phantom's T1, whose ventricles lie
#: between 0.5 and 0.6, then had no deep blob on 3 of 4 seeds and ran; 866 SWI phantoms of both
#: generators have no deep blob below 0.7)
T1_DARK_CSF_LEVEL = 0.6
#: ... and below this one in a field of view cropped inside the head, where the deep region is the
#: middle of the array rather than the brain 15 mm below its surface: SWI phantoms cut to 60 x 60 x
#: 40 mm there hold up to 868 mm^3 below 0.6 (their deep grey matter, read against a tissue signal
#: normalised without a brain outline) and none below 0.5
CROPPED_DARK_CSF_LEVEL = 0.5


def t1_refusal(dark_mm3: float, dmv_counts: tuple[int, int]) -> None:
    """Refuse as a T1-weighted image a scan with more than :data:`T1_DARK_BLOBS_MM3` of deep dark
    blobs (:func:`deep_dark_blobs_mm3`) in which fewer than :data:`MIN_DMVS_PER_HEMISPHERE` DMVs are
    found in each hemisphere (``dmv_counts``: left, right); automatic runs only (a given mask is
    measured as drawn, with the dark-region warning).

    The blobs alone cannot tell a T1's dark ventricles from a large deep haemorrhage on an SWI,
    which blooms dark (round 30: a 1.1 mL ellipsoid of 0.15 x the signal painted into the term
    phantom's left ventricle had the SWI refused, and the clinical studies compare neonates with
    haemorrhage); the veins can.  With the refusal off, 12 phantom T1s of three presets, the MNI152
    template and nibabel's adult T1 crop gave 0-2 DMVs (at most 1 per hemisphere), the SWIs with
    such haemorrhages 51-62.  With the veins deciding, the blobs can be counted from smaller
    sizes: 417 SWI phantoms of both generators have no deep dark blob of even 50 mm^3, while the
    small ventricles of the term phantom's T1s (which ran with the old rule) leave 121-1241 mm^3.
    """
    if dark_mm3 > T1_DARK_BLOBS_MM3 and max(dmv_counts) < MIN_DMVS_PER_HEMISPHERE:
        raise InputError(
            f"SWI: the deep CSF is dark ({dark_mm3:.0f} mm^3 of large deep blobs far below the tissue signal) "
            f"and no veins are visible ({dmv_counts[0]} and {dmv_counts[1]} DMVs in the left and right "
            "hemispheres): this looks like a T1-weighted image, not an SWI magnitude (veins dark, CSF bright)")


def dark_region_warnings(dark_mm3: float) -> list[str]:
    """Warning for an SWI with large deep dark blobs that :func:`t1_refusal` did not refuse."""
    if dark_mm3 <= DARK_REGION_WARNING_MM3:
        return []
    return [f"{dark_mm3:.0f} mm^3 deep in the brain are far darker than the tissue in large blobs "
            "(a haemorrhage, or dark CSF if this is not an SWI magnitude): veins inside them are not seen, "
            "and lines along their edges may be counted as veins -- check the overlay"]


def deep_dark_blobs_mm3(norm: np.ndarray, brain: np.ndarray, depth_mm: np.ndarray, spacing, *,
                        cut_faces=(), open_mask: np.ndarray | None = None, masked: np.ndarray | None = None,
                        min_blob_mm3: float = DARK_BLOB_MIN_MM3) -> float:
    """Volume (mm^3) of the large dark blobs deep in the brain: a T1's dark CSF (:func:`t1_refusal`).

    In SWI magnitude the ventricles are brighter than white matter; in a neonatal
    T1 they are the darkest tissue.  Within the deep brain (more than 15 mm from the
    surface, smoothed 1.5 mm) large blobs (>= ``min_blob_mm3`` each) darker than
    :data:`T1_DARK_CSF_LEVEL` x the tissue signal (:data:`CROPPED_DARK_CSF_LEVEL` in a field of
    view cropped inside the head, below): veins are too thin to form such blobs after
    smoothing, a large deep haemorrhage is not.  0.0 when no part of the brain is 15 mm deep.

    ``depth_mm``: :func:`.masks.brain_depth_mm` with every array face a border
    (``open_faces=()``).  ``cut_faces``: the faces where the field of view cuts through the
    brain (:func:`.masks.cut_faces`).  On a slab along S-I (the inferior or superior face cut) a
    T1's dark ventricles reach the cut, so they are no 3-D hole of the brain mask, but each
    axial slice encloses them: the mask is filled slice by slice
    (:func:`.masks.fill_holes_in_slices`) and the deep brain measured below its surface inside
    the slab.  ``open_mask``: the voxels beyond the slanted cuts of a field of view resampled onto
    a rotated grid (:func:`.masks.beyond_cut_planes`), no surface either: a 30 mm T1 slab turned 12
    degrees had no brain 15 mm below its closed outline and ran as an SWI (round 35).  The same
    filling is used on a whole head when it encloses at least
    :data:`SLICE_HOLES_MIN_MM3` more than the 3-D mask: a T1's dark ventricles joined to the
    dark outer CSF are no 3-D hole either (round 28: the preterm phantom's T1, seeds 0 and 2,
    ran as SWI).  A field of view cropped inside the head in-plane (no brain voxel 15 mm deep,
    and most of the array's R-L and A-P faces not air, i.e. above 0.3 x the tissue signal): a
    T1's dark ventricles then reach the array border, so they are neither in the brain mask nor
    holes in it.  The deep region is then the middle of the array, the voxels farther from its
    border than half the largest such distance.  ``masked``: exact zeros inside the brain
    (:func:`.masks.zeros_inside_brain`: masked or missing data); they and the voxels within 3 mm of
    them (the smoothing's reach) are no dark CSF.  (``norm``, ``brain``, ``depth_mm`` and
    ``masked`` are in canonical R, A, S order.)
    """
    import cc3d

    spacing = np.asarray(spacing, float)
    voxel = float(np.prod(spacing))
    si_cuts = tuple(f for f in cut_faces if f[0] == 2)
    in_slices = mk.fill_holes_in_slices(brain, axis=2)
    if si_cuts or open_mask is not None or np.count_nonzero(in_slices & ~brain) * voxel >= SLICE_HOLES_MIN_MM3:
        depth_mm = mk.brain_depth_mm(in_slices, spacing, open_faces=si_cuts, open_mask=open_mask)
    del in_slices
    deep = depth_mm > 15.0
    level = T1_DARK_CSF_LEVEL
    if deep.sum() < 100:
        faces = [norm[0], norm[-1], norm[:, 0], norm[:, -1]]
        if sum(int((f > 0.3).sum()) for f in faces) > 0.5 * sum(f.size for f in faces):
            from_border = mk.brain_depth_mm(np.ones(depth_mm.shape, bool), spacing, open_faces=())
            deep = from_border > 0.5 * float(from_border.max())
            level = CROPPED_DARK_CSF_LEVEL
    if deep.sum() < 100:
        return 0.0
    # smoothing only where it is used: the deep region's box (+ the kernel's reach); the
    # blobs lie in the deep region, so they are found in its box
    box = bounding_box(deep)
    reach = np.ceil(4.0 * 1.5 / spacing).astype(int) + 1
    gbox = tuple(slice(max(0, b.start - int(r)), min(n, b.stop + int(r))) for b, r, n in zip(box, reach, deep.shape))
    sm = filters.gaussian_filter(np.asarray(norm[gbox], np.float32), 1.5 / spacing, mode="reflect")
    sm = sm[inner_box(gbox, box)]

    def big(mask):
        lab = cc3d.connected_components(mask.astype(np.uint8), connectivity=6)
        counts = voxel_counts(lab)[1:]
        return float(counts[counts * voxel >= min_blob_mm3].sum() * voxel)

    dark_csf = deep[box] & (sm < level)
    if masked is not None and masked[gbox].any():
        dark_csf &= mk.distance_to_mask_mm(masked[gbox], spacing)[inner_box(gbox, box)] > 3.0
    return big(dark_csf)


def _mask_arg(mask, swi: Volume, name: str) -> np.ndarray | None:
    if mask is None:
        return None
    return mk.as_array_on_grid(mask, swi, name)


# ----------------------------------------------------------------------------- minIP
def _minip_window(affine: np.ndarray, slab_mm: float) -> tuple[int, int]:
    """(voxel axis closest to S-I, window length in voxels) of :func:`minip_slab`."""
    direction = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    axis = int(np.argmax(np.abs(direction[2])))
    spacing = float(np.linalg.norm(affine[:3, axis]))
    return axis, max(1, int(round(slab_mm / spacing)))


def minip_slab(image: np.ndarray, affine: np.ndarray, slab_mm: float) -> np.ndarray:
    """Sliding minimum intensity projection over ``slab_mm`` along the voxel axis closest to S-I.

    Each voxel holds the minimum over the ``slab_mm`` thick slab centred on it (the
    radiologist's minIP reading of SWI), on the input grid.
    """
    axis, n = _minip_window(affine, slab_mm)
    size = [1, 1, 1]
    size[axis] = n
    return filters.minimum_filter(image, tuple(size), mode="nearest")


def _minip_order_free(canon_affine: np.ndarray, input_affine: np.ndarray, how, slab_mm: float) -> bool:
    """Whether :func:`minip_slab` of the input-order image equals that of the canonical image
    mapped back (``how``: :func:`_reorient`'s ``(perm, flip)``): the same axis (canonical axis
    ``r`` is input axis ``perm[r]``) and a window that a flip leaves alone (an odd length --
    centred -- or no flip of that axis).  The window is a minimum along one axis: a
    transposition does not change it."""
    if how is None:
        return True
    perm, flip = how
    axis, n = _minip_window(canon_affine, slab_mm)
    axis_in, n_in = _minip_window(input_affine, slab_mm)
    return perm[axis] == axis_in and n == n_in and (n % 2 == 1 or not flip[axis])


def _in_input_order(values, how) -> list[float]:
    """Per-axis ``values`` of the canonical grid in the input's voxel-axis order (``how`` from
    :func:`_reorient`; canonical axis ``r`` is input axis ``perm[r]``), rounded for a summary."""
    values = np.asarray(values, float)
    if how is not None:
        values = values[np.argsort(how[0])]
    return [round(float(v), 3) for v in values]


def _box_on_input_grid(values: np.ndarray, box: tuple[slice, ...], shape: tuple[int, ...], how) -> np.ndarray:
    """``from_canonical_order`` of a canonical array of ``shape`` that is 0 outside ``box`` and
    ``values`` inside it, built directly on the input grid (only the box is transposed / flipped)."""
    if how is None:
        out = np.zeros(shape, values.dtype)
        out[box] = values
        return out
    perm, flip = how
    out_shape = [0, 0, 0]
    out_box: list = [None, None, None]
    for r in range(3):
        b = box[r]
        out_shape[perm[r]] = shape[r]
        out_box[perm[r]] = slice(shape[r] - b.stop, shape[r] - b.start) if flip[r] else b
    out = np.zeros(tuple(out_shape), values.dtype)
    out[tuple(out_box)] = from_canonical_order(values, perm, flip)
    return out


# ----------------------------------------------------------------------------- context
@dataclass
class _Context:
    swi: Volume
    norm: np.ndarray
    brain: np.ndarray
    ventricles: np.ndarray
    depth_mm: np.ndarray                    #: depth below the brain surface inside the field of view (its cuts open)
    vent_dist_mm: np.ndarray | None         #: distance to the ventricles (exact where centrelines can lie, see _prepare)
    midline_x: float                        #: x of the mid-sagittal plane in the head's frame (``to_head``)
    labels: np.ndarray | None
    timings: dict
    csf_dist_mm: np.ndarray | None = None   #: distance to CSF other than the ventricles (sulci, cisterns)
    noise_sd: float = 0.0                   #: noise SD of the normalised image (fraction of tissue signal)
    #: tracking of short DMV pieces (automatic runs): seeds tracked, grown lines kept as DMVs
    tracking: dict | None = None
    #: faces of the (canonical) array where the field of view cuts through the brain (:func:`.masks.cut_faces`)
    open_faces: tuple = ()
    #: slanted planes along which the field of view cuts through the brain (:func:`.masks.field_of_view_cut_planes`)
    cut_planes: tuple = ()
    #: volume (mm^3) of the exact zeros inside the brain (:func:`.masks.zeros_inside_brain`)
    masked_mm3: float = 0.0
    #: volume (mm^3) of ``ventricles``, and whether the user gave them
    ventricles_mm3: float = 0.0
    ventricles_given: bool = False
    #: volume (mm^3) of the large deep dark blobs (:func:`deep_dark_blobs_mm3`; 0 with given ventricles)
    dark_deep_blobs_mm3: float = 0.0
    #: RAS mm -> the head's frame (:func:`.masks.head_frame`: identity unless the head is turned in the
    #: scanner), and that frame's provenance
    to_head: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(4))
    head_frame: dict | None = None
    #: voxel size (mm) of the samples the scanner acquired, estimated from the noise: the voxel size
    #: times :func:`.masks.interpolation_factors` (equal to it unless the image was interpolated)
    acquired_spacing_mm: np.ndarray | None = None


def _prepare(swi: Volume, brain_mask, ventricles, labels, params: VesselParams, prog, *,
             extent: np.ndarray | None = None, distance_maps: bool = True) -> _Context:
    """Masks, normalised image and distance maps; ``swi`` and the mask arrays come from
    :func:`_reorient` (already validated and on ``swi``'s grid).  ``distance_maps`` False: the
    two distance maps (read only along centrelines) are not computed (None).  ``extent``: a given vessel
    mask (> 0), where the distance maps must be exact besides the brain."""
    spacing = swi.spacing_mm
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    image = np.asarray(swi.array, np.float32)
    brain = brain_mask
    if brain is None:
        brain = mk.brain_mask(image, spacing)
    brain = brain > 0
    # a field of view resampled onto a rotated grid cuts the brain along slanted planes of zeros: the
    # image is continued beyond them (as the filters continue it beyond an array face) and the brain
    # mask made again on it, within the field of view
    not_imaged = mk.not_imaged_mask(image)
    cut_planes = mk.field_of_view_cut_planes(not_imaged, brain, spacing)
    beyond_cuts = None
    if cut_planes:
        image = mk.extend_beyond_cut_planes(image, not_imaged, cut_planes, spacing)
        if brain_mask is None:
            brain = mk.brain_mask(image, spacing) & ~not_imaged
        beyond_cuts = mk.beyond_cut_planes(brain, cut_planes, spacing)
    del not_imaged
    if brain.sum() < 100:
        raise InputError("SWI: no brain found (brain mask has fewer than 100 voxels)")
    # exact zeros inside the brain: masked or missing data, not tissue (nor dark CSF, nor noise)
    masked = mk.zeros_inside_brain(image, brain, spacing)
    timings["brain_mask_s"] = time.perf_counter() - t0
    prog.update(0.05, "brain mask")
    # one worker thread beside this one: the midline (from the brain mask alone; the CSF masks need
    # it) beside the normalisation, then the side steps beside the CSF masks
    with ThreadPoolExecutor(1) as pool:
        midline = pool.submit(mk.head_frame, brain, swi.affine)
        t0 = time.perf_counter()
        norm = mk.normalise_intensity(image, brain, spacing)
        # the ventricles and the vessel rules judge the depth below the brain surface inside the field
        # of view: where it cuts through the brain (an array face, or a slanted cut of a rotated grid)
        # is no surface, or a slab that cuts the ventricles finds none (round 18) and the DMVs near the
        # cut are lost (round 29); the T1 check and the noise estimate keep every face as surface
        open_faces = mk.cut_faces(brain)
        # a given mask of brain tissue leaves the fissures and cisterns out: the depth is taken below
        # the surface of the mask closed over them, as the automatic mask (which holds that CSF) has it
        surface = (brain if brain_mask is None or not GIVEN_MASK_CLOSING_MM
                   else mk.closed_mask(brain, spacing, GIVEN_MASK_CLOSING_MM))
        depth = mk.brain_depth_mm(surface, spacing, open_faces=())
        vent_depth = (depth if not (open_faces or cut_planes)
                      else mk.brain_depth_mm(surface, spacing, open_faces=open_faces, open_mask=beyond_cuts))
        if surface is not brain:
            depth, vent_depth = depth * brain, vent_depth * brain
        del surface
        timings["normalise_s"] = time.perf_counter() - t0
        vent = ventricles
        check_contrast = ventricles is None     # (fixed here: `vent` is reassigned below)

        def side_steps() -> tuple[float, np.ndarray, float]:
            # independent of the CSF masks: run on the worker thread beside them (their filters and
            # labelling release the GIL); a T1 is refused once the DMVs are counted (t1_refusal)
            dark = (deep_dark_blobs_mm3(norm, brain, depth, spacing, cut_faces=open_faces, open_mask=beyond_cuts,
                                        masked=masked)
                    if check_contrast else 0.0)
            deep = (depth > 5.0) & ~masked
            interpolation = mk.interpolation_factors(norm, deep)
            return mk.noise_sd(norm, deep, spacing, interpolation), np.asarray(spacing, float) * interpolation, dark

        side = pool.submit(side_steps)
        try:
            to_head, mid, head_info = midline.result()

            def smoothed_noise_sd(sigma_mm: float) -> float:
                # the noise SD of `norm` after that smoothing, on the acquired voxels (waits for the side steps)
                noise_sd, acquired_spacing, _ = side.result()
                return noise_sd * mk.smoothed_noise_factor(acquired_spacing, sigma_mm)

            auto_vent, other_csf = mk.csf_masks(norm, brain, spacing, depth_mm=vent_depth,
                                                affine=to_head @ swi.affine, midline_x_mm=mid,
                                                smoothed_noise_sd=smoothed_noise_sd)
            vent = auto_vent if vent is None else vent > 0
            other_csf &= ~vent
            lab = labels
            if lab is not None:
                lab = np.asarray(lab).astype(np.int32)
            prog.update(0.1, "ventricles")
            # the distance maps are read only along vessel centrelines: inside the brain (the
            # segmentation's region) or the given vessel mask; exact there, 1e3 mm (far) elsewhere
            vdist = csf_dist = None
            if distance_maps:
                read = brain if extent is None else brain | (np.asarray(extent) > 0)
                vdist = mk.distance_to_mask_mm(vent, spacing, within=read)
                csf_dist = mk.distance_to_mask_mm(other_csf, spacing, within=read)
        except Exception:
            side.result()   # an error of the side steps reports first, as when run in order
            raise
        noise, acquired_spacing, dark = side.result()
    return _Context(swi, norm, brain, vent, vent_depth, vdist, mid, lab, timings, csf_dist, noise,
                    open_faces=open_faces, cut_planes=cut_planes,
                    masked_mm3=float(np.count_nonzero(masked) * np.prod(spacing)),
                    ventricles_mm3=float(np.count_nonzero(vent) * np.prod(spacing)), ventricles_given=ventricles is not None,
                    dark_deep_blobs_mm3=dark, to_head=to_head, head_frame=head_info,
                    acquired_spacing_mm=acquired_spacing)


# ----------------------------------------------------------------------------- measurement
def _measure(ctx: _Context, vessel_mask: np.ndarray, params: VesselParams, prog, *, method: str,
             t_start: float, given_ids: bool = False, out_grid: tuple[Volume, Any] | None = None,
             previous: PreviousRun | None = None) -> VesselAnalysis:
    """Vessels, centrelines, measurements and output volumes.  ``out_grid``: ``(input SWI,
    how)`` from :func:`_reorient`: the output volumes, the grid in the provenance and
    ``analysis.swi`` are then those of the input (the analysis ran in canonical order).
    ``previous`` (given ids only; on this grid): the run the labels were edited from
    (:meth:`PreviousRun.split`).  A vessel it kept is measured as there: its centreline is used
    as it is instead of one traced through its voxels, and its region and side are not judged
    again.  An edited vessel keeps the stretches of its centreline still on its voxels
    (:func:`.skeleton.paths_from_labels`)."""
    swi = ctx.swi
    spacing = swi.spacing_mm
    t0 = time.perf_counter()
    kept: dict[int, tuple[np.ndarray, tuple[str, str]]] = {}
    if given_ids:
        guides: dict[int, np.ndarray] = {}
        if previous is not None:
            kept, guides = previous.split(vessel_mask)
        inv_affine = np.linalg.inv(swi.affine)
        guides_ijk = {vid: p @ inv_affine[:3, :3].T + inv_affine[:3, 3] for vid, p in guides.items()}
        paths = paths_from_labels(vessel_mask, spacing, guides=guides_ijk,
                                  previous_labels=None if previous is None else previous.labels)
    else:
        paths = split_vessels(vessel_mask > 0, spacing, min_spur_mm=params.min_spur_mm,
                              min_path_mm=params.min_vessel_length_mm, junction_angle_deg=params.junction_angle_deg)
    ctx.timings["split_s"] = time.perf_counter() - t0
    # the minIP needs only the SWI, the point-spread estimate only the normalised image and the
    # ventricles: on a thread (filter passes, interpolation and BLAS, which release the GIL) beside
    # the centreline work below (single-threaded Python for the most part)
    # (the estimate first: the widths need it, the minIP waits until the end)
    pool = ThreadPoolExecutor(1)
    psf_job = pool.submit(_scanner_psf, ctx, params)
    swi_in, how = out_grid if out_grid is not None else (swi, None)
    minip_in_order = _minip_order_free(swi.affine, swi_in.affine, how, params.minip_slab_mm)
    minip_src = swi_in if minip_in_order else swi
    minip_job = pool.submit(minip_slab, np.asarray(minip_src.array, np.float32), minip_src.affine,
                            params.minip_slab_mm)
    prog.update(0.6, "centrelines")
    t0 = time.perf_counter()
    raw = {vid: np.asarray(p, float) @ swi.affine[:3, :3].T + swi.affine[:3, 3]
           for vid, p in paths.paths_ijk.items()}
    # the relabelling below (joins, dropped pieces, voxel counts, region values) only touches
    # labelled voxels: it runs on their bounding box, put back into whole volumes at the end
    lbox = bounding_box(vessel_mask > 0)     # holds every labelled voxel
    if any(b.stop <= b.start for b in lbox):
        lbox = tuple(slice(0, 1) for _ in lbox)
    labels = paths.labels[lbox].copy()
    del paths       # frees the whole-volume labels
    inv = np.linalg.inv(swi.affine)
    box_affine = _box_affine(swi.affine, lbox)     # voxel -> RAS of `labels`, which holds the box lbox

    def darkness_of(lines: dict[int, np.ndarray]) -> dict[int, float]:
        """1 - mean normalised intensity along each polyline (RAS mm): how much darker than tissue."""
        values = ms.sample_along_lines({"norm": ctx.norm}, inv, lines)["norm"]
        return {vid: 1.0 - float(np.mean(v)) for vid, v in values.items()}

    def darkness(points_ras: np.ndarray) -> float:
        return darkness_of({0: points_ras})[0]

    def not_zigzag(first: np.ndarray, second: np.ndarray) -> bool:
        # a join must not make a line much more tortuous than its parts (a zig-zag of two veins)
        t = ms.cl.tortuosity(np.vstack([first, second]))
        return bool(t <= max(ms.cl.tortuosity(first), ms.cl.tortuosity(second)) + params.merge_max_tortuosity_gain)

    # the slice decisions follow the voxel the scanner acquired (an interpolated grid is finer)
    acquired = ctx.acquired_spacing_mm
    slice_axis = int(np.argmax(acquired))
    slice_dir = swi.affine[:3, slice_axis] / float(spacing[slice_axis])
    thick_slices = bool(acquired.max() >= 1.5 * acquired.min())    # largest voxel >= 1.5 x the smallest
    metric = None
    if thick_slices and params.merge_slice_weight != 1.0:
        metric = np.eye(3) - (1.0 - params.merge_slice_weight) * np.outer(slice_dir, slice_dir)
    if params.merge_gap_mm > 0 and not given_ids:
        def gap_ok(a: np.ndarray, b: np.ndarray) -> bool:
            n = max(2, int(np.ceil(np.linalg.norm(b - a) / 0.25)) + 1)
            return darkness(np.linspace(a, b, n)) >= params.merge_gap_darkness

        dark_of = darkness_of({vid: p for vid, p in raw.items() if len(p) >= 2})
        can_join = {vid: vid in dark_of and dark_of[vid] >= params.merge_min_darkness for vid in raw}
        raw, labels = merge_fragments(raw, labels, max_gap_mm=params.merge_gap_mm,
                                      max_angle_deg=params.merge_angle_deg,
                                      max_gap_angle_deg=params.merge_gap_angle_deg, can_join=can_join, gap_ok=gap_ok,
                                      join_ok=not_zigzag, metric=metric)
    centrelines: dict[int, np.ndarray] = {}
    smoothing_mm = max(params.centreline_smoothing_mm, params.centreline_smoothing_voxels * float(acquired.max()))
    # thick slices: stronger smoothing across the slices
    slice_smoothing_mm = params.centreline_slice_smoothing_voxels * float(acquired[slice_axis]) if thick_slices else 0.0

    def smooth(p: np.ndarray) -> np.ndarray:
        return ms.smooth_centreline(p, smoothing_mm=smoothing_mm, step_mm=params.centreline_step_mm,
                                    slice_direction=slice_dir, slice_smoothing_mm=slice_smoothing_mm)

    for vid, p in raw.items():
        centrelines[vid] = kept[vid][0] if vid in kept else smooth(p)
    if params.max_bend_deg is not None and not given_ids:
        # a path turning sharply is two vessels meeting (a V of two DMVs at the wall): cut it
        next_id = max(int(labels.max()), max(centrelines, default=0)) + 1
        split: dict[int, dict[int, np.ndarray]] = {}
        for vid in list(centrelines):
            parts = ms.split_at_bends(centrelines[vid], max_bend_deg=params.max_bend_deg,
                                      span_mm=params.bend_span_mm)
            if len(parts) > 1:
                split[vid] = {vid: parts[0]}
                centrelines[vid] = parts[0]
                for q in parts[1:]:
                    split[vid][next_id] = q
                    centrelines[next_id] = q
                    next_id += 1
        labels = relabel_pieces(labels, box_affine, split)
    # drop noise: pieces still shorter than min_vessel_keep_mm after joining
    short = [vid for vid, p in centrelines.items()
             if len(p) < 2 or ms.cl.arc_length_mm(p) < params.min_vessel_keep_mm]
    if short and not given_ids:
        # ids may exceed labels.max(): a piece cut off at a sharp bend can own no voxel
        lut = np.arange(max(int(labels.max()), max(short)) + 1, dtype=np.int32)
        lut[short] = 0
        labels = relabelled(labels, lut)
        for vid in short:
            del centrelines[vid]
    vbox = bounding_box(ctx.ventricles)
    vent_idx = np.argwhere(ctx.ventricles[vbox]) + np.array([b.start for b in vbox])
    head_affine = ctx.to_head @ swi.affine      # voxel -> the head's frame (RAS unless the head is turned)
    foramen_y = foramen_y_mm(vent_idx @ head_affine[1, :3] + head_affine[1, 3], params.rules.foramen_fraction)
    dmv_but_short: set[int] = set()     # seeds for the tracking below
    radial: dict[int, float] = {}
    classes = classify_vessels(centrelines, swi.affine, vent_dist_mm=ctx.vent_dist_mm, depth_mm=ctx.depth_mm,
                               midline_x=ctx.midline_x, foramen_y_mm=foramen_y, labels=ctx.labels,
                               rules=params.rules, csf_dist_mm=ctx.csf_dist_mm, dmv_but_short=dmv_but_short,
                               radial_out=radial, to_head=ctx.to_head)
    dmv_like = dmv_but_short | {vid for vid, (region, _) in classes.items() if region == "dmv"}
    # a DMV (and a named deep vein: thalamic, anterior caudate, internal cerebral) must be
    # long enough and clearly dark along its centreline; short faint pieces are noise (a DMV's
    # length is a region rule, already applied by classify_vessels)
    # a path picked through noise is dark by about one noise SD: the darkness a vein needs grows with the noise
    min_darkness = _darkness_needed(params, ctx.noise_sd, params.dmv_darkness_noise_factor)
    dmv_min_darkness = _dmv_min_darkness(params, ctx.noise_sd)
    too_faint: set[int] = set()     # DMVs by the region rules refused by the darkness rule alone
    for vid, (region, side) in list(classes.items()):
        if region != "other":
            p = centrelines[vid]
            too_short = region != "dmv" and ms.cl.arc_length_mm(p) < params.min_named_vein_length_mm
            need = dmv_min_darkness(p, radial[vid]) if region == "dmv" else min_darkness
            if too_short or darkness(p) < need:
                classes[vid] = ("other", side)
                if region == "dmv":
                    too_faint.add(vid)
    prev_fitted = previous.fitted if previous is not None else None
    for vid in kept.keys() & classes.keys():
        # a kept named vein is fitted whatever the rules now say (its kept class is set again
        # after the width rules below); a kept `other` is fitted when that run fitted it (a DMV it
        # refused after the fit), or without that record when the rules make it a candidate (its
        # fit then counts in the scan's vein contrast, as it did)
        if kept[vid][1][0] != "other" or (prev_fitted is not None and vid not in prev_fitted):
            classes[vid] = kept[vid][1]
    if params.track_max_mm > 0 and method == "automatic":
        # not for a given mask: what the user drew (or corrected) is measured as drawn
        seeds = {vid: centrelines[vid] for vid in sorted(dmv_like) if classes[vid][0] == "other"}
        labels = _grow_dmv_pieces(ctx, seeds, centrelines, classes, labels, box_affine, params, smooth=smooth,
                                  darkness_of=darkness_of, min_darkness=dmv_min_darkness, foramen_y=foramen_y)
    if params.dmv_join_gap_mm > 0 and not given_ids:
        # one DMV split into collinear pieces (at a junction with a noise branch, or by a
        # faint stretch) that each passed the DMV rules: join them so it counts once
        dmv_lines = {vid: p for vid, p in centrelines.items() if classes[vid][0] == "dmv"}
        joined, labels = merge_fragments(dmv_lines, labels, max_gap_mm=params.dmv_join_gap_mm,
                                         max_angle_deg=params.dmv_join_angle_deg,
                                         max_gap_angle_deg=params.dmv_join_gap_angle_deg, join_ok=not_zigzag,
                                         metric=metric)
        for vid in set(dmv_lines) - set(joined):
            del centrelines[vid], classes[vid]
        for vid, p in joined.items():
            if len(p) != len(dmv_lines[vid]) or not np.array_equal(p, dmv_lines[vid]):
                centrelines[vid] = smooth(p)
    if params.wall_path_cost_power > 0 and method == "automatic":
        labels = _join_thalamic_pieces(ctx, centrelines, classes, labels, box_affine, params, smooth=smooth)
    if params.trim_hooks and not given_ids:
        for vid, (region, _side) in classes.items():
            if region == "dmv":
                centrelines[vid] = ms.trim_end_hooks(centrelines[vid], max_trim_mm=params.hook_length_mm,
                                                     min_angle_deg=params.hook_angle_deg)
    # the faint DMVs still `other` (not grown, joined or absorbed) are fitted, and judged by the DMV
    # width rules and then the scorer (faint_dmv_rescue_probability)
    faint_dmvs = ({vid for vid in too_faint if vid in centrelines and classes[vid][0] == "other"}
                  if method == "automatic" and params.dmv_min_probability > 0
                  and params.faint_dmv_rescue_probability < 1 else set())
    prog.update(0.7, "widths")
    psf_extra, psf_info = psf_job.result()
    # the width model's voxel: the grid's in-plane (the ventricle-wall estimate of the spread beyond
    # it sees in-plane blur; the acquired in-plane voxel read widths worse, benchmarks/README.md round
    # 19), the acquired slice thickness across thick slices (the estimate does not see across them)
    width_voxel = np.asarray(spacing, float).copy()
    if thick_slices:
        width_voxel[slice_axis] = acquired[slice_axis]
    ids = sorted(centrelines)
    # 0 / 1 bytes, interpolated in float by fit_width (no copy)
    csf = np.ascontiguousarray(ctx.ventricles).view(np.uint8)

    def fit(vid: int):
        wall_fit = classes[vid][0] in params.wall_fit_regions
        return ms.fit_width(ctx.norm, swi.affine, centrelines[vid], patch_mm=params.width_patch_mm,
                            psf_extra_sigma_mm=psf_extra, cross_section_average=params.width_cross_section_average,
                            exclude=csf if wall_fit else None, detrend=wall_fit, voxel_mm=width_voxel)

    # the named veins and the DMVs are fitted, the `other` vessels not (their width: volume / length,
    # below); the fits are independent, and their compiled optimiser and the sampling release the
    # GIL: on threads
    t_fits = time.perf_counter()
    fitted = [vid for vid in ids if classes[vid][0] != "other" or vid in faint_dmvs
              or (prev_fitted is not None and vid in kept and vid in prev_fitted)]
    fit_of: dict[int, Any] = {}
    with ThreadPoolExecutor(filters.THREADS) as fit_pool:
        for n, (vid, f) in enumerate(zip(fitted, fit_pool.map(fit, fitted))):
            fit_of[vid] = f
            if n % 10 == 0:
                prog.update(0.7 + 0.25 * n / max(1, len(fitted)), "widths")
    fits = [fit_of.get(vid) for vid in ids]
    ctx.timings["widths_s"] = time.perf_counter() - t_fits
    faint_fitted = frozenset(faint_dmvs)

    def vein_contrast(fits_now: list) -> float:
        return ms.subject_contrast(fits_now, params.default_vein_contrast, params.vein_contrast_quantile,
                                   params.vein_contrast_max_diameter_mm)

    # the scan's vein contrast: the fits of the vessels reported with a fit (not yet the faint DMVs,
    # which are judged below)
    c_subj = vein_contrast([None if vid in faint_fitted else f for vid, f in zip(ids, fits)])
    # the rules below judge the structure by its fit (a broad or faint dark band is no vein; the
    # DMV width limit on the reported widths let faint wide dark lines through on the independent
    # phantom), except the anterior caudate veins' size limit, which takes the reported width: the
    # reported width of a faint resolved fit is that of its dark area (faint_fit_relative_contrast)
    fit_widths = ms.finalize_widths(fits, c_subj)
    flank: dict[int, float] = {}
    if params.min_wall_vein_flank_contrast > 0:
        for n, vid in enumerate(ids):
            if classes[vid][0] in WALL_VEIN_REGIONS:
                # the ring clear of the vein's own blurred edge: at least one fitted diameter out
                radius = max(params.wall_vein_flank_radius_mm, fit_widths[n])
                flank[vid] = ms.flank_contrast(ctx.norm, inv, centrelines[vid], radius_mm=radius)
    widths = ms.finalize_widths(fits, c_subj, faint_fraction=params.faint_fit_relative_contrast)
    wide_dmvs: set[int] = set()     # fitted wider than params.wide_dmv_mm: the scorer must be surer
    for n, vid in enumerate(ids):
        region = "dmv" if vid in faint_dmvs else classes[vid][0]
        long_dmv = region == "dmv" and ms.cl.arc_length_mm(centrelines[vid]) >= params.long_dmv_mm
        min_rel = params.min_dmv_relative_contrast
        if long_dmv:
            min_rel = min(min_rel, params.long_dmv_relative_contrast)
        if region == "dmv" and not (fit_widths[n] <= params.max_dmv_width_mm and (
                not fits[n].resolved or fits[n].contrast >= min_rel * c_subj)):
            classes[vid] = ("other", classes[vid][1])
            faint_dmvs.discard(vid)
        elif region == "dmv" and fit_widths[n] > params.wide_dmv_mm:
            wide_dmvs.add(vid)
        elif region in WALL_VEIN_REGIONS and not (
                fit_widths[n] <= params.max_wall_vein_width_mm and fits[n].within_bounds
                and (region == "thalamic" or widths[n] <= params.max_anterior_caudate_width_mm)
                and flank.get(vid, np.inf) >= params.min_wall_vein_flank_contrast):
            # a broad dark band along the ventricle wall or the edge of deep grey matter, not a vein
            classes[vid] = ("other", classes[vid][1])
    for vid in kept.keys() & classes.keys():
        classes[vid] = kept[vid][1]
    scores, scorer_info = (_score_dmvs(ctx, centrelines, classes, params, wide_dmvs, faint_dmvs)
                           if method == "automatic" else (None, None))
    if faint_fitted:
        # a faint line left `other` is reported as every `other` vessel (volume / length); the fits of
        # the faint DMVs kept join the scan's vein contrast, as a re-measurement of this run counts them
        fits = [None if vid in faint_fitted and classes[vid][0] == "other" else f for vid, f in zip(ids, fits)]
        if any(classes[vid][0] == "dmv" for vid in faint_fitted):
            c_subj = vein_contrast(fits)
        widths = ms.finalize_widths(fits, c_subj, faint_fraction=params.faint_fit_relative_contrast)
    probability = {} if scores is None else scores["dmv_probability"].to_dict()
    if previous is not None and previous.dmv_probability is not None:
        # a kept vessel is the same line: its probability is that run's (an edited one is not judged)
        probability = {vid: p for vid, p in previous.dmv_probability.items() if vid in kept}
    ctx.timings["measure_s"] = time.perf_counter() - t0
    counts = voxel_counts(labels, minlength=max(ids, default=0) + 1)
    voxel_mm3 = float(np.prod(spacing))
    rows = []
    for vid, w, f in zip(ids, widths, fits):
        pts = centrelines[vid]
        shp = ms.shape_metrics(pts, step_mm=params.centreline_step_mm,
                               curvature_smoothing_mm=params.curvature_smoothing_mm)
        if f is None and shp["length_mm"] > 0:
            # cylinder of the labelled volume over the centreline length
            w = float(2.0 * np.sqrt(counts[vid] * voxel_mm3 / (np.pi * shp["length_mm"])))
        region, side = classes[vid]
        mean = pts.mean(axis=0)
        rows.append({
            "vessel_id": int(vid), "region": region, "side": side,
            "length_mm": shp["length_mm"], "width_mm": w, "tortuosity": shp["tortuosity"],
            "curvature_per_mm": shp["curvature_per_mm"], "n_voxels": int(counts[vid]),
            "volume_mm3": counts[vid] * voxel_mm3, "mean_x_mm": mean[0], "mean_y_mm": mean[1],
            "mean_z_mm": mean[2],
            "width_method": "volume" if f is None else ms.width_method(f, c_subj, params.faint_fit_relative_contrast),
            "dmv_probability": probability.get(vid, np.nan),
        })
    df = pd.DataFrame(rows, columns=list(VESSEL_COLUMNS))
    # DMV rows must have finite length, width and tortuosity: otherwise they are not measurable DMVs
    bad = (df["region"] == "dmv") & ~np.isfinite(df[["length_mm", "width_mm", "tortuosity"]].astype(float)).all(axis=1)
    df.loc[bad, "region"] = "other"
    lut = np.zeros(max(int(labels.max()), int(df["vessel_id"].max()) if len(df) else 0) + 1, np.uint8)
    for r in df.itertuples():
        lut[r.vessel_id] = region_value(r.region, r.side)
    # both label volumes are 0 outside lbox: made on the input grid from their box
    region_arr = _box_on_input_grid(relabelled(labels, lut), lbox, ctx.brain.shape, how)
    labels_out = _box_on_input_grid(labels, lbox, ctx.brain.shape, how)
    summary = summarize(df)
    dmv_ids = [int(v) for v in df.loc[df["region"] == "dmv", "vessel_id"]]
    dmv_lines = {vid: centrelines[vid] for vid in dmv_ids if len(centrelines[vid]) >= 2}
    prog.update(0.97, "minIP")
    minip = minip_job.result()
    pool.shutdown()
    if method == "automatic":
        # a given mask is measured as drawn: it may hold no DMV (the thalamic veins only), and an
        # edited mask of an SWI with a haemorrhage must be measurable (the dark-region warning stays)
        t1_refusal(ctx.dark_deep_blobs_mm3, (summary["dmv_count_left"], summary["dmv_count_right"]))
    provenance = {
        "tool": "neonatal-brain vessels", "version": _lib_version, "method": method,
        "parameters": params.as_dict(), "grid": grid_summary(swi_in),
        "voxel_size_mm": [round(float(s), 6) for s in swi_in.spacing_mm],
        "midline_x_mm": round(float(ctx.midline_x), 3), "head_frame": ctx.head_frame,
        "vein_contrast": round(float(c_subj), 4),
        "noise_sd": round(float(ctx.noise_sd), 4), "min_dmv_darkness": round(float(min_darkness), 4),
        "timings_s": {k: round(v, 3) for k, v in ctx.timings.items()},
        "tracking": ctx.tracking, "psf": psf_info, "dmv_scorer": scorer_info,
        # given labels with a previous run: the vessels measured on that run's centreline and region
        "kept_from_previous_run": len(kept.keys() & set(ids)) if given_ids else None,
        "detectability": detectability(c_subj, len(ms.resolved_contrasts(fits, params.vein_contrast_max_diameter_mm)),
                                       ctx.noise_sd, ctx.acquired_spacing_mm, n_dmvs=len(dmv_ids),
                                       near_threshold=near_threshold_fraction(
                                           np.array(list(darkness_of(dmv_lines).values())), min_darkness)),
        # per voxel axis of the input: grid steps per acquired sample, from the noise (> 1: interpolated)
        "noise_interpolation_factors": _in_input_order(ctx.acquired_spacing_mm / spacing, how),
        "field_of_view_cuts_brain": ([mk.CANONICAL_FACE_NAMES[f] for f in ctx.open_faces]
                                     + [plane.face_name() for plane in ctx.cut_planes]),
        # the slanted cuts in RAS: unit normal (pointing out of the field of view) and offset (mm), n . x = offset
        "field_of_view_cut_planes_ras": [_plane_in_ras(plane, swi) for plane in ctx.cut_planes],
        # exact zeros inside the brain (masked or missing data), mm^3
        "zeros_inside_brain_mm3": round(ctx.masked_mm3, 1),
        # volume of the ventricle mask the DMV rules used (given, or found: :func:`.masks.csf_masks`), mm^3
        "ventricles_mm3": round(ctx.ventricles_mm3, 1),
        # large dark blobs deep in the brain (:func:`deep_dark_blobs_mm3`; 0.0 with given ventricles), mm^3
        "dark_deep_blobs_mm3": round(ctx.dark_deep_blobs_mm3, 1),
        # [start, stop) per input voxel axis of the part analysed when planes of zeros padded the
        # field of view (:func:`_imaged_box`); None: the whole grid
        "imaged_box_ijk": None,
        "run_time_s": round(time.perf_counter() - t_start, 3),
    }
    summary_out = dict(summary)
    summary_out["dmv_detectability_index"] = provenance["detectability"]["index"]
    summary_out["warnings"] = ((detection_warnings(provenance["detectability"]) + dmv_count_warnings(summary)
                                if method == "automatic" else [])
                               + field_of_view_warnings(provenance["field_of_view_cuts_brain"])
                               + masked_data_warnings(ctx.masked_mm3)
                               + ventricle_warnings(ctx.ventricles_mm3, given=ctx.ventricles_given)
                               + dark_region_warnings(ctx.dark_deep_blobs_mm3))
    summary_out["provenance"] = provenance
    prog.update(1.0, "done")
    if not minip_in_order:
        minip = from_canonical_order(minip, *how)
    # 0 / 1 bytes: uint8 views of the bool masks (new arrays of this run), copied only by the reorientation
    brain_out, vent_out = ctx.brain.view(np.uint8), ctx.ventricles.view(np.uint8)
    if how is not None:
        brain_out, vent_out = from_canonical_order(brain_out, *how), from_canonical_order(vent_out, *how)
    return VesselAnalysis(
        vessel_labels=swi_in.with_array(labels_out), vessels=df, centerlines=centrelines,
        summary=summary_out, minip=swi_in.with_array(minip), brain_mask=swi_in.with_array(brain_out),
        ventricles=swi_in.with_array(vent_out), region_labels=swi_in.with_array(region_arr),
        region_table=region_label_table(), provenance=provenance, swi=swi_in, dmv_scores=scores)


def _plane_in_ras(plane: mk.CutPlane, swi: Volume) -> dict:
    """A cut plane in the grid's millimetre frame (:class:`.masks.CutPlane`) in RAS mm."""
    spacing = swi.spacing_mm
    rotation = swi.affine[:3, :3] / spacing
    normal = rotation @ np.asarray(plane.normal)
    on_plane = swi.ijk_to_ras([np.asarray(plane.normal) * plane.offset_mm / spacing])[0]
    return {"normal": [round(float(x), 6) for x in normal], "offset_mm": round(float(normal @ on_plane), 4)}


def _score_dmvs(ctx: _Context, centrelines: dict[int, np.ndarray], classes: dict[int, tuple[str, str]],
                params: VesselParams, wide_dmvs: set[int] = frozenset(),
                faint_dmvs: set[int] = frozenset()) -> tuple[pd.DataFrame, dict]:
    """Features and DMV probability (:mod:`.dmvscore`) of every DMV and of the `other` lines within
    the candidate bounds; a DMV below ``params.dmv_min_probability`` (``wide_dmv_min_probability`` for
    the ``wide_dmvs``) becomes `other`, and a line of ``faint_dmvs`` (`other`: DMVs by the region and
    width rules that only the darkness rule refused) at or above ``params.faint_dmv_rescue_probability``
    (and the wide bar when wide) becomes a DMV (``classes`` changed in place).  Returns the table
    (:attr:`VesselAnalysis.dmv_scores`) and the provenance entry."""
    inv = np.linalg.inv(ctx.swi.affine)
    others = {vid: p for vid, p in centrelines.items() if classes[vid][0] == "other"}
    judged = set(ds.candidate_ids(others, inv_affine=inv, vent_dist_mm=ctx.vent_dist_mm, depth_mm=ctx.depth_mm,
                                  csf_dist_mm=ctx.csf_dist_mm, midline_x=ctx.midline_x, to_head=ctx.to_head))
    judged |= {vid for vid, (region, _) in classes.items() if region == "dmv" and len(centrelines[vid]) >= 2}
    judged |= {vid for vid in faint_dmvs if len(centrelines[vid]) >= 2}
    feats = ds.line_features({vid: centrelines[vid] for vid in sorted(judged)}, norm=ctx.norm, inv_affine=inv,
                             vent_dist_mm=ctx.vent_dist_mm, depth_mm=ctx.depth_mm, csf_dist_mm=ctx.csf_dist_mm,
                             midline_x=ctx.midline_x, noise_sd=ctx.noise_sd, to_head=ctx.to_head)
    feats["region_before"] = [classes[vid][0] for vid in feats.index]
    info: dict[str, Any] = {"min_probability": params.dmv_min_probability,
                            "min_probability_wide": params.wide_dmv_min_probability, "lines_scored": len(feats)}
    try:
        scorer = ds.load_scorer()
    except InputError:
        if params.dmv_min_probability > 0:
            raise
        scorer = None       # veto off and no model (e.g. while fitting one): no probabilities
    feats["dmv_probability"] = scorer.probability(feats) if scorer is not None and len(feats) else np.nan
    vetoed, faint_kept = [], []
    if params.dmv_min_probability > 0:
        for vid, prob in feats["dmv_probability"].items():
            needed = max(params.dmv_min_probability, params.wide_dmv_min_probability if vid in wide_dmvs else 0.0)
            if classes[vid][0] == "dmv" and prob < needed:
                classes[vid] = ("other", classes[vid][1])
                vetoed.append(int(vid))
            elif vid in faint_dmvs and classes[vid][0] == "other" and prob >= max(needed, params.faint_dmv_rescue_probability):
                classes[vid] = ("dmv", classes[vid][1])
                faint_kept.append(int(vid))
    info.update({"model": ds.SCORER_PATH.name if scorer is not None else None,
                 "sha256": scorer.sha256 if scorer is not None else None, "dmvs_vetoed": vetoed,
                 "min_probability_faint": params.faint_dmv_rescue_probability,
                 "faint_dmvs_judged": sorted(int(v) for v in faint_dmvs), "faint_dmvs_kept": faint_kept})
    return feats, info


def _darkness_needed(params: VesselParams, noise_sd: float, noise_factor: float) -> float:
    """max(``min_dmv_darkness``, ``noise_factor`` x the noise SD): the mean darkness along a
    centreline (1 - normalised intensity) a vein needs."""
    return max(params.min_dmv_darkness, noise_factor * noise_sd)


def _dmv_min_darkness(params: VesselParams, noise_sd: float) -> Callable[[np.ndarray, float], float]:
    """(centreline, radial) -> the darkness a DMV needs along its centreline (``min_dmv_darkness``,
    ``dmv_darkness_noise_factor``; ``faint_dmv_*`` for long radial lines)."""
    usual = _darkness_needed(params, noise_sd, params.dmv_darkness_noise_factor)
    faint = _darkness_needed(params, noise_sd, params.faint_dmv_darkness_noise_factor)

    def need(points_ras: np.ndarray, radial: float) -> float:
        if (params.faint_dmv_darkness_noise_factor > 0 and radial >= params.faint_dmv_min_radial
                and ms.cl.arc_length_mm(points_ras) >= params.faint_dmv_min_length_mm):
            return min(usual, faint)
        return usual
    return need


def _grow_dmv_pieces(ctx: _Context, seeds: dict[int, np.ndarray], centrelines: dict[int, np.ndarray],
                     classes: dict[int, tuple[str, str]],
                     labels: np.ndarray, box_affine: np.ndarray, params: VesselParams, *, smooth, darkness_of,
                     min_darkness: Callable[[np.ndarray, float], float], foramen_y: float | None) -> np.ndarray:
    """Grow ``seeds`` (``other`` pieces that the region rules would make DMVs but for their
    length, or that are too faint for the darkness rule) by minimum-intensity tracking.

    In noisy scans with thick slices a thin DMV covered by the segmentation is cut by noise
    branches and slice jumps into skeleton pieces of 2-4.5 mm.  Each such piece (seed) is
    extended from both ends by :func:`.tracking.track_extensions` on the image smoothed as for
    the local contrast; the reference contrast and the stop are fractions of the
    local-contrast gate (``track_contrast_factor``, ``track_max_drop_factor``).  The grown
    line is smoothed like every centreline and cut at sharp bends (``max_bend_deg``: a track
    running on into a crossing vein), keeping the part holding the seed's middle.  It
    becomes a DMV when it passes the region rules and the darkness rule, lies at a median depth
    below the brain surface of at least ``track_min_depth_mm`` or a median tissue depth (nearer
    of the brain surface and non-ventricular CSF) of at least ``track_min_tissue_depth_mm``,
    and neither more
    than half of its points lie within 1 mm of a DMV already kept nor more than half of
    such a DMV's points within 1 mm of it (longest first).  It then absorbs the other
    pieces it covers that way (their voxels get its id), and the unlabelled voxels holding
    its points get its id.  ``centrelines`` and ``classes`` are updated in place; returns
    the labels (``labels``: voxel -> RAS by ``box_affine``).  The later width and contrast
    rules apply to grown DMVs as to all others.
    """
    from scipy.spatial import cKDTree

    from .tracking import track_extensions

    swi = ctx.swi
    t0 = time.perf_counter()
    ctx.tracking = {"seeds": len(seeds), "grown_dmvs": 0}
    if not seeds:
        return labels
    box = _points_box(np.vstack(list(seeds.values())), swi.affine, params.track_max_mm + 3.0, ctx.norm.shape)
    sub_affine = _box_affine(swi.affine, box)
    smoothed = filters.gaussian_filter(np.asarray(ctx.norm[box], np.float32),
                                       params.contrast_smoothing_mm / swi.spacing_mm, mode="nearest")
    allowed = ctx.brain[box] & ~ctx.ventricles[box] & (ctx.depth_mm[box] > params.surface_margin_mm)
    gate = contrast_gate(params, ctx.noise_sd, ctx.acquired_spacing_mm)
    ext = track_extensions(smoothed, sub_affine, seeds, min_contrast=params.track_contrast_factor * gate,
                           max_drop=params.track_max_drop_factor * gate, max_length_mm=params.track_max_mm,
                           search_mm=params.track_search_mm, allowed=allowed)
    grown = {}
    for vid, (before, after) in ext.items():
        if len(before) + len(after) == 0:
            continue
        line = smooth(np.vstack([before[::-1], seeds[vid], after]))
        if params.max_bend_deg is not None:
            parts = ms.split_at_bends(line, max_bend_deg=params.max_bend_deg, span_mm=params.bend_span_mm)
            middle = seeds[vid][len(seeds[vid]) // 2]
            line = min(parts, key=lambda q: float(np.min(np.linalg.norm(q - middle, axis=1))))
        grown[vid] = line
    depths: dict[int, tuple[float, float]] = {}     # median surface and tissue depth, as the DMV rules take them
    radial: dict[int, float] = {}
    grown_classes = classify_vessels(grown, swi.affine, vent_dist_mm=ctx.vent_dist_mm, depth_mm=ctx.depth_mm,
                                     midline_x=ctx.midline_x, foramen_y_mm=foramen_y, labels=ctx.labels,
                                     rules=params.rules, csf_dist_mm=ctx.csf_dist_mm, median_depths=depths,
                                     to_head=ctx.to_head,
                                     radial_out=radial)
    candidates = {vid: p for vid, p in grown.items() if grown_classes[vid][0] == "dmv"
                  and (depths[vid][0] >= params.track_min_depth_mm or depths[vid][1] >= params.track_min_tissue_depth_mm)}
    dark = darkness_of(candidates)
    dmvs = [p for vid, p in centrelines.items() if classes[vid][0] == "dmv"]
    # trees of the DMVs kept: those found before (one tree) and each accepted grown line
    kept_trees = [cKDTree(np.vstack(dmvs))] if dmvs else []

    def within_1mm(points: np.ndarray, tree) -> np.ndarray:
        return np.isfinite(tree.query(points, distance_upper_bound=1.0)[0])

    accepted: dict[int, np.ndarray] = {}
    for vid in sorted(candidates, key=lambda v: (-ms.cl.arc_length_mm(candidates[v]), v)):
        p = candidates[vid]
        if dark[vid] < min_darkness(p, radial[vid]):
            continue
        tree = cKDTree(p)
        on_kept = np.zeros(len(p), bool)     # within 1 mm of any DMV kept
        for t in kept_trees:
            on_kept |= within_1mm(p, t)
        if on_kept.mean() > 0.5 or any(within_1mm(q, tree).mean() > 0.5 for q in dmvs):
            continue
        accepted[vid] = p
        dmvs.append(p)
        kept_trees.append(tree)
        centrelines[vid] = p
        classes[vid] = grown_classes[vid]
    ctx.tracking["grown_dmvs"] = len(accepted)
    ctx.timings["track_s"] = time.perf_counter() - t0
    if not accepted:
        return labels
    return _absorb_into(accepted, centrelines, classes, labels, box_affine)


def _absorb_into(lines: dict[int, np.ndarray], centrelines: dict[int, np.ndarray], classes: dict[int, tuple[str, str]],
                 labels: np.ndarray, box_affine: np.ndarray, lut: np.ndarray | None = None) -> np.ndarray:
    """The ``other`` pieces lying mostly (more than half their points) within 1 mm of one of
    ``lines`` (id -> RAS points, already in ``centrelines``) become part of it: their voxels get
    its id and they leave ``centrelines`` and ``classes``; then the unlabelled voxels holding the
    lines' points get their ids.  ``lut``: a relabelling already decided (old id -> new id),
    applied with it.  Returns the labels (voxel -> RAS by ``box_affine``)."""
    from scipy.spatial import cKDTree

    if lut is None:
        lut = np.arange(int(labels.max()) + 1, dtype=labels.dtype)
    owner = np.concatenate([np.full(len(p), vid) for vid, p in lines.items()])
    tree = cKDTree(np.vstack(list(lines.values())))
    rest = [vid for vid, p in centrelines.items() if classes[vid][0] == "other" and len(p) > 0]
    if rest:
        counts = np.array([len(centrelines[vid]) for vid in rest])
        d, nn = tree.query(np.vstack([centrelines[vid] for vid in rest]), distance_upper_bound=1.0)
        near = np.where(np.isfinite(d), owner[np.minimum(nn, len(owner) - 1)], 0)   # ids are > 0
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        for i in np.flatnonzero(np.add.reduceat(near > 0, starts) > 0.5 * counts):
            ids, k = np.unique(near[starts[i]:starts[i] + counts[i]], return_counts=True)
            k[ids == 0] = 0
            if k.max() > 0.5 * counts[i]:
                vid = rest[i]
                if vid < len(lut):
                    lut[vid] = ids[np.argmax(k)]
                del centrelines[vid], classes[vid]
    labels = relabelled(labels, lut)
    inv = np.linalg.inv(box_affine)
    for vid, p in lines.items():
        ijk = np.rint(p @ inv[:3, :3].T + inv[:3, 3]).astype(np.intp)
        ijk = ijk[np.all((ijk >= 0) & (ijk < labels.shape), axis=1)]
        free = labels[tuple(ijk.T)] == 0
        labels[tuple(ijk[free].T)] = vid
    return labels


def _join_thalamic_pieces(ctx: _Context, centrelines: dict[int, np.ndarray], classes: dict[int, tuple[str, str]],
                          labels: np.ndarray, box_affine: np.ndarray, params: VesselParams, *, smooth) -> np.ndarray:
    """Each side's thalamic pieces joined into one thalamostriate vein (:func:`.wallveins.wall_vein_path`).

    The joined vein keeps the smallest id of its pieces; the pieces' voxels, those of the
    ``other`` pieces lying mostly (more than half their points) within 1 mm of it, and the
    unlabelled voxels on its path get that id.  The thalamic pieces not linked to it are not
    the thalamostriate vein: they become ``other`` (their ids and voxels stay).  The path runs
    in the band outside the ventricles within ``rules.wall_mm`` of them, in the brain, on its
    side of the midline.  ``centrelines`` and ``classes`` are updated in place; returns the
    labels.
    """
    from .wallveins import wall_vein_path

    swi = ctx.swi
    t0 = time.perf_counter()
    lut = np.arange(int(labels.max()) + 1, dtype=labels.dtype)
    new_lines: dict[int, np.ndarray] = {}
    for side, sign in (("left", -1.0), ("right", 1.0)):
        ids = sorted(vid for vid, (region, s) in classes.items() if region == "thalamic" and s == side)
        if len(ids) < 2:
            continue
        pieces = [centrelines[vid] for vid in ids]
        box = _points_box(np.vstack(pieces), swi.affine, 6.0, ctx.norm.shape)
        sub_affine = _box_affine(swi.affine, box)
        # x of the box's voxel centres in the head's frame (the midline plane is x = midline_x there)
        head_row = (ctx.to_head @ sub_affine)[0]
        ii, jj, kk = np.meshgrid(*(np.arange(b.stop - b.start) for b in box), indexing="ij", sparse=True)
        x = head_row[0] * ii + head_row[1] * jj + head_row[2] * kk + head_row[3]
        allowed = (ctx.brain[box] & ~ctx.ventricles[box] & (ctx.vent_dist_mm[box] <= params.rules.wall_mm)
                   & (sign * (x - ctx.midline_x) > 0))
        found = wall_vein_path(ctx.norm[box], sub_affine, pieces, allowed, power=params.wall_path_cost_power)
        if found is None or len(found[0]) < 2:
            continue
        path, joined = found
        members = [ids[n] for n in joined]
        keep = members[0]
        for vid in members[1:]:
            if vid < len(lut):
                lut[vid] = keep
            del centrelines[vid], classes[vid]
        for vid in set(ids) - set(members):
            classes[vid] = ("other", side)
        centrelines[keep] = new_lines[keep] = smooth(path)
    if new_lines:
        labels = _absorb_into(new_lines, centrelines, classes, labels, box_affine, lut)
    ctx.timings["wall_path_s"] = time.perf_counter() - t0
    return labels


def _points_box(points_ras: np.ndarray, affine: np.ndarray, margin_mm: float, shape) -> tuple[slice, ...]:
    """Voxel box (slices, clipped to ``shape``) holding the points with ``margin_mm`` around them."""
    inv = np.linalg.inv(affine)
    ijk = points_ras @ inv[:3, :3].T + inv[:3, 3]
    margin = margin_mm / np.linalg.norm(affine[:3, :3], axis=0)
    lo = np.clip(np.floor(ijk.min(axis=0) - margin), 0, None).astype(int)
    hi = np.minimum(np.ceil(ijk.max(axis=0) + margin).astype(int) + 1, shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def _box_affine(affine: np.ndarray, box: tuple[slice, ...]) -> np.ndarray:
    """Voxel -> RAS affine of the sub-array ``array[box]`` of an array on ``affine``."""
    out = np.array(affine, float, copy=True)
    out[:3, 3] += affine[:3, :3] @ np.array([b.start for b in box], float)
    return out


def _mean_or_none(values) -> float | None:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else None


def _length_weighted_mean_or_none(values, lengths) -> float | None:
    v, w = np.asarray(values, float), np.asarray(lengths, float)
    ok = np.isfinite(v) & np.isfinite(w) & (w > 0)
    return float(np.average(v[ok], weights=w[ok])) if ok.any() else None


def summarize(vessels: pd.DataFrame) -> dict[str, Any]:
    """Per-subject summary (SUMMARY_KEYS) from the per-vessel table; null = not measurable."""
    dmv = vessels[vessels["region"] == "dmv"]
    out: dict[str, Any] = {
        "dmv_count": int(len(dmv)),
        "dmv_count_left": int((dmv["side"] == "left").sum()),
        "dmv_count_right": int((dmv["side"] == "right").sum()),
        "dmv_width_mm": _mean_or_none(dmv["width_mm"]),
        "dmv_tortuosity": _mean_or_none(dmv["tortuosity"]),
        "dmv_curvature_per_mm": _mean_or_none(dmv["curvature_per_mm"]),
    }
    for region, key in (("thalamic", "thalamic_vein_width_mm"), ("anterior_caudate", "anterior_caudate_vein_width_mm")):
        for side in ("left", "right"):
            sel = vessels[(vessels["region"] == region) & (vessels["side"] == side)]
            out[f"{key}_{side}"] = _length_weighted_mean_or_none(sel["width_mm"], sel["length_mm"])
    return out


def _reorient(swi: Volume, masks: dict) -> tuple[Volume, dict, Any]:
    """The SWI (validated, :func:`validate_swi`; and mask arrays on its grid) in canonical voxel
    order (:func:`NeonatalBrainLib.imageio.canonical_axes`).

    A lossless transpose / flip with the matching affine: every step then sees the
    anatomy in the same voxel order whatever the storage order of the file (thinning,
    strided sampling and tie-breaking depend on it), so results are storage-order invariant.
    """
    arrays = {k: (None if m is None else np.asarray(_mask_arg(m, swi, name))) for k, (m, name) in masks.items()}
    canon, (perm, flip) = reorient_to_canonical(swi)
    if perm == (0, 1, 2) and not any(flip):
        return swi, arrays, None
    arrays = {k: (None if a is None else to_canonical_order(a, perm, flip)) for k, a in arrays.items()}
    return canon, arrays, (perm, flip)


def _imaged_box(swi: Volume, must_hold=()) -> tuple[slice, ...] | None:
    """The box of ``swi`` without the planes of exact zeros at its faces
    (:func:`NeonatalBrainLib.imageio.zero_padding_box`: a field of view padded when the scan was
    resampled onto a larger grid), widened to hold the non-zero voxels of the ``must_hold``
    arrays; None when that is the whole grid.  Analysed on the whole grid, such padding would
    be taken for air around the head, and a slab's cut through the brain for its surface.
    ``swi``: validated (:func:`validate_swi`)."""
    box = zero_padding_box(swi.array)
    if box is None:
        return None
    for array in must_hold:
        if not np.any(array):
            continue
        held = zero_padding_box(np.asarray(array))
        if held is None:            # non-zero on every face
            return None
        box = tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(box, held))
    if all(b.start == 0 and b.stop == n for b, n in zip(box, swi.shape)):
        return None
    return box


def _on_imaged_box(run: Callable[..., "VesselAnalysis"], swi: Volume, box: tuple[slice, ...],
                   grid_args: dict[str, tuple[Any, str]], **kwargs) -> "VesselAnalysis":
    """``run(cropped swi, **cropped grid_args, **kwargs)`` on the voxel ``box`` of ``swi``
    (:func:`_imaged_box`), its volumes put back on the input grid (0 outside the box);
    ``provenance.imaged_box_ijk`` records the box in the input's voxel indices."""
    cropped = {k: None if m is None else np.asarray(_mask_arg(m, swi, name))[box] for k, (m, name) in grid_args.items()}
    a = run(crop_volume(swi, box), **cropped, **kwargs)
    a.provenance["grid"] = grid_summary(swi)
    a.provenance["imaged_box_ijk"] = [[b.start, b.stop] for b in box]
    grid = {name: swi.with_array(uncrop_array(getattr(a, name).array, box, swi.shape))
            for name in ("vessel_labels", "minip", "brain_mask", "ventricles", "region_labels")}
    return dataclasses.replace(a, swi=swi, **grid)


@without_numpy_hugepage_advice
def run_vessel_analysis(swi: Volume, *, brain_mask=None, ventricles=None, labels=None,
                        params: VesselParams | None = None, progress=None) -> VesselAnalysis:
    """Fully automatic vessel segmentation and measurement on an SWI magnitude volume.

    ``brain_mask`` / ``ventricles`` / ``labels``: optional arrays or Volumes on the
    SWI grid (computed when absent).  Raises InputError for bad input.
    """
    t_start = time.perf_counter()
    params = checked_params(params)
    if params.dmv_min_probability > 0:
        ds.load_scorer()        # InputError now, before any work, when the model is missing or corrupt
    swi_in = _to_volume(swi)
    validate_swi(swi_in)
    box = _imaged_box(swi_in)
    if box is not None:
        return _on_imaged_box(run_vessel_analysis, swi_in, box,
                              {"brain_mask": (brain_mask, "brain mask"), "ventricles": (ventricles, "ventricle mask"),
                               "labels": (labels, "labels")}, params=params, progress=progress)
    prog = as_progress(progress)
    swi, m, how = _reorient(swi_in, {"brain": (brain_mask, "brain mask"), "vent": (ventricles, "ventricle mask"),
                                     "labels": (labels, "labels")})
    ctx = _prepare(swi, m["brain"], m["vent"], m["labels"], params, prog)
    t0 = time.perf_counter()
    seg = segment_vessels(ctx.norm, ctx.brain, ctx.depth_mm, swi.spacing_mm, params, prog.sub(0.1, 0.5),
                          noise_sd=ctx.noise_sd, acquired_spacing_mm=ctx.acquired_spacing_mm)
    ctx.timings["segment_s"] = time.perf_counter() - t0
    return _measure(ctx, seg, params, prog, method="automatic", t_start=t_start, out_grid=(swi_in, how))


@dataclass
class PreviousRun:
    """What a re-measurement keeps of the run a labelmap was edited from (:func:`measure_vessel_mask`)."""

    labels: np.ndarray                          #: its vessel_labels (vessel id per voxel, SWI grid)
    centerlines: dict[int, np.ndarray]          #: vessel id -> centreline, RAS mm
    regions: dict[int, tuple[str, str]]         #: vessel id -> (region, side)
    #: ids of the vessels whose width that run fitted (``width_method`` not ``volume``): a kept one is
    #: fitted again, the others not, so the scan's vein contrast is that run's.  None (a table
    #: without ``width_method``): a kept ``other`` is fitted when the region rules make it a candidate
    fitted: frozenset[int] | None = None
    #: its ``dmv_probability`` per vessel id (finite values only): a kept vessel keeps it; None: no such column
    dmv_probability: dict[int, float] | None = None

    @classmethod
    def from_rows(cls, labels: np.ndarray, centerlines: dict[int, np.ndarray], rows) -> "PreviousRun":
        """From that run's labels, centrelines and vessel table (a DataFrame or a list of dicts
        with ``vessel_id``, ``region``, ``side`` and, when present, ``width_method`` and
        ``dmv_probability``: ``vessels.csv``, :attr:`VesselAnalysis.vessels`, the Slicer table)."""
        records = rows.to_dict("records") if isinstance(rows, pd.DataFrame) else list(rows)
        regions = {int(r["vessel_id"]): (str(r["region"]), str(r["side"])) for r in records}
        return cls(np.asarray(labels), dict(centerlines), regions, _fitted_ids(records), _probabilities(records))

    @classmethod
    def from_analysis(cls, analysis: VesselAnalysis) -> "PreviousRun":
        return cls.from_rows(analysis.vessel_labels.array, analysis.centerlines, analysis.vessels)

    def split(self, labels: np.ndarray) -> tuple[dict[int, tuple[np.ndarray, tuple[str, str]]], dict[int, np.ndarray]]:
        """``(kept, guides)`` for a labelmap edited from this run (same grid).  ``kept``: ``{id:
        (centreline, (region, side))}`` of the vessels whose voxels in ``labels`` are exactly those
        they had (with a centreline of >= 2 points and a row); ``guides``: ``{id: centreline}`` (RAS
        mm) of the vessels still in ``labels`` whose voxels changed (erased or painted with their id)."""
        labels = np.asarray(labels)
        previous = np.asarray(self.labels)
        if previous.shape != labels.shape:
            raise InputError(f"previous vessel labels: shape {previous.shape}, the mask's is {labels.shape}")
        differ = labels != previous
        changed = set(np.unique(labels[differ]).tolist()) | set(np.unique(previous[differ]).tolist())
        present = set(np.unique(labels).tolist()) - {0}
        lines = {int(vid): np.asarray(p, float) for vid, p in self.centerlines.items()
                 if int(vid) in present and len(p) >= 2}
        kept = {vid: (p, self.regions[vid]) for vid, p in lines.items() if vid not in changed and vid in self.regions}
        guides = {vid: p for vid, p in lines.items() if vid in changed}
        return kept, guides


def _fitted_ids(records: list[dict]) -> frozenset[int] | None:
    """Ids of the rows of a vessel table whose ``width_method`` is a fit (not ``volume``); None
    when the table has no ``width_method``."""
    if not records or any("width_method" not in r for r in records):
        return None
    return frozenset(int(r["vessel_id"]) for r in records if str(r["width_method"]) != "volume")


def _probabilities(records: list[dict]) -> dict[int, float] | None:
    """``{vessel id: dmv_probability}`` of the rows holding a finite one; None without the column."""
    if not records or any("dmv_probability" not in r for r in records):
        return None
    out = {}
    for r in records:
        try:
            value = float(r["dmv_probability"])
        except (TypeError, ValueError):     # empty cell of a string column
            continue
        if np.isfinite(value):
            out[int(r["vessel_id"])] = value
    return out


def edited_vessel_ids(previous_ids: np.ndarray, edited_mask: np.ndarray) -> np.ndarray:
    """Vessel-id labelmap of an edited segmentation (same grid as the run it was edited from).

    ``previous_ids``: that run's ``vessel_labels``; ``edited_mask``: > 0 where the edited
    segmentation holds vessel (any segment).  Voxels the user erased lose their id; voxels
    painted where there was no vessel get new ids, one per connected component
    (26-connectivity), numbered after the largest earlier id.  uint16 when the ids fit, else int32.
    """
    import cc3d

    old = np.asarray(previous_ids).astype(np.int64)
    edited = np.asarray(edited_mask) > 0
    if old.shape != edited.shape:
        raise InputError(f"edited segmentation: shape {edited.shape}, the earlier run's labels {old.shape}")
    new = np.where(edited, old, 0)
    painted = edited & (old == 0)
    if painted.any():
        components = cc3d.connected_components(painted.astype(np.uint8), connectivity=26)
        new = np.where(components > 0, components.astype(np.int64) + int(old.max()), new)
    return new.astype(np.uint16 if new.max() < 65536 else np.int32)


@without_numpy_hugepage_advice
def measure_vessel_mask(swi: Volume, vessel_mask, *, brain_mask=None, ventricles=None, labels=None,
                        params: VesselParams | None = None, progress=None,
                        previous: PreviousRun | None = None) -> VesselAnalysis:
    """Measure a given vessel segmentation (binary, or labels where > 0 = vessel) on the SWI grid.

    No detection.  A binary mask is split into vessels at junctions; a labelmap of
    vessel ids (e.g. an edited ``vessel_labels``) keeps one vessel per label value.
    Every vessel is then re-classified and re-measured, so erasing one vessel in an
    edited labelmap lowers the count by one.

    ``previous``: the run the labelmap was edited from (:class:`PreviousRun`, on the same
    grid).  A vessel whose voxels are exactly those it had there keeps its centreline,
    region and side, so the vessels the user left alone are measured as before: a
    centreline traced through a labelmap's voxels is not the one the automatic run found
    (its tracking and joins label only the voxels on their paths that no other vessel
    holds), and its region was judged on that run's pieces.  The vessels the user edited
    or painted are classified anew; an edited vessel keeps the stretches of its earlier
    centreline that still lie on its voxels, joined with what is traced through the voxels
    painted away from them.
    """
    t_start = time.perf_counter()
    params = checked_params(params)
    swi_in = _to_volume(swi)
    validate_swi(swi_in)        # before the masks are checked against its grid
    held = [_mask_arg(vessel_mask, swi_in, "vessel mask")]
    if previous is not None:
        held.append(_mask_arg(previous.labels, swi_in, "previous vessel labels"))
    box = _imaged_box(swi_in, must_hold=held)
    if box is not None:
        on_box = None if previous is None else dataclasses.replace(previous, labels=held[1][box])
        return _on_imaged_box(measure_vessel_mask, swi_in, box,
                              {"vessel_mask": (held[0], "vessel mask"), "brain_mask": (brain_mask, "brain mask"),
                               "ventricles": (ventricles, "ventricle mask"), "labels": (labels, "labels")},
                              params=params, progress=progress, previous=on_box)
    prog = as_progress(progress)
    swi, m, how = _reorient(swi_in, {"vessels": (vessel_mask, "vessel mask"), "brain": (brain_mask, "brain mask"),
                                     "vent": (ventricles, "ventricle mask"), "labels": (labels, "labels"),
                                     "previous": (None if previous is None else previous.labels,
                                                  "previous vessel labels")})
    vm = m["vessels"]
    if np.issubdtype(vm.dtype, np.floating):
        vm = np.rint(vm)
    vm = np.where(vm > 0, vm, 0).astype(np.int64)
    # a labelmap of vessel ids (several values) keeps its vessels; a binary mask is split
    given_ids = int(vm.max()) > 1
    on_grid = None if previous is None else dataclasses.replace(previous, labels=m["previous"])
    ctx = _prepare(swi, m["brain"], m["vent"], m["labels"], params, prog, extent=vm)
    return _measure(ctx, vm, params, prog, method="given_labels" if given_ids else "given_mask",
                    t_start=t_start, given_ids=given_ids, out_grid=(swi_in, how), previous=on_grid)


@without_numpy_hugepage_advice
def estimate_scanner_psf(swi: Volume, *, brain_mask=None, ventricles=None, progress=None) -> dict[str, Any]:
    """The point-spread estimate an automatic run would use (``provenance.psf`` of
    :func:`run_vessel_analysis` with ``psf_extra_sigma_mm=None``), from the masks step alone
    (brain mask, normalisation, ventricles; no vessel detection).  For a cohort value
    (``neonatal-brain vessels-batch --psf cohort``)."""
    params = VesselParams()
    swi = _to_volume(swi)
    validate_swi(swi)
    box = _imaged_box(swi)
    if box is not None:         # as run_vessel_analysis sees the scan
        brain_mask, ventricles = (None if m is None else np.asarray(_mask_arg(m, swi, name))[box]
                                  for m, name in ((brain_mask, "brain mask"), (ventricles, "ventricle mask")))
        swi = crop_volume(swi, box)
    swi_c, m, _how = _reorient(swi, {"brain": (brain_mask, "brain mask"), "vent": (ventricles, "ventricle mask")})
    ctx = _prepare(swi_c, m["brain"], m["vent"], None, params, as_progress(progress), distance_maps=False)
    return _scanner_psf(ctx, params)[1]


def write_outputs(analysis: VesselAnalysis, out_dir, *, input_path=None):
    """Write the output folder (see :func:`NeonatalVesselsLib.report.write_outputs`)."""
    from .report import write_outputs as _write

    return _write(analysis, out_dir, input_path=input_path)
