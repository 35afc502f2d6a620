"""Automatic deep grey-matter ROIs on a neonatal T1 by atlas registration.

``segment_deep_grey(t1, atlas)`` registers every subject of the atlas to the T1
(:mod:`NeonatalClassifyLib.registration`: rigid -> affine with Mattes mutual
information, then demons in a crop around the deep grey matter), carries each
atlas subject's eight ROI labels onto the T1 grid (per-label linear
interpolation of the one-hot maps, i.e. partial-volume probabilities), sums the
probabilities over atlas subjects (majority vote with soft weights; one subject:
plain argmax) and assigns each voxel the most probable class (background
included).

Output label values are ``NeonatalBrainLib.anatomy.LABEL_VALUES`` (9..16 for the
eight ROIs) whatever values the atlas uses; left = the subject's left = negative
RAS x.  See docs/roi.md for the method, measured accuracy and limitations.
"""
from __future__ import annotations

import argparse
import csv
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from NeonatalBrainLib import anatomy
from NeonatalBrainLib.imageio import InputError, Volume, load_volume, save_volume, validate_scalar_volume
from NeonatalBrainLib.progress import as_progress

from .atlas import DEFAULT_ATLAS, Atlas, load_atlas
from .registration import PreparedImage, RegistrationParameters, crop_grid_in_fixed, prepare, register

#: Largest accepted T1 field of view along any voxel axis (mm).
MAX_FIELD_OF_VIEW_MM = 400.0

#: Output label value -> name of the eight ROIs.
ROI_NAMES: dict[int, str] = {anatomy.LABEL_VALUES[n]: n for n in anatomy.DEEP_GREY_ROIS}


@dataclass
class RoiResult:
    """Deep grey ROIs on the T1 grid.

    ``labels``: integer Volume (uint8, same shape and affine as the T1; 0 = background);
    ``names``: value -> name (``anatomy.LABEL_VALUES``); ``atlas_name``,
    ``atlas_checksum``: which atlas produced it; ``timings``: seconds per stage.
    """

    labels: Volume
    names: dict[int, str]
    atlas_name: str
    atlas_checksum: str
    timings: dict[str, float] = field(default_factory=dict)
    metric_values: list[float] = field(default_factory=list)

    def mask(self, name: str) -> np.ndarray:
        """Boolean mask of one ROI by name (e.g. 'globus_pallidus_left')."""
        value = {n: v for v, n in self.names.items()}.get(name)
        if value is None:
            raise KeyError(f"no ROI named {name!r}; have {sorted(self.names.values())}")
        return self.labels.array == value


# ----------------------------------------------------------------------------- atlas preparation
@dataclass
class _PreparedAtlasSubject:
    prepared: PreparedImage
    roi_box_mm: tuple[np.ndarray, np.ndarray]    # LPS physical box of the 8 ROIs
    onehot: list[tuple[int, object]]             # (output value, sitk float32 one-hot) per ROI


_ATLAS_CACHE: dict[tuple, list[_PreparedAtlasSubject]] = {}


def _prepare_atlas(atlas: Atlas, params: RegistrationParameters) -> list[_PreparedAtlasSubject]:
    from NeonatalBrainLib.imageio import volume_to_sitk

    key = (atlas.checksum, params.affine_spacing_mm)
    if key in _ATLAS_CACHE:
        return _ATLAS_CACHE[key]
    roi_values = atlas.roi_values()  # name -> atlas value
    out = []
    for t1, labels in atlas.subjects:
        prepared = prepare(t1, params)
        lab = labels.array
        roi_all = np.isin(lab, list(roi_values.values())).astype(np.uint8)
        prepared.roi_mask = volume_to_sitk(labels.with_array(roi_all))
        onehot = []
        pts = []
        for name, atlas_value in roi_values.items():
            m = lab == atlas_value
            ijk = np.argwhere(m)
            pts.append(ijk.min(0))
            pts.append(ijk.max(0))
            img = volume_to_sitk(labels.with_array(m.astype(np.float32)))
            onehot.append((anatomy.LABEL_VALUES[name], img))
        ijk = np.array(pts, float)
        lo_i, hi_i = ijk.min(0), ijk.max(0)
        corners = np.array([[a, b, c] for a in (lo_i[0], hi_i[0]) for b in (lo_i[1], hi_i[1])
                            for c in (lo_i[2], hi_i[2])])
        ras = labels.ijk_to_ras(corners)
        lps = ras * np.array([-1.0, -1.0, 1.0])
        box = (lps.min(0), lps.max(0))
        out.append(_PreparedAtlasSubject(prepared=prepared, roi_box_mm=box, onehot=onehot))
    if len(_ATLAS_CACHE) > 4:
        _ATLAS_CACHE.clear()
    _ATLAS_CACHE[key] = out
    return out


