"""Automatic masks on neonatal SWI magnitude: brain, ventricles, midline plane.

All functions take an array ``[i, j, k]`` plus the voxel spacing (mm) or the
affine; distances and sizes are in millimetres, so results do not depend on
voxel size or order.

* :func:`brain_mask` -- the intracranial volume: the bright object on a dark background
  (Otsu threshold of the image smoothed with a 1 mm Gaussian, eroded to cut bridges through
  the skull, largest connected component, holes filled), cut where the image smoothed less
  puts a thin skull; veins and dark lesions inside are filled.
* :func:`csf_masks` / :func:`ventricle_mask` -- on SWI magnitude CSF is brighter than
  white matter: bright components within the brain are ventricles when they lie deep as a
  whole (deepest voxel >= ``min_depth_mm``, median depth >= ``min_median_depth_mm``), are
  large enough, and (given the affine and the midline) do not lie lateral to the lateral
  ventricles (insular CSF); the other bright voxels are sulcal / extracerebral / cisternal CSF.
  Small finds are looked for again at a finer scale (slit ventricles) and split at narrow
  bridges (ventricles joined to the cisterns).
* :func:`midline_x_mm` -- the brain's left-right symmetry plane ``x = m`` (RAS): the
  median over 1 mm (y, z) cells of the midpoint of the brain's left-right extent, within
  ``search_mm`` of the mask's centroid.
* :func:`head_frame` -- a head turned in the scanner (yaw, roll; :func:`symmetry_tilt_deg`,
  the mask's mirror symmetry) is read in its own frame, where its midline is ``x = m``.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage

import cc3d
import edt as edt_lib
from numba import njit

from NeonatalBrainLib.imageio import Volume
from NeonatalBrainLib import filters

from .skeleton import voxel_counts
from .vesselness import bounding_box

#: threads of the exact Euclidean distance transforms (``edt``; same result for any count)
EDT_THREADS = max(1, min(4, os.cpu_count() or 1))


def _otsu(values: np.ndarray) -> float:
    from skimage.filters import threshold_otsu

    return float(threshold_otsu(values))


def _ball(radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    r = np.maximum(1, np.floor(radius_mm / spacing).astype(int))
    g = np.ogrid[tuple(slice(-n, n + 1) for n in r)]
    d2 = sum((gi * s) ** 2 for gi, s in zip(g, spacing))
    return d2 <= radius_mm ** 2 + 1e-9


# ----------------------------------------------------------------------------- bounding boxes
# The masks below are computed inside the bounding box of the voxels that can matter, grown by
# a margin that makes the cropped computation give the same values as the full-volume one
# (the reasons are given where each box is used).
def _bbox(mask: np.ndarray, margin=0) -> tuple[slice, ...] | None:
    """:func:`.vesselness.bounding_box` of ``mask``, or None when ``mask`` is empty."""
    box = bounding_box(mask, margin)
    return None if box[0].stop <= box[0].start else box


def _sub_box(outer: tuple[slice, ...], inner: tuple[slice, ...]) -> tuple[slice, ...]:
    """Box ``inner`` (given in the coordinates of box ``outer``) in the coordinates of the array."""
    return tuple(slice(o.start + i.start, o.start + i.stop) for o, i in zip(outer, inner))


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Same as ``ndimage.binary_fill_holes(mask)`` (2D or 3D): the background components
    (face-connected) that do not touch the array border are filled.

    Computed inside the mask's bounding box grown by one voxel (clipped to the array): every
    background voxel outside the box reaches the array border in a straight line, and the
    one-voxel layer around the box is background on the crop's border, so a background
    component reaches the crop's border exactly when it reaches the array's.
    """
    out = np.array(mask, dtype=bool, copy=True)
    box = _bbox(out, 1)
    if box is None:
        return out
    sub = out[box]
    bg, n = cc3d.connected_components(np.logical_not(sub).view(np.uint8), connectivity=2 * sub.ndim,
                                      return_N=True)
    if n == 0:
        return out
    hole = np.ones(n + 1, bool)
    hole[0] = False
    for ax in range(bg.ndim):
        for end in (0, -1):
            hole[np.unique(np.take(bg, end, axis=ax))] = False
    if hole.any():
        sub |= hole[bg]
    return out


def fill_holes_in_slices(mask: np.ndarray, axis: int) -> np.ndarray:
    """:func:`fill_holes` of every 2-D slice of ``mask`` across ``axis`` (bool): what each
    slice encloses, e.g. a ventricle that reaches the face of a slab, and so is no 3-D hole."""
    out = np.array(mask, dtype=bool, copy=True)
    for k in range(out.shape[axis]):
        index = [slice(None)] * out.ndim
        index[axis] = k
        out[tuple(index)] = fill_holes(out[tuple(index)])
    return out


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Largest 6-connected component of the nonzero voxels of ``mask`` (bool); ties go to cc3d's lowest label."""
    m = np.asarray(mask, bool)
    labels, n = cc3d.connected_components(m.view(np.uint8), connectivity=6, return_N=True)
    if n == 0:
        return m.copy()
    # voxel counts of the labelled voxels only (bincount of the whole label volume is slow)
    counts = np.bincount(labels[m], minlength=n + 1)
    counts[0] = 0
    return labels == int(np.argmax(counts))


#: the brain mask's threshold is taken on the image smoothed with a Gaussian of this SD (mm)
BRAIN_SMOOTHING_MM = 1.0
#: ... and the mask is cut where the image smoothed with this SD (mm) puts the skull (round 33)
SKULL_SMOOTHING_MM = 0.7
#: voxels of the mask farther than this (mm) from the mask found at SKULL_SMOOTHING_MM are removed
SKULL_CUT_MM = 1.0


def brain_mask(image: np.ndarray, spacing_mm, *, erosion_mm: float = 2.5) -> np.ndarray:
    """Intracranial mask (bool) of a neonatal SWI magnitude image: brain and the CSF around it.

    :func:`head_object` of the image smoothed with a :data:`BRAIN_SMOOTHING_MM` Gaussian, less
    its voxels farther than :data:`SKULL_CUT_MM` from :func:`head_object` at
    :data:`SKULL_SMOOTHING_MM`.  At 1 mm a thin dark skull between bright CSF and bright scalp
    (a preterm calvarium of 1.5 mm, scalp fat at 0.95 of white matter) smooths to above the
    threshold and the mask runs on into the scalp; at 0.7 mm it stays below it.  Where the
    skull is not thin the two masks differ by the smoothing's few tenths of a mm at the
    boundary, which the cut leaves as at 1 mm (the project phantom's masks do not change).  On
    the independent phantom's preterm presets the mask held 52-58 mL of skull and scalp beyond
    the 180-236 mL intracranial volume; cut, 16-20 mL, like its other presets' 9-18 mL (the skull's
    inner layer and partial voxels; benchmarks/README.md, round 33).  Both objects keep their
    largest piece only: a brain that the 0.7 mm threshold and the erosion split in two (not seen
    on the 30 phantoms checked: at most 0.3 mL of brain and CSF outside the mask) would lose the
    smaller piece.
    """
    spacing = np.asarray(spacing_mm, float)
    mask = head_object(image, spacing, smoothing_mm=BRAIN_SMOOTHING_MM, erosion_mm=erosion_mm)
    reach = np.floor(SKULL_CUT_MM / spacing).astype(int) + 1
    box = _bbox(mask, reach)        # the cut's distances reach this far outside the mask
    if box is None:
        return mask
    # the fine object on the whole image (its Otsu threshold is the whole image's)
    fine = head_object(image, spacing, smoothing_mm=SKULL_SMOOTHING_MM, erosion_mm=erosion_mm)[box]
    if not fine.any():
        return mask
    far = edt_lib.edt(np.ascontiguousarray(~fine, dtype=np.uint8), anisotropy=tuple(float(x) for x in spacing),
                      black_border=False, parallel=EDT_THREADS) > SKULL_CUT_MM + 1e-6
    mask[box] &= ~far
    return mask