# ----------------------------------------------------------------------------- segmentation
def _index_box(t1_sitk, ref) -> tuple[np.ndarray, np.ndarray]:
    """Voxel index box of ``t1_sitk`` covering the grid ``ref`` (clipped to the image)."""
    size = np.array(ref.GetSize())
    corners = [[a, b, c] for a in (0, size[0] - 1) for b in (0, size[1] - 1) for c in (0, size[2] - 1)]
    pts = [ref.TransformContinuousIndexToPhysicalPoint([float(x) for x in c]) for c in corners]
    idx = np.array([t1_sitk.TransformPhysicalPointToContinuousIndex(p) for p in pts])
    lo = np.clip(np.floor(idx.min(0)).astype(int), 0, np.array(t1_sitk.GetSize()) - 1)
    hi = np.clip(np.ceil(idx.max(0)).astype(int), 0, np.array(t1_sitk.GetSize()) - 1)
    return lo, hi


def _head_volume_ml(prepared: PreparedImage) -> float:
    import SimpleITK as sitk

    n = float(sitk.GetArrayViewFromImage(prepared.mask).sum())
    return n * float(np.prod(prepared.mask.GetSpacing())) / 1000.0


def _check_head_size(fixed: PreparedImage, atlas_subject: PreparedImage,
                     lo: float = 0.15, hi: float = 6.0) -> None:
    """InputError unless the head found in the T1 is within [lo, hi] x the atlas head volume."""
    v, ref = _head_volume_ml(fixed), _head_volume_ml(atlas_subject)
    if not lo * ref <= v <= hi * ref:
        raise InputError(
            f"T1: the head found in the image ({v:.0f} ml) is implausible for a neonatal head T1 "
            f"(atlas head {ref:.0f} ml; accepted {lo:g}-{hi:g} x); check the file and its voxel size")