def head_object(image: np.ndarray, spacing_mm, *, smoothing_mm: float, erosion_mm: float = 2.5) -> np.ndarray:
    """The bright object of an image on a dark background (bool): Otsu threshold of the image
    smoothed with a ``smoothing_mm`` Gaussian; eroded by ``erosion_mm`` to cut thin bridges
    through the (dark) skull; the largest 6-connected component; dilated back by the same ball
    inside the thresholded voxels; 3D holes (veins, dark lesions) filled.
    """
    spacing = np.asarray(spacing_mm, float)
    img = np.asarray(image, np.float32)
    sm = filters.gaussian_filter(img, smoothing_mm / spacing, mode="nearest")
    step = tuple(max(1, n // 96) for n in sm.shape)
    sample = sm[:: step[0], :: step[1], :: step[2]]
    thr = _otsu(sample.ravel())
    fg = sm > thr
    del sm
    mask = np.zeros(fg.shape, bool)
    # everything below happens inside the bounding box of the thresholded voxels grown by one
    # voxel: outside it nothing is thresholded, and that one-voxel background layer (or the
    # array border, which the erosion's EDT treats as background too) gives every voxel of the
    # box the same distance to the background as in the whole array
    box = _bbox(fg, 1)
    if box is None:
        return mask
    fg = fg[box]
    # erosion / dilation by a ball of erosion_mm (mm, anisotropic) through exact Euclidean
    # distance transforms: same result as the ball structuring element, cost independent of its size
    aniso = tuple(float(x) for x in spacing)
    core = edt_lib.edt(np.ascontiguousarray(fg, dtype=np.uint8), anisotropy=aniso, black_border=True,
                       parallel=EDT_THREADS) > erosion_mm + 1e-6
    if not core.any():
        core = fg
    core = largest_component(core)
    # dilation: voxels farther than floor(erosion_mm / spacing) voxels along an axis from the
    # core's bounding box are farther than erosion_mm from the core, so the dilation is
    # computed in that box (all core voxels inside it; no border effect with black_border=False)
    reach = np.floor((erosion_mm + 1e-6) / spacing).astype(int) + 1
    gbox = _bbox(core, reach)
    grow = edt_lib.edt(np.ascontiguousarray(~core[gbox], dtype=np.uint8), anisotropy=aniso,
                       black_border=False, parallel=EDT_THREADS) <= erosion_mm + 1e-6
    grow &= fg[gbox]
    mask[_sub_box(box, gbox)] = grow
    return fill_holes(mask)


#: a face of the array cuts through the brain when the brain's section on it is at least this
#: fraction of the brain's largest section parallel to it (:func:`cut_faces`)
CUT_FACE_MIN_FRACTION = 0.2


def cut_faces(brain: np.ndarray, min_fraction: float = CUT_FACE_MIN_FRACTION) -> tuple[tuple[int, int], ...]:
    """The faces ``(axis, 0 | 1)`` (first / last slice along ``axis``) of the array where the
    field of view cuts through the brain: the brain's section on the face is at least
    ``min_fraction`` of its largest section parallel to it (a slab acquisition that does not
    cover the whole brain, an in-plane field of view cut inside the head).  A whole head with
    air around it has none; a brain that only grazes a face (the vertex or the brainstem in a
    tight field of view, a brain cropped to its bounding box) has a small section there and
    does not count."""
    brain = np.asarray(brain, bool)
    box = _bbox(brain)
    if box is None:
        return ()
    faces = []
    for axis in range(3):
        ends = [side for side, touches in enumerate((box[axis].start == 0, box[axis].stop == brain.shape[axis]))
                if touches]
        if not ends:
            continue
        sections = np.count_nonzero(brain[box], axis=tuple(a for a in range(3) if a != axis))
        largest = float(sections.max())
        faces += [(axis, side) for side in ends if sections[-side] >= min_fraction * largest]
    return tuple(faces)


#: the faces of an array in canonical order (axes along R, A, S with increasing coordinate)
#: named for the patient: (axis, 0 | 1) -> name
CANONICAL_FACE_NAMES = {(0, 0): "left", (0, 1): "right", (1, 0): "posterior", (1, 1): "anterior",
                        (2, 0): "inferior", (2, 1): "superior"}


#: the depth (mm) of a brain without any surface in the field of view (:func:`brain_depth_mm`)
NO_SURFACE_DEPTH_MM = 1.0e6


def closed_mask(mask: np.ndarray, spacing_mm, radius_mm: float) -> np.ndarray:
    """``mask`` closed by a ball of ``radius_mm`` (dilation then erosion, exact Euclidean distances
    in mm; the array border is no obstacle) with its holes filled: the fissures and sulci narrower
    than 2 x ``radius_mm`` that a brain-tissue mask leaves open are inside."""
    mask = np.asarray(mask, bool)
    aniso = tuple(float(s) for s in spacing_mm)
    pad = [int(np.ceil(radius_mm / s)) + 1 for s in aniso]
    padded = np.pad(mask, [(p, p) for p in pad])
    grown = edt_lib.edt(np.ascontiguousarray(~padded, dtype=np.uint8), anisotropy=aniso, black_border=False,
                        parallel=EDT_THREADS) <= radius_mm
    shrunk = edt_lib.edt(np.ascontiguousarray(grown, dtype=np.uint8), anisotropy=aniso, black_border=False,
                         parallel=EDT_THREADS) > radius_mm
    inner = tuple(slice(p, p + n) for p, n in zip(pad, mask.shape))
    return fill_holes(shrunk[inner] | mask)


def brain_depth_mm(brain: np.ndarray, spacing_mm, *, open_faces=None, open_mask=None) -> np.ndarray:
    """Distance (mm) of each brain voxel to the nearest non-brain voxel (anisotropic EDT),
    float32; 0 outside the brain.

    The array border counts as non-brain, except at ``open_faces`` (default: :func:`cut_faces`,
    the faces where the field of view cuts through the brain): there the brain is taken to go
    on beyond the field of view, so the depth is that to the brain surface inside it.  (The
    nearest non-brain voxel of the face's section extended as a prism lies in the face itself,
    so this is the EDT without a border at those faces.)  ``open_faces=()``: every face is a
    border.  A brain with no surface in the field of view at all (every face open, no non-brain
    voxel) is :data:`NO_SURFACE_DEPTH_MM` deep.

    ``open_mask`` (bool, optional): voxels outside the field of view beyond a slanted cut
    (:func:`beyond_cut_planes`); they count as brain, and the array border next to them as open,
    so the depth there too is that to the brain surface inside the field of view (the brain taken
    to go on beyond the cut as far as the array reaches, not as an infinite prism).
    """
    brain = np.asarray(brain, bool)
    opened = open_mask is not None and bool(np.any(open_mask))
    solid = brain | np.asarray(open_mask, bool) if opened else brain
    out = np.zeros(brain.shape, np.float32)
    # inside the bounding box of the brain (and open region) grown by one (non-brain) voxel, or up
    # to the array border: the nearest non-brain voxel of a voxel in the box is never farther than
    # that layer, so the distances are those of the whole array
    box = _bbox(solid, 1)
    if box is None:
        return out
    faces = cut_faces(brain) if open_faces is None else tuple(open_faces)
    sub = np.ascontiguousarray(solid[box], dtype=np.uint8)
    anisotropy = tuple(float(s) for s in spacing_mm)
    if not faces and not opened:       # the array border is non-brain (black_border)
        out[box] = edt_lib.edt(sub, anisotropy=anisotropy, black_border=True, parallel=EDT_THREADS)
        return out
    # a layer of non-brain on every array face the box reaches that is not open (none on the open
    # ones), open itself where the open region meets it
    pad = [[int(b.start == 0 and (axis, 0) not in faces), int(b.stop == n and (axis, 1) not in faces)]
           for axis, (b, n) in enumerate(zip(box, brain.shape))]
    padded = np.pad(sub, pad)
    inner = tuple(slice(lo, lo + (b.stop - b.start)) for (lo, _), b in zip(pad, box))
    if opened:
        for axis in range(3):
            for side, width in enumerate(pad[axis]):
                if width:
                    layer = list(inner)
                    layer[axis] = 0 if side == 0 else padded.shape[axis] - 1
                    padded[tuple(layer)] = np.take(np.asarray(open_mask, bool)[box], -side, axis=axis)
    depth = edt_lib.edt(padded, anisotropy=anisotropy, black_border=False, parallel=EDT_THREADS)[inner]
    if np.isinf(depth.flat[0]):     # no non-brain voxel at all: every distance is infinite
        depth = np.full(depth.shape, NO_SURFACE_DEPTH_MM, np.float32)
    out[box] = np.where(brain[box], depth, np.float32(0)) if opened else depth
    return out


# ----------------------------------------------------------------------------- slanted field-of-view cuts
def not_imaged_mask(image: np.ndarray) -> np.ndarray:
    """Voxels outside the scan's field of view (bool): the exact zeros 6-connected to the array's
    border, which a resampling onto a larger or rotated grid fills in (as does a skull-stripping
    or an air mask: :func:`field_of_view_cut_planes` tells a cut from those).  All False, without
    labelling, when no voxel on the array's faces is exactly 0."""
    image = np.asarray(image)
    if all(np.all(np.take(image, index, axis=axis)) for axis in range(3) for index in (0, -1)):
        return np.zeros(image.shape, bool)
    zero = image == 0
    labels = cc3d.connected_components(zero.view(np.uint8), connectivity=6)
    on_border = np.unique(np.concatenate([np.take(labels, index, axis=axis).ravel()
                                          for axis in range(3) for index in (0, -1)]))
    lut = np.zeros(int(labels.max()) + 1, bool)
    lut[on_border[on_border > 0]] = True
    return lut[labels]


#: exact zeros inside the brain in a 6-connected region of at least this volume (mm^3) are masked or
#: missing data (:func:`zeros_inside_brain`); a vein voxel stored as 0 in an integer image is one of few
ZEROS_INSIDE_MIN_MM3 = 20.0


def zeros_inside_brain(image: np.ndarray, brain: np.ndarray, spacing_mm, *,
                       min_mm3: float = ZEROS_INSIDE_MIN_MM3) -> np.ndarray:
    """The exact zeros inside the brain mask, in 6-connected regions of at least ``min_mm3`` (bool):
    masked or missing data (a lesion or artefact masked out, a hole a processing step left), not
    tissue -- magnitude noise keeps real tissue, veins included, above 0.  (The zeros outside the
    field of view are not in the brain mask: :func:`not_imaged_mask`.)  All False, without
    labelling, when the image has no zero inside the brain."""
    image = np.asarray(image)
    zero = (image == 0) & np.asarray(brain, bool)
    if not zero.any():
        return zero
    labels = cc3d.connected_components(zero.view(np.uint8), connectivity=6)
    keep = voxel_counts(labels) * float(np.prod(spacing_mm)) >= min_mm3     # label 0 counts 0: not kept
    return keep[labels]


@dataclass(frozen=True)
class CutPlane:
    """A plane along which the field of view cuts through the brain, in the grid's millimetre frame
    (``x = ijk * spacing``): ``normal`` . x = ``offset_mm`` on the cut, ``normal`` (unit) pointing
    out of the field of view."""
    normal: tuple[float, float, float]
    offset_mm: float

    def face_name(self) -> str:
        """The patient-side name of the array face (canonical R, A, S order) nearest in direction,
        with "(oblique)": e.g. ``"inferior (oblique)"``."""
        n = np.asarray(self.normal)
        axis = int(np.argmax(np.abs(n)))
        return f"{CANONICAL_FACE_NAMES[(axis, int(n[axis] > 0))]} (oblique)"


#: RANSAC trials per plane of :func:`field_of_view_cut_planes` (fixed seed: the same planes on every run)
CUT_PLANE_TRIALS = 300
#: at most this many of the contact voxels take part in the trials (evenly strided)
CUT_PLANE_SAMPLE = 20000
#: a cut's inner band (``w`` to 3 ``w`` + 1 mm inside it, in the brain's box) holds at most this
#: fraction of voxels outside the field of view (:func:`field_of_view_cut_planes`)
CUT_PLANE_MAX_ZEROS_INSIDE = 0.1
#: ... unless the plane holds at least this fraction of the brain's largest parallel section: a
#: skull-stripped scan cut by its field of view has zeros beside the brain inside the cut too
#: (skull-stripped whole brains: at most 0.165 on 14 phantom scans; the cuts of skull-stripped slabs
#: on rotated grids 0.41-0.97; benchmarks/README.md round 29)
CUT_PLANE_MIN_FRACTION_BESIDE_ZEROS = 0.3


def field_of_view_cut_planes(not_imaged: np.ndarray, brain: np.ndarray, spacing_mm, *,
                             min_fraction: float = CUT_FACE_MIN_FRACTION, max_planes: int = 6) -> tuple[CutPlane, ...]:
    """Planes along which the brain meets the region outside the field of view (``not_imaged``,
    :func:`not_imaged_mask`) across a large flat section: a slab or cropped field of view
    resampled onto a rotated grid, whose borders are then slanted planes of zeros instead of the
    array's faces (:func:`cut_faces`).

    The brain voxels with a 6-neighbour outside the field of view (contact voxels) are fitted
    with planes (RANSAC, :data:`CUT_PLANE_TRIALS` trials with a fixed seed, then least squares on
    the inliers: the contact voxels within half the layer thickness ``w = max_i |n_i| s_i`` of
    the plane, + 0.05 mm).  A plane counts as a cut when its inliers number at least
    ``min_fraction`` of the brain's largest section parallel to it (its voxels in a layer of
    thickness ``w``) -- the rule of :func:`cut_faces` --, the voxels 1.5 ``w`` beyond its
    inliers lie outside the field of view (>= 90 %), and the band from ``w`` to 3 ``w`` + 1 mm
    inside it, within the brain's bounding box, is imaged (at most
    :data:`CUT_PLANE_MAX_ZEROS_INSIDE` of it outside the field of view) unless the plane holds
    at least :data:`CUT_PLANE_MIN_FRACTION_BESIDE_ZEROS` of that section.  Planes are taken one
    after another from the contact voxels not yet explained, until one fails.  A skull-stripped
    brain meets the zeros along its curved surface, with zeros beside it: on six phantoms (both
    generators; skull-stripped with the brain mask, with it dilated by one voxel or eroded by
    three) a plane held at most 0.165 of a section, and none passes the band rule.  A
    skull-stripped slab resampled onto a rotated grid has zeros beside the brain inside its cut
    as well; its cuts hold 0.41-0.97 of a section (before version 0.6.3 it was not taken as cut
    and found no DMV).
    """
    not_imaged = np.asarray(not_imaged, bool)
    brain = np.asarray(brain, bool)
    box = _bbox(brain, 1)
    if box is None or not not_imaged[box].any():
        return ()
    spacing = np.asarray(spacing_mm, float)
    outside = not_imaged[box]
    br = brain[box]
    near = ndimage.binary_dilation(outside)         # 6-neighbours
    points = (np.argwhere(br & near) * spacing).astype(np.float64)
    if len(points) < 50:
        return ()
    origin = np.array([b.start for b in box], float) * spacing
    rng = np.random.default_rng(0)
    planes: list[CutPlane] = []
    while len(points) >= 50 and len(planes) < max_planes:
        sample = points[:: max(1, len(points) // CUT_PLANE_SAMPLE)]
        best_count, best = -1, None
        for _ in range(CUT_PLANE_TRIALS):
            p = sample[rng.choice(len(sample), 3, replace=False)]
            n = np.cross(p[1] - p[0], p[2] - p[0])
            norm = np.linalg.norm(n)
            if norm < 1e-9:
                continue
            n /= norm
            count = int(np.count_nonzero(np.abs(sample @ n - p[0] @ n) <= 0.5 * _layer_mm(n, spacing) + 0.05))
            if count > best_count:
                best_count, best = count, (n, float(p[0] @ n))
        if best is None:
            break
        n, d = best
        inliers = np.abs(points @ n - d) <= 0.5 * _layer_mm(n, spacing) + 0.05
        centre = points[inliers].mean(axis=0)
        fitted = np.linalg.svd(points[inliers] - centre, full_matrices=False)[2][2]
        n = fitted if fitted @ n >= 0 else -fitted
        d = float(centre @ n)
        w = _layer_mm(n, spacing)
        inliers = np.abs(points @ n - d) <= 0.5 * w + 0.05
        count = int(inliers.sum())
        # the brain's sections parallel to the plane, in layers of the contact layer's thickness
        along = _signed_distance_mm(br.shape, spacing, n)
        in_brain = along[br]
        largest = int(np.bincount(((in_brain - in_brain.min()) / w).astype(np.int64)).max())
        probe = points[inliers][:: max(1, count // 500)]

        def outside_at(shift):
            ijk = np.rint((probe + shift * w * n) / spacing).astype(int)
            ijk = np.clip(ijk, 0, np.array(br.shape) - 1)
            return float(outside[tuple(ijk.T)].mean())

        beyond, behind = outside_at(1.5), outside_at(-1.5)
        if behind > beyond:                         # the normal points out of the field of view
            n, d, along, (beyond, behind) = -n, -d, -along, (behind, beyond)
        if count < min_fraction * largest or beyond < 0.9 or count < 50:
            break
        # just inside a cut the field of view is imaged across the brain's box (tissue, skull, air
        # with noise); beside a skull-stripped brain's flat side lie zeros -- but a skull-stripped
        # brain has no flat side holding a large part of its section
        inside_band = (along > d - 3.0 * w - 1.0) & (along <= d - w)
        if count < CUT_PLANE_MIN_FRACTION_BESIDE_ZEROS * largest and (
                not inside_band.any() or outside[inside_band].mean() > CUT_PLANE_MAX_ZEROS_INSIDE):
            break
        planes.append(CutPlane(tuple(float(x) for x in n), round(d + float(origin @ n), 4)))
        points = points[~inliers]
    return tuple(planes)


def beyond_cut_planes(brain: np.ndarray, planes, spacing_mm) -> np.ndarray:
    """The non-brain voxels beyond any of the cut ``planes`` (:func:`field_of_view_cut_planes`),
    from the inner side of the brain's contact layer (``w``) on: the region :func:`brain_depth_mm`
    takes as open.  (The brain mask's 1 mm smoothing darkens the brain next to the zeros, which
    can leave a layer of imaged non-brain voxels between the brain and the zeros.)"""
    brain = np.asarray(brain, bool)
    out = np.zeros(brain.shape, bool)
    spacing = np.asarray(spacing_mm, float)
    for plane in planes:
        w = _layer_mm(plane.normal, spacing)
        out |= _signed_distance_mm(brain.shape, spacing, plane.normal) > plane.offset_mm - w
    return out & ~brain


#: how far (mm) beyond a slanted cut :func:`extend_beyond_cut_planes` continues the image: past the
#: reach of the smoothing of the brain mask (1 mm Gaussian, 4 sigma) and its 2.5 mm erosion
CUT_EXTENSION_MM = 8.0


def extend_beyond_cut_planes(image: np.ndarray, not_imaged: np.ndarray, planes, spacing_mm, *,
                             reach_mm: float = CUT_EXTENSION_MM) -> np.ndarray:
    """``image`` (float32 copy) with the voxels outside the field of view up to ``reach_mm`` beyond
    each cut plane (:func:`field_of_view_cut_planes`) set to the image just inside the cut, on the
    line along the plane's normal (linear interpolation at ``w`` + 0.5 mm inside the plane, past
    the resampling's partial voxels; ``w``: the contact layer's thickness).  This is what the
    filters' "nearest" border mode does at an array face that cuts the brain: the smoothing of
    the brain mask and of the CSF masks then does not darken the brain next to a slanted cut.
    The masks are restricted to the field of view afterwards; nothing is measured there."""
    out = np.array(image, np.float32)
    spacing = np.asarray(spacing_mm, float)
    not_imaged = np.asarray(not_imaged, bool)
    for plane in planes:
        n = np.asarray(plane.normal, float)
        w = _layer_mm(n, spacing)
        along = _signed_distance_mm(out.shape, spacing, n)
        band = not_imaged & (along > plane.offset_mm - w) & (along <= plane.offset_mm + reach_mm)
        ijk = np.nonzero(band)
        if not ijk[0].size:
            continue
        back = (along[band] - (plane.offset_mm - w - 0.5)).astype(np.float32)
        source = [ijk[a].astype(np.float32) - back * np.float32(n[a] / spacing[a]) for a in range(3)]
        out[band] = ndimage.map_coordinates(out, source, order=1, mode="nearest")
    return out


def _layer_mm(normal, spacing) -> float:
    """Thickness (mm) along the unit ``normal`` of the layer of voxels next to a plane
    (``max_i |n_i| s_i``: their centres lie within it)."""
    return float(np.max(np.abs(np.asarray(normal, float)) * np.asarray(spacing, float)))


def _signed_distance_mm(shape, spacing_mm, normal) -> np.ndarray:
    """``normal . (ijk * spacing)`` (float32) at every voxel of an array of ``shape``."""
    axes = [(np.arange(n, dtype=np.float32) * np.float32(s * c)).reshape([-1 if a == b else 1 for b in range(3)])
            for a, (n, s, c) in enumerate(zip(shape, np.asarray(spacing_mm, float), normal))]
    return axes[0] + axes[1] + axes[2]


def distance_to_mask_mm(features: np.ndarray, spacing_mm, *, within: np.ndarray | None = None,
                        far_mm: float = 1e3) -> np.ndarray:
    """Distance (mm) of each voxel to the nearest voxel of ``features`` (exact anisotropic EDT), float32.

    Exact at every voxel of the bounding box of ``features`` and ``within`` (the voxels whose
    distances are read later; default: every voxel) grown by one voxel (the neighbours a linear
    interpolation at a point among those voxels reads); ``far_mm`` elsewhere, and everywhere
    when ``features`` is empty.  The EDT runs in that box only (no border, ``black_border=False``):
    every feature voxel lies inside it, and the voxels outside it have no feature on their
    grid lines, so the distances inside are those of the whole array, bit for bit.
    """
    features = np.asarray(features, bool)
    out = np.full(features.shape, far_mm, np.float32)
    if not features.any():
        return out
    if within is None:
        box = tuple(slice(0, n) for n in features.shape)
    else:
        box = _bbox(features | np.asarray(within, bool), 1)
    out[box] = edt_lib.edt(np.ascontiguousarray(~features[box], dtype=np.uint8),
                           anisotropy=tuple(float(s) for s in spacing_mm), black_border=False,
                           parallel=EDT_THREADS)
    return out


def _linear_zoom_axis(n_out: int, n_in: int):
    """Source indices and weights of ``ndimage.zoom(order=1, mode="nearest", grid_mode=False)``
    along one axis: output ``k`` samples input ``k (n_in - 1) / (n_out - 1)``."""
    ratio = (n_in - 1) / (n_out - 1) if n_out > 1 else 1.0
    cc = np.arange(n_out, dtype=np.float64) * ratio
    i0 = np.floor(cc)
    w0 = 1.0 - (cc - i0)
    w1 = 1.0 - w0
    i0 = i0.astype(np.intp)
    return np.clip(i0, 0, n_in - 1), np.clip(i0 + 1, 0, n_in - 1), w0, w1


def _zoom_axis(a: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    i0, i1, w0, w1 = _linear_zoom_axis(n_out, a.shape[axis])
    shp = [1] * a.ndim
    shp[axis] = n_out
    return np.take(a, i0, axis=axis) * w0.reshape(shp) + np.take(a, i1, axis=axis) * w1.reshape(shp)


@njit(cache=True, nogil=True)
def _divide_by_field_axis0(img, part, i0, i1, w0, w1, floor, fallback, out):  # pragma: no cover - numba
    """``out = img / field`` with the field linearly interpolated along axis 0 from ``part``
    (``field[a] = float32(part[i0[a]] w0[a] + part[i1[a]] w1[a])``, float64 products and sum) and
    replaced by ``fallback`` where it is not above ``floor``; the division in float64, rounded to
    float32.  The arithmetic of the numpy expression ``img / np.where(f > floor, f, fallback)``
    (float32 ``img``, float64 ``fallback``), in one pass without temporaries."""
    n0, n1, n2 = img.shape
    for a in range(n0):
        p0 = part[i0[a]]
        p1 = part[i1[a]]
        u = w0[a]
        v = w1[a]
        for j in range(n1):
            for k in range(n2):
                f = np.float32(p0[j, k] * u + p1[j, k] * v)
                d = np.float64(f) if f > floor else fallback
                out[a, j, k] = np.float32(np.float64(img[a, j, k]) / d)


def normalise_intensity(image: np.ndarray, brain: np.ndarray, spacing_mm, *,
                        bias_sigma_mm: float = 20.0) -> np.ndarray:
    """Image divided by a smooth estimate of the tissue signal (bias correction), float32.

    The tissue signal is the Gaussian-weighted (``bias_sigma_mm``) mean of the
    image over brain voxels (normalised convolution), so slow multiplicative bias
    fields are removed and tissue is ~1 everywhere in the brain.  The signal is
    computed on every ``max(1, floor(4 mm / spacing))``-th voxel along each axis
    and interpolated back linearly to the image grid, the coarse grid's first and
    last samples on the image's first and last voxels (as ``ndimage.zoom(order=1)``);
    where it is at most 5 % of the median brain value the image is divided by that
    median instead.  The result is then rescaled so that its median over the brain
    is 1.
    """
    spacing = np.asarray(spacing_mm, float)
    img = np.asarray(image, np.float32)
    brain = np.asarray(brain, bool)
    # downsample for speed: the bias field is smooth
    factor = np.maximum(1, np.floor(4.0 / spacing).astype(int))
    sl = tuple(slice(None, None, int(f)) for f in factor)
    w = brain[sl].astype(np.float32)
    sig = bias_sigma_mm / (spacing * factor)
    num = ndimage.gaussian_filter(img[sl] * w, sig, mode="constant")
    den = ndimage.gaussian_filter(w, sig, mode="constant")
    field_small = np.where(den > 1e-3, num / np.maximum(den, 1e-3), 0).astype(np.float32)
    med = float(np.median(img[brain])) if brain.any() else 1.0
    # separable linear up-sampling (float64, rounded to float32 like ndimage.zoom), the last
    # axis-0 step slab by slab, fused with the division
    part = field_small.astype(np.float64)
    for ax in (2, 1):
        part = _zoom_axis(part, img.shape[ax], ax)
    i0, i1, w0, w1 = _linear_zoom_axis(img.shape[0], part.shape[0])
    out = np.empty(img.shape, np.float32)
    img_c = np.ascontiguousarray(img)
    # slabs of planes on the filters' threads (the kernel releases the GIL; each output voxel
    # is computed alone, so the slabs give the same values as one pass)
    n_slabs = min(filters.THREADS, img.shape[0]) if img.size >= filters.MIN_VOXELS else 1
    cuts = np.linspace(0, img.shape[0], n_slabs + 1).astype(int)

    def run(a: int, b: int) -> None:
        _divide_by_field_axis0(img_c[a:b], part, i0[a:b], i1[a:b], w0[a:b], w1[a:b], 0.05 * med, med, out[a:b])

    if n_slabs == 1:
        run(0, img.shape[0])
    else:
        with ThreadPoolExecutor(n_slabs) as pool:
            list(pool.map(run, cuts[:-1], cuts[1:]))
    # rescale so that the median tissue value is 1
    inside = out[brain]
    if inside.size:
        out /= np.float32(np.median(inside))
    return out


def _component_depths(labels: np.ndarray, depth: np.ndarray, n: int):
    """Voxel count, maximum and median of ``depth`` per label 1..n of the labelled voxels
    (``labels``, ``depth``: 1D, labels >= 1).  The median is that of ``ndimage.median``: the
    mean of the two middle values, in ``depth``'s dtype."""
    order = np.lexsort((depth, labels))
    v = depth[order]
    counts = np.bincount(labels, minlength=n + 1)[1:]
    ends = np.cumsum(counts)
    starts = ends - counts
    ok = counts > 0
    mx = np.zeros(n, v.dtype)
    med = np.zeros(n, v.dtype)
    step = (counts - 1) // 2
    lo = (starts + step)[ok]
    hi = (ends - 1 - step)[ok]
    mx[ok] = v[ends[ok] - 1]
    med[ok] = (v[lo] + v[hi]) / 2.0
    return counts, mx, med


def ventricle_mask(norm_image: np.ndarray, brain: np.ndarray, spacing_mm, **kwargs) -> np.ndarray:
    """Lateral + third ventricles (bool): the first mask of :func:`csf_masks`."""
    return csf_masks(norm_image, brain, spacing_mm, **kwargs)[0]


#: the ventricles' first look: bright above max(Otsu of the upper half, this) after a Gaussian of
#: this sigma (mm)
VENTRICLE_SMOOTHING_MM = 0.8
VENTRICLE_MIN_BRIGHTNESS = 1.2
#: ventricles found holding less than this (mm^3) are looked for a second time at a finer scale
#: (:data:`SLIT_VENTRICLE_SMOOTHING_MM`, :data:`SLIT_VENTRICLE_MIN_BRIGHTNESS`), and the larger of
#: the two kept: slit ventricles (1-2 mm across, common at term and in a swollen brain) lose their
#: brightness to the partial volume and the smoothing, so the first look finds none of them and no
#: DMV can be judged (round 30: the project phantom with ventricles of 0.9-1.7 mL found 0-0.7 mL;
#: each of 331 phantoms of both generators with its preset's ventricles found >= 2.4 mL)
SMALL_VENTRICLES_MM3 = 2000.0
SLIT_VENTRICLE_SMOOTHING_MM = 0.5
SLIT_VENTRICLE_MIN_BRIGHTNESS = 1.1
#: ... and, given the image's noise, at least 1 + this x the noise SD after that smoothing: at 1.1
#: a noisy scan's white matter (1.5 T, 2 mm slices: smoothed noise SD 0.03-0.04 of tissue) gave
#: dozens of 10-60 mm^3 'ventricles' and grew the true ones into it (round 34)
SLIT_VENTRICLE_NOISE_Z = 5.0
#: the second look keeps deep bright components from this volume (mm^3; the first look's
#: ``min_volume_mm3``, 50, drops the pieces of slit ventricles, which then count as other CSF and
#: keep the DMVs beside them from passing the CSF-clearance rule) ...
SLIT_VENTRICLE_MIN_VOLUME_MM3 = 10.0
#: ... and judges what is lateral to the lateral ventricles by the components lying at least this
#: far (mm) from the midline plane (the largest piece is often the third ventricle there)
SLIT_VENTRICLE_OFF_MIDLINE_MM = 4.0
#: a bright component with more than this fraction of its voxels within
#: :data:`VENTRICLE_SHALLOW_MM` of the brain surface is CSF outside the brain, not a ventricle:
#: where a swollen brain leaves little CSF around it, the brain mask encloses the interhemispheric
#: fissure and the Sylvian cisterns, deep over most of their extent but open to the surface at
#: their edge (round 32: the project phantom with 0.5 mm of outer CSF and slit ventricles took the
#: fissure, 2.8-4.5 mL, for ventricle; of 625 phantoms of both generators -- their presets, slit
#: ventricles, the other variants -- only the six with 0.5 mm of outer CSF find other ventricles)
VENTRICLE_MAX_SHALLOW_FRACTION = 0.02
VENTRICLE_SHALLOW_MM = 3.0
#: when both looks find small ventricles, a third look (the first's smoothing and brightness) splits
#: the bright voxels at bridges narrower than 2 x this (mm; :func:`split_at_bridges`): a third
#: ventricle whose thin membranes are lost to partial volume joins the lateral ventricles to the
#: basal cisterns, and the whole is then CSF open to the surface (round 36: an MNI152-based phantom
#: in 1.5 mm oblique slices, 3.8 mL of ventricles, 0.11 mL found and no DMV); 0: off
BRIDGED_VENTRICLE_SPLIT_MM = 1.0


def csf_masks(norm_image: np.ndarray, brain: np.ndarray, spacing_mm, *,
              depth_mm: np.ndarray | None = None, min_depth_mm: float = 12.0,
              min_median_depth_mm: float = 8.0, min_volume_mm3: float = 50.0,
              affine: np.ndarray | None = None, midline_x_mm: float | None = None,
              major_fraction: float = 0.3,
              small_ventricles_mm3: float = SMALL_VENTRICLES_MM3,
              smoothed_noise_sd: Callable[[float], float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ventricles, other CSF) as bool masks from a bias-normalised SWI (CSF bright).

    Ventricles (lateral + third):

    Bright components (above max(Otsu of the upper half, :data:`VENTRICLE_MIN_BRIGHTNESS`)
    after :data:`VENTRICLE_SMOOTHING_MM` smoothing)
    of >= ``min_volume_mm3`` that reach ``min_depth_mm`` below the brain surface and
    whose median depth is >= ``min_median_depth_mm``: the ventricles lie deep as a
    whole, whereas sulcal / Sylvian / posterior-fossa CSF joined to the surface
    (median depth 2-4 mm on the phantoms) can reach deep at one end only; such a
    component taken as ventricle made veins next to it pass as wall veins or DMVs.  Nor may
    more than :data:`VENTRICLE_MAX_SHALLOW_FRACTION` of its voxels lie within
    :data:`VENTRICLE_SHALLOW_MM` of the surface: the ventricles are enclosed by brain.
    With ``affine`` (voxel -> RAS mm) and ``midline_x_mm`` (the RAS x of the midline
    plane), a component also must not lie lateral to the lateral ventricles: its centroid
    no farther from the midline plane than the farthest voxel of the major components
    (those of >= ``major_fraction`` x the largest one's volume; the lateral ventricles,
    or their larger pieces).  The insular (Sylvian) cistern's CSF, cut off from the
    surface CSF by noise or thick slices, is deep too (median depth 17-19 mm on the
    project's phantoms, centroid 30-34 mm from the midline, against at most ~29 mm for
    the farthest voxel of the lateral ventricles); taken as ventricle, it made the DMVs
    ending next to it fail the radial rule (both their ends "near a ventricle").
    When the ventricles so found hold less than ``small_ventricles_mm3`` (slit ventricles),
    the same selection is made a second time at :data:`SLIT_VENTRICLE_SMOOTHING_MM` and
    :data:`SLIT_VENTRICLE_MIN_BRIGHTNESS` (with ``smoothed_noise_sd``, a function giving the noise SD of
    ``norm_image`` after a Gaussian of the given sigma in mm, called only when the second look
    runs: at least 1 + :data:`SLIT_VENTRICLE_NOISE_Z` x that SD), keeping components from
    :data:`SLIT_VENTRICLE_MIN_VOLUME_MM3` and judging the lateral rule by the components off
    the midline (:data:`SLIT_VENTRICLE_OFF_MIDLINE_MM`), and the look finding the larger
    ventricles is kept (with its other CSF).  When both find less than ``small_ventricles_mm3``, a
    third look (the first's smoothing and brightness) splits the bright voxels at bridges
    narrower than 2 x :data:`BRIDGED_VENTRICLE_SPLIT_MM` (:func:`split_at_bridges`) and judges
    the pieces by the first look's rules: lateral ventricles joined to the basal cisterns
    through a third ventricle, CSF open to the surface as a whole, are found as themselves.
    Other CSF: the remaining bright voxels inside the brain mask (sulcal, Sylvian,
    extracerebral, cisternal CSF), next to which lies cortex, not white matter.
    """
    spacing = np.asarray(spacing_mm, float)
    norm_image = np.asarray(norm_image)
    brain = np.asarray(brain, bool)
    box = _bbox(brain)
    if box is None:
        return np.zeros(brain.shape, bool), np.zeros(brain.shape, bool)
    if depth_mm is None:
        depth_mm = brain_depth_mm(brain, spacing)
    rules = dict(min_depth_mm=min_depth_mm, min_median_depth_mm=min_median_depth_mm, min_volume_mm3=min_volume_mm3,
                 affine=affine, midline_x_mm=midline_x_mm, major_fraction=major_fraction)
    vent, other = _csf_look(norm_image, brain, box, spacing, depth_mm, sigma_mm=VENTRICLE_SMOOTHING_MM,
                            min_brightness=VENTRICLE_MIN_BRIGHTNESS, **rules)
    voxel_mm3 = float(np.prod(spacing))
    found = np.count_nonzero(vent)
    if found * voxel_mm3 < small_ventricles_mm3:
        rules.update(min_volume_mm3=min(min_volume_mm3, SLIT_VENTRICLE_MIN_VOLUME_MM3),
                     off_midline_mm=SLIT_VENTRICLE_OFF_MIDLINE_MM)
        min_brightness = SLIT_VENTRICLE_MIN_BRIGHTNESS
        if smoothed_noise_sd is not None:
            min_brightness = max(min_brightness, 1.0 + SLIT_VENTRICLE_NOISE_Z * smoothed_noise_sd(SLIT_VENTRICLE_SMOOTHING_MM))
        vent2, other2 = _csf_look(norm_image, brain, box, spacing, depth_mm, sigma_mm=SLIT_VENTRICLE_SMOOTHING_MM,
                                  min_brightness=min_brightness, **rules)
        if np.count_nonzero(vent2) > found:
            vent, other = vent2, other2
            found = np.count_nonzero(vent2)
    if found * voxel_mm3 < small_ventricles_mm3 and BRIDGED_VENTRICLE_SPLIT_MM:
        rules.update(min_volume_mm3=min_volume_mm3, off_midline_mm=None)
        vent3, other3 = _csf_look(norm_image, brain, box, spacing, depth_mm, sigma_mm=VENTRICLE_SMOOTHING_MM,
                                  min_brightness=VENTRICLE_MIN_BRIGHTNESS, split_mm=BRIDGED_VENTRICLE_SPLIT_MM, **rules)
        if np.count_nonzero(vent3) > found:
            vent, other = vent3, other3 | (other & ~vent3)
    return vent, other


def _csf_look(norm_image: np.ndarray, brain: np.ndarray, box: tuple[slice, ...], spacing: np.ndarray,
              depth_mm: np.ndarray, *, sigma_mm: float, min_brightness: float, min_depth_mm: float,
              min_median_depth_mm: float, min_volume_mm3: float, affine: np.ndarray | None,
              midline_x_mm: float | None, major_fraction: float,
              off_midline_mm: float | None = None,
              split_mm: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ventricles, other CSF) of one look of :func:`csf_masks` (``box``: the brain's bounding box).

    ``split_mm``: the bright voxels are split into components at their narrow bridges
    (:func:`split_at_bridges`) rather than by connectivity alone."""
    out = np.zeros(brain.shape, bool)
    other = np.zeros(brain.shape, bool)
    # the smoothing only matters inside the brain's bounding box: it is computed on that box
    # grown by the Gaussian's radius (scipy: int(4 sigma + 0.5) voxels), or up to the array
    # border where the "nearest" extension is then the same, which gives the same values there
    sigma = sigma_mm / spacing
    radius = [int(4.0 * s + 0.5) for s in sigma]
    gbox = tuple(slice(max(0, b.start - r), min(n, b.stop + r)) for b, r, n in zip(box, radius, brain.shape))
    sm = filters.gaussian_filter(norm_image[gbox], sigma, mode="nearest")
    sm = sm[tuple(slice(b.start - g.start, b.stop - g.start) for b, g in zip(box, gbox))]
    br = brain[box]
    inside = sm[br]
    hi = inside[inside > np.percentile(inside, 50)]
    thr = max(_otsu(hi), min_brightness)
    cand = (sm > thr) & br
    if split_mm:
        labels, n = split_at_bridges(cand, spacing, split_mm)
        labelled = labels > 0       # the bridges between the cores are in no component
    else:
        labels, n = cc3d.connected_components(cand.view(np.uint8), connectivity=6, return_N=True)
        labelled = cand
    if n == 0:
        other[box] = cand
        return out, other
    # per-component volume, maximum and median depth over the candidate voxels only
    lab = labels[labelled]
    depth = np.asarray(depth_mm)[box][labelled]
    counts, max_depth, med_depth = _component_depths(lab, depth, n)
    shallow = np.bincount(lab[depth < VENTRICLE_SHALLOW_MM], minlength=n + 1)[1:]
    voxel_mm3 = float(np.prod(spacing))
    keep = np.zeros(n + 1, bool)
    keep[1:] = ((max_depth >= min_depth_mm) & (med_depth >= min_median_depth_mm)
                & (counts * voxel_mm3 >= min_volume_mm3) & (shallow <= VENTRICLE_MAX_SHALLOW_FRACTION * counts))
    if affine is not None and midline_x_mm is not None and keep.sum() > 1:
        keep &= ~_lateral_to_major(labelled, lab, counts, keep, box, affine, midline_x_mm, major_fraction,
                                   off_midline_mm)
    vent = keep[labels]
    if keep.any():
        out[box] = vent
    other[box] = cand & ~vent
    return out, other


def split_at_bridges(mask: np.ndarray, spacing_mm, radius_mm: float) -> tuple[np.ndarray, int]:
    """(labels, n): ``mask`` split where it narrows to less than 2 x ``radius_mm`` across.

    The voxels deeper than ``radius_mm`` inside the mask (its erosion by a ball, exact
    Euclidean distance in mm) form the cores, labelled by 6-connectivity; every mask voxel
    within ``radius_mm`` (plus one voxel diagonal) of a core takes the label of the nearest
    core voxel.  Mask voxels farther from every core (thin sheets, the bridges themselves)
    are 0.  A plain morphological opening would join the cores again through a bridge's
    voxels; the nearest-core labels keep them apart.
    """
    spacing = np.asarray(spacing_mm, float)
    mask = np.asarray(mask, bool)
    inner = edt_lib.edt(np.ascontiguousarray(mask, dtype=np.uint8), anisotropy=tuple(float(x) for x in spacing),
                        black_border=True, parallel=EDT_THREADS)
    cores, n = cc3d.connected_components((inner > radius_mm).view(np.uint8), connectivity=6, return_N=True)
    if n == 0:
        return np.zeros(mask.shape, np.int32), 0
    dist, (ii, jj, kk) = ndimage.distance_transform_edt(cores == 0, sampling=spacing, return_indices=True)
    labels = np.where(mask & (dist <= radius_mm + float(np.linalg.norm(spacing))), cores[ii, jj, kk], 0)
    return labels.astype(np.int32), int(n)


def _lateral_to_major(cand: np.ndarray, lab: np.ndarray, counts: np.ndarray, keep: np.ndarray,
                      box: tuple[slice, ...], affine: np.ndarray, midline_x_mm: float,
                      major_fraction: float, off_midline_mm: float | None = None) -> np.ndarray:
    """Per label (index 0..n): kept components whose centroid lies farther from the midline
    plane than every voxel of the major kept components (see :func:`csf_masks`).

    ``cand``: candidate voxels in ``box``; ``lab``: their labels (1..n, ``labels[cand]``);
    ``counts``: voxels per label 1..n; ``keep``: kept labels (index 0..n).  ``off_midline_mm``:
    when given, the major components are judged among the kept ones whose centroid lies at least
    this far from the midline plane (when there are any): the pieces of slit lateral ventricles
    beside a larger third ventricle.
    """
    ijk = np.argwhere(cand) + np.array([b.start for b in box])     # same order as lab
    dx = ijk @ np.asarray(affine, float)[0, :3] + (float(affine[0, 3]) - midline_x_mm)
    size = np.concatenate([[0], counts])
    centroid = np.bincount(lab, weights=dx, minlength=len(size)) / np.maximum(size, 1)
    judged = keep
    if off_midline_mm is not None and (keep & (np.abs(centroid) >= off_midline_mm)).any():
        judged = keep & (np.abs(centroid) >= off_midline_mm)
    major = judged & (size >= major_fraction * size[judged].max())
    reach = float(np.abs(dx[major[lab]]).max())
    return keep & (np.abs(centroid) > reach)


def _neighbour_differences(image: np.ndarray, mask: np.ndarray, axis: int, lag: int) -> np.ndarray | None:
    """``image[i + lag] - image[i]`` along ``axis`` for the pairs with both voxels in ``mask``
    (C order; a regular subsample of about 200 000 above 400 000 pairs; None below 100 pairs)."""
    box = _bbox(np.asarray(mask, bool))
    if box is None:
        return None
    mask = np.asarray(mask, bool)[box]
    img = np.asarray(image[box], np.float32)
    n = img.shape[axis]
    if n <= lag:
        return None
    a = [slice(None)] * 3
    b = [slice(None)] * 3
    a[axis], b[axis] = slice(lag, n), slice(0, n - lag)
    both = mask[tuple(a)] & mask[tuple(b)]
    if both.sum() < 100:
        return None
    d = img[tuple(a)][both] - img[tuple(b)][both]     # (the same pairs as (img[a] - img[b])[both], no box-sized difference)
    if d.size > 400_000:   # a regular subsample is as good an estimate and 4-8x cheaper
        d = d[:: d.size // 200_000]
    return d


def _difference_sd(d: np.ndarray) -> float:
    """``1.4826 * MAD(d) / sqrt(2)``: the SD of one voxel's noise from differences of two."""
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2.0))


#: lag-2 / lag-1 ratio of neighbour-difference SDs below which the noise along an axis counts as
#: uncorrelated (white noise: 1; the tissue signal adds 0.03-0.14 on the 136 phantom volumes of both
#: generators; an image zero-filled from 1.25x / 1.5x / 2x coarser samples: 1.25 / 1.43 / 1.67)
WHITE_NOISE_MAX_LAG_RATIO = 1.2
#: largest interpolation factor :func:`interpolation_factors` reports
MAX_INTERPOLATION_FACTOR = 3.0


def _sinc_lag_ratio(factor: float) -> float:
    """SD(lag-2 differences) / SD(lag-1 differences) of white noise sinc-interpolated by ``factor``:
    ``sqrt((1 - sinc(2 / F)) / (1 - sinc(1 / F)))`` (``sinc(x) = sin(pi x) / (pi x)``, the
    correlation of samples ``x`` acquired samples apart after zero-filling k-space)."""
    return float(np.sqrt((1.0 - np.sinc(2.0 / factor)) / (1.0 - np.sinc(1.0 / factor))))


def interpolation_factors(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per voxel axis, the grid steps per acquired sample, estimated from the noise (1.0: the noise
    of neighbouring voxels is uncorrelated, the usual case).

    Scanners often reconstruct SWI on a finer grid than they sample (k-space zero-filled, e.g.
    "interpolation" / ZIP): neighbouring voxels then share their noise, and an SD from neighbour
    differences (:func:`noise_sd`) comes out too small (x0.6 at 2x).  Inside ``mask`` the ratio
    ``R = SD(lag-2 differences) / SD(lag-1 differences)`` (:func:`_difference_sd`) is 1 for white
    noise; below :data:`WHITE_NOISE_MAX_LAG_RATIO` the factor is 1, above it the ``F`` whose
    sinc-interpolated white noise has that ratio (:func:`_sinc_lag_ratio`, at most
    :data:`MAX_INTERPOLATION_FACTOR`).  Other k-space filters are approximated by the same model.
    """
    out = np.ones(3)
    box = _bbox(np.asarray(mask, bool))
    if box is None:
        return out
    mask = np.asarray(mask, bool)[box]
    image = image[box]
    # about 300 000 voxel pairs are enough: every k-th plane across another axis (a pair stays a pair)
    step = max(1, int(np.count_nonzero(mask) // 300_000))
    for axis in range(3):
        across = max((a for a in range(3) if a != axis), key=lambda a: mask.shape[a])
        planes = tuple(slice(None, None, step) if a == across else slice(None) for a in range(3))
        d1 = _neighbour_differences(image[planes], mask[planes], axis, 1)
        d2 = _neighbour_differences(image[planes], mask[planes], axis, 2)
        if d1 is None or d2 is None:
            continue
        sd1, sd2 = _difference_sd(d1), _difference_sd(d2)
        if sd1 <= 0 or sd2 < WHITE_NOISE_MAX_LAG_RATIO * sd1:
            continue
        ratio = sd2 / sd1
        if ratio >= _sinc_lag_ratio(MAX_INTERPOLATION_FACTOR):
            out[axis] = MAX_INTERPOLATION_FACTOR
        else:   # _sinc_lag_ratio rises from 1 (F = 1) to its value at the largest factor
            from scipy.optimize import brentq     # imported here: 0.2 s, needed for interpolated scans only

            out[axis] = brentq(lambda f: _sinc_lag_ratio(f) - ratio, 1.0, MAX_INTERPOLATION_FACTOR, xtol=1e-12)
    return out


def noise_sd(image: np.ndarray, mask: np.ndarray, spacing_mm, interpolation=None) -> float:
    """Robust noise standard deviation of ``image`` inside ``mask`` (image units).

    From the differences of neighbouring voxels along the finest voxel axis (the
    noise of two independent voxels adds, the smooth signal cancels):
    ``1.4826 * MAD(d) / sqrt(2)``; tissue edges and veins are outliers that the median
    ignores.  0 when the mask has fewer than 100 voxel pairs; above 400 000 pairs a
    regular subsample of about 200 000 is used.  ``interpolation``: per-axis factors from
    :func:`interpolation_factors`; where the finest axis's is ``F > 1`` the neighbours share
    noise (correlation ``rho = sinc(1 / F)``) and the estimate is divided by ``sqrt(1 - rho)``.
    """
    axis = int(np.argmin(np.asarray(spacing_mm, float)))
    d = _neighbour_differences(image, mask, axis, 1)
    if d is None:
        return 0.0
    sd = _difference_sd(d)
    if interpolation is not None and float(interpolation[axis]) > 1.0:
        sd /= float(np.sqrt(1.0 - np.sinc(1.0 / float(interpolation[axis]))))
    return sd


def smoothed_noise_factor(spacing_mm, sigma_mm: float) -> float:
    """Noise SD after a Gaussian smoothing of ``sigma_mm`` (per axis ``sigma_mm / spacing``,
    scipy's discrete kernel) as a fraction of the SD before, for white noise:
    ``sqrt(prod over axes of sum(w_i^2))``, ``w`` the normalised 1-D kernel weights.

    E.g. 0.5 mm on 0.6 x 0.6 x 2 mm voxels: 0.34; on 0.6 mm isotropic voxels: 0.20.
    """
    factor = 1.0
    for s in np.asarray(spacing_mm, float):
        sigma_vox = float(sigma_mm) / s
        if sigma_vox <= 0:
            continue
        half = int(np.ceil(4.0 * sigma_vox)) + 1
        impulse = np.zeros(2 * half + 1)
        impulse[half] = 1.0
        w = ndimage.gaussian_filter1d(impulse, sigma_vox, mode="constant")
        factor *= float(np.sum(w ** 2))
    return float(np.sqrt(factor))


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
    keys -= keys.min(axis=0)
    n_z = int(keys[:, 1].max()) + 1
    flat = keys[:, 0] * n_z + keys[:, 1]      # cells numbered in (y, z) order
    x = ras[:, 0]
    count = np.bincount(flat)
    lo = np.full(count.size, np.inf)
    hi = np.full(count.size, -np.inf)
    np.minimum.at(lo, flat, x)
    np.maximum.at(hi, flat, x)
    sel = (count >= 8) & (hi - lo > 20.0)
    mids = 0.5 * (lo[sel] + hi[sel])
    if len(mids) < 10:
        return x0
    m = float(np.median(mids))
    return m if abs(m - x0) <= search_mm else x0


#: a head turned in the scanner by less than this (degrees between the mid-sagittal plane's normal and
#: the RAS x axis) is taken as aligned with RAS: its frame is RAS (round 30)
HEAD_TILT_MIN_DEG = 8.0


def symmetry_tilt_deg(brain: np.ndarray, affine: np.ndarray, *, max_tilt_deg: float = 30.0,
                      coarse_deg: float = 3.0, fine_deg: float = 1.0, n_points: int = 10000,
                      grid_mm: float = 1.5) -> tuple[float, float]:
    """(yaw, roll) in degrees of the brain mask's mirror-symmetry plane: the plane through the mask's
    centroid whose normal is the RAS x axis turned by ``roll`` about A-P and then ``yaw`` about S-I
    (``scipy`` Euler "zy"), chosen to put most of the mask's mirror image inside the mask.

    A grid search over +-``max_tilt_deg`` in ``coarse_deg`` steps, then ``fine_deg`` steps around the
    best, on ``n_points`` voxels of the mask taken at about ``grid_mm`` (every k-th voxel per axis),
    drawn with a fixed seed (deterministic).  On the project phantom
    turned by 10-30 degrees of yaw, 30 of roll or 15 of each, it finds them within 1 degree; a turn
    about L-R (pitch) leaves the plane as it is (round 30).
    """
    from scipy.spatial.transform import Rotation

    # the mask at about 1.5 mm (every k-th voxel per axis): its mirror image is judged there
    affine = np.asarray(affine, float)
    step = np.maximum(1, np.round(grid_mm / np.linalg.norm(affine[:3, :3], axis=0))).astype(int)
    brain = np.ascontiguousarray(np.asarray(brain, bool)[tuple(slice(None, None, k) for k in step)])
    affine = affine @ np.diag([*step, 1.0])
    idx = np.argwhere(brain)
    if len(idx) == 0:
        return 0.0, 0.0
    if len(idx) > n_points:
        idx = idx[np.random.default_rng(0).choice(len(idx), n_points, replace=False)]
    p = idx @ affine[:3, :3].T + affine[:3, 3]
    c = p.mean(axis=0)
    inv = np.linalg.inv(affine)
    shape = np.array(brain.shape)

    def score(yaw: float, roll: float) -> float:
        n = Rotation.from_euler("zy", [yaw, roll], degrees=True).apply([1.0, 0.0, 0.0])
        q = p - 2.0 * ((p - c) @ n)[:, None] * n
        ijk = np.rint(q @ inv[:3, :3].T + inv[:3, 3]).astype(np.intp)
        ok = np.all((ijk >= 0) & (ijk < shape), axis=1)
        return float(np.count_nonzero(brain[tuple(ijk[ok].T)]))

    def search(yaws, rolls, start):
        best = start
        for y in yaws:
            for r in rolls:
                cand = (score(y, r), -abs(y) - abs(r), y, r)     # ties: the smaller turn
                if cand > best:
                    best = cand
        return best

    grid = np.arange(-max_tilt_deg, max_tilt_deg + 1e-9, coarse_deg)
    best = search(grid, grid, (score(0.0, 0.0), 0.0, 0.0, 0.0))
    _, _, y0, r0 = best
    fine = np.arange(-coarse_deg, coarse_deg + 1e-9, fine_deg)
    _, _, y1, r1 = search(y0 + fine, r0 + fine, best)
    return float(y1), float(r1)


def head_frame(brain: np.ndarray, affine: np.ndarray, *, min_tilt_deg: float = HEAD_TILT_MIN_DEG
               ) -> tuple[np.ndarray, float, dict]:
    """``(to_head, midline_x, info)``: the 4 x 4 map from RAS mm to the head's frame, in which the
    mid-sagittal plane is ``x = midline_x`` (:func:`midline_x_mm` there), and its provenance
    (``yaw_deg``, ``roll_deg``, ``tilt_deg``, ``turned``).

    The anatomical rules that read RAS axes (the patient's side, the midline rules, the internal
    cerebral veins' A-P course, the foramen of Monro's A-P position) read them in this frame.  The
    head's turn is :func:`symmetry_tilt_deg`; below ``min_tilt_deg`` the frame is RAS itself
    (identity), so a head aligned with the scanner gives what the RAS frame gave.  Otherwise the
    frame is RAS turned about the brain mask's centroid by the inverse of that turn.
    """
    from scipy.spatial.transform import Rotation

    yaw, roll = symmetry_tilt_deg(brain, affine)
    turn = Rotation.from_euler("zy", [yaw, roll], degrees=True).as_matrix()
    tilt = float(np.degrees(np.arccos(np.clip(turn[0, 0], -1.0, 1.0))))
    info = {"yaw_deg": yaw, "roll_deg": roll, "tilt_deg": round(tilt, 2), "turned": tilt >= min_tilt_deg}
    to_head = np.eye(4)
    affine = np.asarray(affine, float)
    if info["turned"]:
        # the mask's centroid without a list of its voxels (millions of index triples)
        centre = affine[:3, :3] @ np.asarray(ndimage.center_of_mass(brain)) + affine[:3, 3]
        to_head[:3, :3] = turn.T
        to_head[:3, 3] = centre - turn.T @ centre
    return to_head, midline_x_mm(brain, to_head @ affine), info


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