def segment_deep_grey(t1: Volume, atlas: "str | Path | Atlas" = DEFAULT_ATLAS, *, progress=None,
                      params: RegistrationParameters | None = None) -> RoiResult:
    """Segment the eight deep grey-matter ROIs of a neonatal T1 by atlas registration.

    ``t1``: any voxel order, oblique grids and intensity scaling are accepted.
    ``atlas``: a built-in name (``atlas.BUILTIN_ATLASES``), an atlas folder or an
    :class:`~NeonatalClassifyLib.atlas.Atlas`.  ``progress``: Progress, callback or None.
    Returns a :class:`RoiResult` on exactly the T1's grid.
    """
    import SimpleITK as sitk

    from NeonatalBrainLib.imageio import volume_to_sitk

    prog = as_progress(progress)
    params = params or RegistrationParameters()
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    if not isinstance(t1, Volume):
        raise InputError(f"T1: expected a Volume, got {type(t1).__name__}")
    validate_scalar_volume(t1, "T1")
    extent_mm = np.asarray(t1.shape) * t1.spacing_mm
    if extent_mm.max() > MAX_FIELD_OF_VIEW_MM:
        raise InputError(
            f"T1: field of view {np.round(extent_mm).astype(int).tolist()} mm is implausible for a "
            f"neonatal head (> {MAX_FIELD_OF_VIEW_MM:g} mm); check the file and its voxel size")
    prog.update(0.0, "loading atlas")
    atlas = load_atlas(atlas)
    t0 = time.perf_counter()
    subjects = _prepare_atlas(atlas, params)
    timings["atlas_prepare_s"] = time.perf_counter() - t0

    prog.update(0.05, "preparing T1")
    t0 = time.perf_counter()
    fixed = prepare(t1, params)
    timings["prepare_s"] = time.perf_counter() - t0
    _check_head_size(fixed, subjects[0].prepared)

    n = len(subjects)
    regs = []
    for i, subj in enumerate(subjects):
        prog.update(0.1 + 0.75 * i / n, f"registering atlas subject {i + 1}/{n}")
        r = register(fixed, subj.prepared, subj.roi_box_mm, params)
        regs.append(r)
        for k, v in r.timings_s.items():
            timings[k] = timings.get(k, 0.0) + v

    prog.update(0.85, "fusing labels")
    t0 = time.perf_counter()
    t1_sitk = volume_to_sitk(t1.with_array(np.zeros(t1.shape, np.uint8)))
    lo = np.array(t1_sitk.GetSize()) - 1
    hi = np.zeros(3, int)
    for r, subj in zip(regs, subjects):
        # labels can only land near the affinely mapped ROI box (demons moves a few mm)
        near = crop_grid_in_fixed(t1_sitk, r.affine, subj.roi_box_mm, params.label_margin_mm,
                                  float(min(t1.spacing_mm)))
        a, b = _index_box(t1_sitk, near)
        lo, hi = np.minimum(lo, a), np.maximum(hi, b)
    if np.any(hi < lo):
        raise InputError("T1: the registered deep grey matter falls outside the image")
    box_size = (hi - lo + 1).astype(int)
    sub_ref = sitk.RegionOfInterest(t1_sitk, [int(s) for s in box_size], [int(x) for x in lo])
    values = sorted(ROI_NAMES)
    prob = np.zeros((len(values) + 1,) + tuple(box_size[::-1]), np.float32)  # sitk order k, j, i
    w_aff = float(params.affine_vote_weight) if params.deformable else 0.0
    for r, subj in zip(regs, subjects):
        for value, img in subj.onehot:
            res = sitk.Resample(img, sub_ref, r.transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
            prob[1 + values.index(value)] += (1.0 - w_aff) * sitk.GetArrayViewFromImage(res)
            if w_aff > 0:
                res = sitk.Resample(img, sub_ref, r.affine, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
                prob[1 + values.index(value)] += w_aff * sitk.GetArrayViewFromImage(res)
    prob[0] = n - prob[1:].sum(0)
    winner = np.argmax(prob, axis=0)
    lut = np.array([0] + values, np.uint8)
    box_labels = lut[winner].transpose(2, 1, 0)  # -> i, j, k
    out = np.zeros(t1.shape, np.uint8)
    out[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = box_labels
    timings["fusion_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start
    prog.update(1.0, "done")
    return RoiResult(labels=t1.with_array(out), names=dict(ROI_NAMES), atlas_name=atlas.name,
                     atlas_checksum=atlas.checksum, timings=timings,
                     metric_values=[r.metric_value for r in regs])


# ----------------------------------------------------------------------------- outputs
def write_roi_outputs(result: RoiResult, out_dir: "str | Path") -> dict[str, Path]:
    """Write ``roi_labels.nii.gz`` and ``roi_labels.csv`` (value,name) into a new/empty folder."""
    from NeonatalBrainLib.outputs import staged_output

    out = Path(out_dir)
    with staged_output(out) as stage:
        save_volume(result.labels, stage / "roi_labels.nii.gz")
        with open(stage / "roi_labels.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["value", "name"])
            for value, name in sorted(result.names.items()):
                w.writerow([value, name])
    return {"labels": out / "roi_labels.nii.gz", "table": out / "roi_labels.csv"}


def dice_per_roi(labels: np.ndarray, reference: np.ndarray,
                 names: dict[int, str] | None = None) -> dict[str, float]:
    """Dice 2|A∩B|/(|A|+|B|) per ROI between two label arrays using the same values."""
    out = {}
    for value, name in sorted((names or ROI_NAMES).items()):
        a, b = labels == value, reference == value
        denom = a.sum() + b.sum()
        out[name] = float(2.0 * np.logical_and(a, b).sum() / denom) if denom else float("nan")
    return out


# ----------------------------------------------------------------------------- CLI
def add_roi_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``neonatal-brain roi T1 --out DIR [--atlas NAME|FOLDER]``."""
    parser.add_argument("t1", metavar="T1", help="neonatal T1 image (NIfTI/NRRD/MHA or DICOM folder)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="new or empty output folder (roi_labels.nii.gz, roi_labels.csv)")
    parser.add_argument("--atlas", default=DEFAULT_ATLAS, metavar="NAME|FOLDER",
                        help=f"built-in atlas name or atlas folder (default {DEFAULT_ATLAS})")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def run_roi_command(args: argparse.Namespace) -> int:
    """Handler of ``neonatal-brain roi``."""
    from NeonatalBrainLib.outputs import require_empty_dir
    from NeonatalBrainLib.progress import tqdm_progress

    require_empty_dir(args.out, create=False)
    t1 = load_volume(args.t1, "T1")
    atlas = load_atlas(args.atlas)
    progress, close = tqdm_progress("roi", disable=bool(getattr(args, "quiet", False)) or None)
    try:
        result = segment_deep_grey(t1, atlas, progress=progress)
    finally:
        close()
    paths = write_roi_outputs(result, args.out)
    print(f"wrote {paths['labels']} and {paths['table']} (atlas {result.atlas_name}, "
          f"{result.timings.get('total_s', 0):.1f} s)")
    return 0


def register_cli(subparsers) -> None:
    """Add the ``roi`` sub-command (for NeonatalClassifyLib.cli.register)."""
    p = subparsers.add_parser("roi", help="deep grey-matter ROIs on a neonatal T1 by atlas registration",
                              description=__doc__.split("\n\n")[0])
    add_roi_arguments(p)
    p.set_defaults(func=run_roi_command)


__all__ = ["RoiResult", "ROI_NAMES", "segment_deep_grey", "write_roi_outputs", "dice_per_roi",
           "add_roi_arguments", "run_roi_command", "register_cli"]
