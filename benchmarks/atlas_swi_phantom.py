#!/usr/bin/env python3
"""Atlas-based digital phantom of neonatal brain SWI magnitude images with
exact vein ground truth (``generator="atlas"``).

This is a third generator, written independently of the project's own phantom
and of ``independent_swi_phantom.py``. Its anatomy is not synthetic geometry:
it is a real brain, the adult MNI152 2009a symmetric template shipped inside the
nilearn wheel, shrunk to neonatal size and deformed per case. Veins are placed
with the template's own ventricles, white matter and deep grey matter, and
rendered with a susceptibility (dipole-field) model.

Usage::

    python benchmarks/atlas_swi_phantom.py --out DIR --preset term_3t --seed 1

or ``generate(out_dir, preset, seed) -> dict`` from Python. Nothing is
downloaded: the template files are read from the installed nilearn package
(``nilearn.datasets.load_mni152_template / _gm_template / _wm_template``, which
only open files inside the wheel; this was checked by running the generator
with networking disabled, ``unshare -rn``). The output is deterministic per
(preset, seed).

Coordinates and sides
---------------------
World coordinates are NIfTI RAS+ in mm, as used by nibabel and Slicer: +x
points to the patient's Right, +y Anterior, +z Superior (nibabel: "RAS (left
to Right, posterior to Anterior, inferior to Superior)"; the MNI template has
``aff2axcodes == ('R', 'A', 'S')`` and its right hemisphere at x > 0). A vein's
``side`` is the patient's side: "right" for right-hemisphere veins (x > 0
relative to the midline), "left" for x < 0; the internal cerebral veins and
the superior sagittal sinus are "midline". The SWI affine always maps voxel
indices to these world coordinates, whatever the storage order. B0 points
along world +z (the scanner bore; the head itself is rotated by a few degrees).

Anatomy (all numbers are the chosen values)
-------------------------------------------
* Template: MNI152 2009a sym T1 (skull stripped), GM and WM probability maps,
  1 mm. Brain = T1 > 0.2; GM and WM fractions are the probability maps; CSF =
  1 - GM - WM inside the brain.
* Neonatal size: isotropic shrink so that the brain's fronto-occipital length
  (181 mm in the template) becomes 108 mm at term (factor 0.597, biparietal
  width ~87 mm, brain + ventricles ~370 ml) and 85 mm for the preterm preset
  (factor 0.47, width ~68 mm, ~190 ml).
* Lateral ventricles: CSF > 0.7, deeper than 12 mm, inside a central box,
  connected components > 1500 voxels whose centroid has 5 < |x| < 30 mm,
  grown by 3 voxels into CSF > 0.45. Third ventricle: CSF > 0.45 in |x| <= 3,
  -30 < y < 5, -12 < z < 18 mm (MNI), largest component.
* Deep grey matter: ellipsoid priors in MNI mm (centre; semi-axes) intersected
  with GM > 0.4 voxels deeper than 10 mm: caudate (+-13, 12, 10; 6, 17, 10),
  putamen (+-25, 3, 1; 6, 17, 10), thalamus (+-11, -18, 7; 9, 15, 10); the
  pallidum (+-19, -4, -1; 4.5, 9, 5.5) is the prior itself (bright on T1).
  Caudate body/tail: GM > 0.45 within 4 voxels of a lateral ventricle,
  |x| > 9, -45 < y < 5, z > 2. The template's partial-volume "grey" rim along
  the ventricle walls (3 voxels) is moved to WM.
* Myelinating WM (darker at term): posterior limb of the internal capsule
  (WM with 13 < |x| < 27, -30 < y < 0, -6 < z < 14) and infratentorial WM
  (z < -18), weight 1.0 at term and 0.35 preterm.
* Head: brain envelope = morphological closing (4 mm term, 3.5 mm preterm) of
  the brain; shells by signed distance from it: extracerebral CSF 2.0 mm,
  skull 1.5 mm, scalp 3.0 mm (preterm 2.5 / 1.0 / 2.5 mm), 0.6 mm soft edges.
  The shells also close under the cerebellum (no face, neck or skull base).
* Preterm: lateral ventricles grown by 3-6 template voxels (1.4-2.8 mm) into
  the white matter (not into caudate/thalamus); folding simplified: all
  sulcal CSF and cortex deeper than 4 mm below the brain envelope becomes
  white matter (the interhemispheric fissure is kept), then the GM/WM
  boundary is smoothed (Gaussian sigma 1 voxel, logistic re-sharpening):
  shallower sulci, smoother GM/WM boundary, same ribbon near the surface.
* Per case (seeded): similarity transform with isotropic scale x U(0.97,1.03),
  rotation U(-4, 4) degrees about each axis and shift U(-2, 2) mm per axis,
  plus a smooth non-linear warp: six sinusoidal modes, wavelength 45-90 mm,
  0.35 mm amplitude each (|grad u| < 0.3, inverted by fixed-point iteration
  for the vein centrelines, so image and truth use the same mapping).

Signal model (neonatal SWI magnitude, no minIP)
-----------------------------------------------
Magnitude of a spoiled T2*-weighted gradient echo, S = PD * exp(-TE / T2*),
scaled so that unmyelinated WM = 1000 (T1 saturation is neglected, as for a
low, near-Ernst flip angle). PD, T2* at 3 T, T2* at 1.5 T (ms):
unmyelinated WM 0.92, 90, 130; myelinating WM 0.82, 55, 80; cortex 0.84, 50,
75; caudate 0.84, 48, 70; putamen 0.84, 46, 68; pallidum 0.82, 40, 60;
thalamus 0.83, 42, 62; CSF 1.00, 400, 800; scalp 0.85, 45, 65; skull 0.15,
8, 12; venous blood (Y ~ 0.7, Hct ~ 0.45) 0.90, 12, 30. Relative to WM this
gives at 3 T / TE 25 ms: CSF 1.35, cortex 0.73, caudate 0.74, thalamus 0.66,
pallidum 0.63, myelinating WM 0.75, scalp 0.70, skull 0.01, blood 0.16; at
1.5 T / TE 40 ms blood is 0.35 (similar tissue contrast). Template partial
volume and blur lift the measured cortex/WM ratio to ~0.85.

Veins: susceptibility difference vein - tissue 0.45 ppm (SI) at term (about
Hct * (1 - Y) * 3.39 ppm with Hct 0.45, Y 0.7), 0.40 ppm preterm. Each vein is
an infinite cylinder locally (radius a, unit tangent t, theta = angle to B0):
inside, dB = dchi B0 (3 cos^2 theta - 1) / 6; outside, at distance rho and
azimuth phi from the plane of B0 and t, dB = dchi B0 / 2 (a / rho)^2
sin^2 theta cos 2 phi. Phase = 2 pi gamma_bar dB TE (gamma_bar = 42.577 MHz/T);
at the lumen surface of a vein perpendicular to B0 this is 4.5 rad at 3 T /
TE 25 ms and 3.6 rad at 1.5 T / TE 40 ms, so blooming is stronger at 3 T and
absent for veins parallel to B0 apart from the intravascular phase. Fields of
all veins add. Around every vein, voxels are supersampled with ~0.16 mm
sub-samples (e.g. 3 x 3 x 8 for 0.45 x 0.45 x 1.2 mm voxels) out to the radius
where the intravoxel phase gradient becomes negligible (at least
a + half the voxel diagonal); a vein's field is ignored beyond the radius
where its phase drops below 0.1 rad. Voxel signal = tissue * <exp(i phase)>
over non-lumen sub-samples + blood * <exp(i phase)> over lumen sub-samples
(exact partial volume and intravoxel dephasing). Tissue partial volume comes
from the continuous template maps, averaged over the slice profile (sub-samples
every <= 0.6 mm through thick slices).

Acquisition
-----------
* Coil sensitivity: smooth multiplicative field exp(linear + quadratic terms +
  a brighter rim term) with coefficients scaled by the preset's
  ``bias_amplitude`` (0.15-0.2; about +-15-35 % across the head).
* Point spread: Gaussian of FWHM 0.7 voxel along each voxel axis applied to
  the complex image, on top of the voxel box average (effective FWHM ~1 voxel).
* Noise: complex Gaussian, sigma = 1000 / ``snr_wm`` per channel, then the
  magnitude is taken (Rician; Rayleigh background).
* Oblique preset: the voxel grid is rotated by +-(10-25) degrees about world
  x and y; the continuous anatomy is sampled at the rotated grid's world
  positions, so the affine and the image agree exactly.

Presets
-------
Storage axis codes (``nib.aff2axcodes``), voxel size, matrix, field/TE and the
nominal SNR of unmyelinated WM (noise-free WM magnitude / noise sigma):

* term_3t: LPS, 0.45 x 0.45 x 1.2 mm, 284 x 320 x 100, 3 T / 25 ms, SNR 28.
* term_1p5t: RAS, 0.6 x 0.6 x 2.0 mm, 214 x 240 x 60, 1.5 T / 40 ms, SNR 14.
* preterm: LAS (x flipped), 0.4 x 0.4 x 1.0 mm, 260 x 290 x 100, 3 T / 25 ms,
  SNR 22; preterm anatomy (see above).
* oblique_low_snr: RAS tilted 10-25 degrees about x and y (aff2axcodes gives
  the closest codes), 0.5 x 0.5 x 1.5 mm, 300 x 320 x 100, 3 T / 25 ms, SNR 9.
* isotropic: ASL (sagittal-like storage order), 0.6 mm isotropic,
  240 x 200 x 214, 3 T / 25 ms, SNR 20.

Measured on seeds 1 and 2 (mean image intensity along the centreline against
the mean at the given distance beside it, 1 - I_vein / I_beside): DMVs at
1.5 mm 0.43-0.46 (term_3t), 0.20 (term_1p5t), 0.38-0.40 (preterm), 0.34-0.35
(oblique_low_snr), 0.50-0.52 (isotropic); thalamostriate veins at 2 mm
0.65-0.84 at 3 T and 0.30-0.37 at 1.5 T. WM mean / background Rayleigh sigma
matches the nominal SNR (26.2, 13.4, 21.5-21.8, 9.2, 19.1-19.4). One case takes
14-22 s and at most ~1.6 GB on 2 cores.

Veins (truth in world RAS mm)
-----------------------------
Every centreline is a cubic smoothing spline through control points mapped
to the world, re-sampled every 0.2 mm of arc length, with one diameter per
vein. ``length_mm`` is the polyline arc length, ``tortuosity`` = length /
chord, ``curvature_per_mm`` the arc-length mean of the spline's |curvature|.
Veins of different ids keep a wall-to-wall gap >= 0.4 mm except where they
join (thalamostriate - internal cerebral, anterior caudate - thalamostriate,
cortical veins - superior sagittal sinus).

* dmv: seeds on the lateral / superolateral walls of the lateral ventricles
  (WM voxels adjacent to the ventricle, outward normal with a lateral
  component >= 0.15, above the temporal horns), Poisson-disc spacing 1.3 mm;
  traced outwards along the gradient of the (smoothed) distance to the
  ventricle, i.e. perpendicular to the wall and fanning out, with a turning
  rate <= 0.15 / mm, then given a gentle bow (constant curvature <= 0.08 / mm,
  zero offset at both ends) and, in 60 %, a low wiggle (amplitude <= 0.3 mm,
  wavelength 8-16 mm), both in a fixed frame perpendicular to the chord. Every
  centreline point is checked in WM (WM fraction >= 0.5 beyond the first
  1 mm), >= r + 0.6 mm from cortex / sulcal CSF and >= r + 0.1 mm from deep
  GM; tracing stops ~r + 0.9 mm before the cortex. Length 8-30 mm (preterm
  8-24), start within ~0.5-1 mm of the wall. Diameter log-normal, median
  0.58 mm, log-sd 0.25, clipped to 0.3-1.2 mm (preterm median 0.45, 0.3-0.8).
  18-32 per hemisphere at term, 9-18 preterm (fewer when the wall offers too
  few valid paths).
* thalamic: one thalamostriate vein per side along the caudothalamic groove
  (ventricle voxels within reach of both caudate and thalamus, binned along
  y between y = -28 and -4 MNI mm), running forwards to the foramen of Monro
  and turning medially to the venous angle where the internal cerebral vein
  starts. Diameter 1.0-1.8 mm (preterm 1.0-1.4).
* anterior_caudate: 1-2 per side on the ventricular surface of the caudate
  head (one upper, one lower), draining backwards into the thalamostriate
  vein near the foramen. Diameter 0.6-1.2 mm (preterm 0.6-0.9).
* internal_cerebral: two paramedian veins (side "midline") from the venous
  angle (MNI y = -5, z = 12) backwards above the roof of the third ventricle
  to below the splenium (y = -34), gently arched; centre-to-centre gap at
  least the sum of radii + 1.5 mm. Diameter 1.5-2.5 mm (preterm 1.5-2.0).
* other: superior sagittal sinus in the midline, 1 mm outside the brain
  envelope from the frontal to the occipital region (diameter 3-4 mm, preterm
  2.5-3.2) and 2-4 (preterm 2-3) superficial cortical veins per hemisphere in
  the extracerebral CSF, from the lateral convexity up to the sinus
  (diameter 1.0-2.0 mm, preterm 1.0-1.5).

Outputs (``out_dir``)
---------------------
``swi.nii.gz`` float32 magnitude; ``brain_mask.nii.gz`` (labels 4-11);
``ventricles.nii.gz`` (label 4); ``labels.nii.gz`` uint8 with codes
0 air, 1 scalp, 2 skull, 3 extracerebral/sulcal CSF, 4 ventricular CSF
(lateral + third), 5 cortical GM (incl. cerebellar), 6 unmyelinated WM,
7 myelinating WM, 8 caudate, 9 putamen, 10 pallidum, 11 thalamus, 12 vein
lumen (>= 50 % of the voxel); all on the SWI grid, qform and sform code 1.
``vessels.json``: ``{"vessels": [...], "generator": "atlas", "preset",
"seed"}``.

Limitations: the anatomy is one (averaged, hence smooth) adult brain, scaled
isotropically; neonatal shape differences (relatively large occiput, small
cerebellum), fontanelles, skull base and face are not modelled; deep GM
boundaries are heuristic; background phase, flow and T1 weighting are
ignored; the point spread is applied after the coil sensitivity.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
import zlib
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi
from scipy import interpolate
from scipy.spatial import cKDTree

# ---------------------------------------------------------------------------
# Label codes (labels.nii.gz)
# ---------------------------------------------------------------------------
LABEL_AIR = 0
LABEL_SCALP = 1
LABEL_SKULL = 2
LABEL_EXTRA_CSF = 3
LABEL_VENTRICLE = 4
LABEL_CORTEX = 5
LABEL_WM = 6
LABEL_MYELINATED_WM = 7
LABEL_CAUDATE = 8
LABEL_PUTAMEN = 9
LABEL_PALLIDUM = 10
LABEL_THALAMUS = 11
LABEL_VEIN = 12
LABEL_NAMES = {
    LABEL_AIR: "air / background",
    LABEL_SCALP: "scalp (skin, fat, muscle)",
    LABEL_SKULL: "skull",
    LABEL_EXTRA_CSF: "extracerebral and sulcal CSF",
    LABEL_VENTRICLE: "ventricular CSF (lateral + third ventricles)",
    LABEL_CORTEX: "cortical grey matter (cerebral and cerebellar)",
    LABEL_WM: "unmyelinated white matter",
    LABEL_MYELINATED_WM: "myelinating white matter (PLIC, brainstem, cerebellar WM)",
    LABEL_CAUDATE: "caudate nucleus",
    LABEL_PUTAMEN: "putamen",
    LABEL_PALLIDUM: "globus pallidus",
    LABEL_THALAMUS: "thalamus",
    LABEL_VEIN: "vein lumen (>= 50 % of the voxel)",
}
DEEP_GM_LABELS = (LABEL_CAUDATE, LABEL_PUTAMEN, LABEL_PALLIDUM, LABEL_THALAMUS)
BRAIN_LABELS = (LABEL_VENTRICLE, LABEL_CORTEX, LABEL_WM, LABEL_MYELINATED_WM) + DEEP_GM_LABELS

# Deep grey matter priors: ellipsoids in MNI152 (2009 sym) mm, right side
# (mirrored for the left), intersected with grey-matter-like template voxels.
DEEP_GM_ELLIPSOIDS_MNI = {
    LABEL_CAUDATE: ((13.0, 12.0, 10.0), (6.0, 17.0, 10.0)),
    LABEL_PUTAMEN: ((25.0, 3.0, 1.0), (6.0, 17.0, 10.0)),
    LABEL_PALLIDUM: ((19.0, -4.0, -1.0), (4.5, 9.0, 5.5)),
    LABEL_THALAMUS: ((11.0, -18.0, 7.0), (9.0, 15.0, 10.0)),
}

MNI_BRAIN_LENGTH_MM = 181.0  # fronto-occipital extent of the template brain mask
TEMPLATE_MARGIN_VOX = 18  # room for CSF, skull and scalp around the brain
GAMMA_BAR_HZ_PER_T = 42.577e6


# ---------------------------------------------------------------------------
# Small numerical helpers
# ---------------------------------------------------------------------------
def _ramp(x, width_mm=0.6):
    """Soft step: 0 for x << 0, 1 for x >> 0, linear over ``width_mm``."""
    return np.clip(0.5 + np.asarray(x, np.float32) / np.float32(width_mm), 0.0, 1.0)


def _sample(volume, index_points, order=1, cval=0.0):
    """Sample ``volume`` at (N, 3) fractional voxel indices."""
    return ndi.map_coordinates(volume, np.asarray(index_points, np.float64).T,
                               order=order, mode="constant", cval=cval)


def _rotation_matrix(angles_deg):
    """Rotation about world x, then y, then z (angles in degrees)."""
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _edt_mm(mask, spacing_mm):
    """Distance (mm) from every True voxel to the nearest False voxel."""
    return ndi.distance_transform_edt(mask, sampling=spacing_mm).astype(np.float32)


# ---------------------------------------------------------------------------
# Template loading and canonical neonatal anatomy
# ---------------------------------------------------------------------------
def _load_mni_template():
    """MNI152 2009 sym T1, GM and WM maps shipped inside the nilearn wheel.

    Only files inside the installed package are read (no fetcher is called).
    Returns float32 arrays scaled 0..1 and the voxel -> MNI mm affine.
    """
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=1)
    gm = datasets.load_mni152_gm_template(resolution=1)
    wm = datasets.load_mni152_wm_template(resolution=1)
    for img in (gm, wm):
        if img.shape != t1.shape or not np.allclose(img.affine, t1.affine):
            raise RuntimeError("nilearn MNI152 maps are not on a common grid")
    arrays = [np.asarray(img.dataobj, dtype=np.float32) for img in (t1, gm, wm)]
    return arrays[0], arrays[1], arrays[2], np.asarray(t1.affine, np.float64)


@dataclass
class Anatomy:
    """Neonatal anatomy on the (cropped) template voxel grid.

    ``affine`` maps voxel indices to *canonical* neonatal mm, i.e. MNI mm times
    ``scale`` (the age-dependent isotropic shrink factor).
    """

    scale: float
    affine: np.ndarray
    spacing_mm: tuple
    wm: np.ndarray          # white-matter fraction (after neonatal edits)
    gm: np.ndarray          # grey-matter fraction (cortex + deep GM)
    parenchyma: np.ndarray  # wm + gm, limited to the intracranial space
    csf: np.ndarray         # CSF fraction (ventricles, sulci, extracerebral)
    skull: np.ndarray
    scalp: np.ndarray
    deep: np.ndarray        # uint8 deep GM label (0 or one of DEEP_GM_LABELS)
    myelinated: np.ndarray  # float32 weight of myelinating WM
    ventricles: np.ndarray  # bool: lateral + third ventricles
    lateral_side: np.ndarray  # int8: +1 right lateral ventricle, -1 left, 0 none
    third: np.ndarray       # bool: third ventricle
    envelope_sd_mm: np.ndarray  # signed distance to the brain envelope (+ outside)
    labels: np.ndarray      # uint8 tissue labels
    mni_x_mm: np.ndarray    # 1-D MNI x of each index along axis 0
    mni_y_mm: np.ndarray
    mni_z_mm: np.ndarray
    layers_mm: dict = field(default_factory=dict)

    @property
    def inverse_affine(self):
        return np.linalg.inv(self.affine)

    def index_from_canonical(self, points_mm):
        inv = self.inverse_affine
        return np.asarray(points_mm) @ inv[:3, :3].T + inv[:3, 3]

    def canonical_from_index(self, index_points):
        return np.asarray(index_points, np.float64) @ self.affine[:3, :3].T + self.affine[:3, 3]

    def canonical_from_mni(self, points_mni):
        return np.asarray(points_mni, np.float64) * self.scale


def _crop_template(t1, gm, wm, affine):
    """Crop/pad the template to the brain bounding box plus a margin."""
    brain = t1 > 0.2
    idx = np.argwhere(brain)
    lo = idx.min(0) - TEMPLATE_MARGIN_VOX
    hi = idx.max(0) + TEMPLATE_MARGIN_VOX + 1
    shape = tuple(int(h - l) for l, h in zip(lo, hi))
    out = []
    for arr in (t1, gm, wm):
        res = np.zeros(shape, np.float32)
        src = tuple(slice(max(l, 0), min(h, n)) for l, h, n in zip(lo, hi, arr.shape))
        dst = tuple(slice(s.start - l, s.stop - l) for s, l in zip(src, lo))
        res[dst] = arr[src]
        out.append(res)
    shift = np.eye(4)
    shift[:3, 3] = lo
    return out[0], out[1], out[2], affine @ shift


def _mni_axes(shape, affine_mni):
    return [np.arange(n) * affine_mni[i, i] + affine_mni[i, 3] for i, n in enumerate(shape)]


def _find_ventricles(csf, brain_depth_vox, x, y, z):
    """Lateral and third ventricles from dark-on-T1 CSF near the centre."""
    X, Y, Z = np.meshgrid(x, y, z, indexing="ij", sparse=True)
    central = (np.abs(X) < 40) & (Y > -60) & (Y < 45) & (Z > -20) & (Z < 40)
    core = (csf > 0.7) & (brain_depth_vox > 12) & central
    lab, n = ndi.label(core)
    sizes = ndi.sum(core, lab, range(1, n + 1))
    lateral = np.zeros(csf.shape, np.int8)
    for i in np.flatnonzero(sizes > 1500):
        com = ndi.center_of_mass(core, lab, i + 1)
        x_mm = np.interp(com[0], np.arange(len(x)), x)
        if 5.0 < abs(x_mm) < 30.0:
            lateral[lab == i + 1] = 1 if x_mm > 0 else -1
    for side in (1, -1):
        grown = ndi.binary_dilation(lateral == side, iterations=3, mask=(csf > 0.45) & (X * side > 0))
        lateral[grown] = side
    third = (csf > 0.45) & (np.abs(X) <= 3) & (Y > -30) & (Y < 5) & (Z > -12) & (Z < 18)
    lab3, n3 = ndi.label(third)
    if n3:
        sizes3 = ndi.sum(third, lab3, range(1, n3 + 1))
        third = lab3 == (int(np.argmax(sizes3)) + 1)
    third &= lateral == 0
    return lateral, third


def _find_deep_gm(gm, csf, brain_depth_vox, ventricles, x, y, z):
    """Caudate, putamen, pallidum and thalamus from ellipsoid priors."""
    X, Y, Z = np.meshgrid(x, y, z, indexing="ij", sparse=True)
    candidate = (gm > 0.4) & (csf < 0.5) & (brain_depth_vox > 10) & ~ventricles
    deep = np.zeros(gm.shape, np.uint8)
    best = np.full(gm.shape, np.inf, np.float32)
    for label, (centre, semi) in DEEP_GM_ELLIPSOIDS_MNI.items():
        for sign in (1.0, -1.0):
            dist = np.sqrt(((X - sign * centre[0]) / semi[0]) ** 2 + ((Y - centre[1]) / semi[1]) ** 2
                           + ((Z - centre[2]) / semi[2]) ** 2).astype(np.float32)
            if label == LABEL_PALLIDUM:  # bright on T1 (iron, fibres): use the prior itself
                inside = (dist < 1.0) & (csf < 0.5) & ~ventricles
            else:
                inside = candidate & (dist < 1.3)
            take = inside & (dist < best)
            best[take] = dist[take]
            deep[take] = label
    # caudate body and tail: grey matter hugging the lateral ventricle wall
    near_lateral = ndi.binary_dilation(ventricles & (np.abs(X) > 3), iterations=4)
    body = ((gm > 0.45) & near_lateral & ~ventricles & (deep == 0) & (Y > -45) & (Y < 5) & (Z > 2)
            & (np.abs(X) > 9))
    deep[body] = LABEL_CAUDATE
    # remove specks
    for label in DEEP_GM_LABELS:
        m = deep == label
        opened = ndi.binary_opening(m, iterations=1)
        deep[m & ~opened] = 0
    return deep


def _brain_envelope_sd_mm(parenchyma, spacing_mm, closing_mm):
    """Signed distance (mm, + outside) to a closed, hole-free brain envelope.

    Computed on a 2x down-sampled grid (the envelope is smooth) and linearly
    interpolated back.
    """
    f = 2
    small = parenchyma[::f, ::f, ::f] > 0.4
    sp = tuple(s * f for s in spacing_mm)
    outside = _edt_mm(~small, sp)
    dilated = outside <= closing_mm
    closed = _edt_mm(dilated, sp) > closing_mm
    closed = ndi.binary_fill_holes(closed | small)
    sd_small = _edt_mm(~closed, sp) - _edt_mm(closed, sp)
    coords = np.meshgrid(*[np.arange(n) / f for n in parenchyma.shape], indexing="ij", sparse=False)
    return ndi.map_coordinates(sd_small, coords, order=1, mode="nearest").astype(np.float32)


def build_anatomy(preset, rng):
    """Scale the MNI template to neonatal size and derive tissue classes."""
    t1, gm, wm, aff_mni_full = _load_mni_template()
    t1, gm, wm, aff_mni = _crop_template(t1, gm, wm, aff_mni_full)
    x, y, z = _mni_axes(t1.shape, aff_mni)
    scale = preset["brain_length_mm"] / MNI_BRAIN_LENGTH_MM
    spacing = (scale, scale, scale)
    brain = t1 > 0.2
    brain_depth = ndi.distance_transform_edt(brain).astype(np.float32)
    parenchyma = np.clip(gm + wm, 0.0, 1.0) * brain
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0) * brain

    lateral, third = _find_ventricles(csf, brain_depth, x, y, z)
    deep = _find_deep_gm(gm, csf, brain_depth, (lateral != 0) | third, x, y, z)
    # preterm: larger lateral ventricles, grown into the white matter only
    lo_vox, hi_vox = preset["ventricle_dilation_vox"]
    dilate_vox = int(rng.integers(lo_vox, hi_vox + 1))
    X = x[:, None, None]
    for side in (1, -1):
        if dilate_vox > 0:
            allowed = brain & (X * side > 1.0) & (deep == 0)
            grown = ndi.binary_dilation(lateral == side, iterations=dilate_vox, mask=allowed)
            lateral[grown] = side
    for side in (1, -1):  # close pockets left inside the grown ventricle
        lateral[ndi.binary_fill_holes(lateral == side) & (lateral == 0)] = side
    ventricles = (lateral != 0) | third
    deep[ventricles] = 0

    # Periventricular rim: the adult template shows a partial-volume "grey"
    # rim at CSF/WM walls. Neonatal walls are WM (or deep GM), so move it to WM.
    rim = ndi.binary_dilation(ventricles, iterations=3) & ~ventricles & (deep == 0)
    wm = wm.copy()
    gm = gm.copy()
    wm[rim] = np.clip(wm[rim] + gm[rim], 0, 1)
    gm[rim] = 0.0
    gm[ventricles] = 0.0
    wm[ventricles] = 0.0

    if preset["max_sulcus_depth_mm"] is not None:
        Xs, Ys, Zs = np.meshgrid(x, y, z, indexing="ij", sparse=True)
        brainstem = (np.abs(Xs) < 15) & (Ys < -5) & (Ys > -45) & (Zs < -5)
        keep = (deep > 0) | ventricles | brainstem
        wm, gm = _simplify_folding(wm, gm, keep, x, scale, preset["max_sulcus_depth_mm"],
                                   preset["envelope_closing_mm"])

    parenchyma = np.clip(gm + wm, 0.0, 1.0)
    parenchyma[ventricles] = 0.0

    # myelinating white matter at term: PLIC, brainstem, cerebellar WM
    Xs, Ys, Zs = np.meshgrid(x, y, z, indexing="ij", sparse=True)
    plic = ((wm > 0.5) & (np.abs(Xs) > 13) & (np.abs(Xs) < 27) & (Ys > -30) & (Ys < 0)
            & (Zs > -6) & (Zs < 14) & (deep == 0))
    infratentorial = (wm > 0.5) & (Zs < -18)
    myelinated = ndi.gaussian_filter((plic | infratentorial).astype(np.float32), 0.8)
    myelinated *= np.float32(preset["myelination_weight"])

    sd = _brain_envelope_sd_mm(np.where(ventricles, 1.0, parenchyma), spacing, preset["envelope_closing_mm"])
    layers = preset["layers_mm"]
    inner = _ramp(layers["csf"] - sd)
    skull_out = _ramp(layers["csf"] + layers["skull"] - sd)
    scalp_out = _ramp(layers["csf"] + layers["skull"] + layers["scalp"] - sd)
    parenchyma = np.minimum(parenchyma, inner)
    csf = np.clip(inner - parenchyma, 0.0, 1.0)
    skull = skull_out - inner
    scalp = scalp_out - skull_out

    affine = np.diag([scale, scale, scale, 1.0]) @ aff_mni
    anat = Anatomy(scale=scale, affine=affine, spacing_mm=spacing, wm=wm, gm=gm, parenchyma=parenchyma,
                   csf=csf, skull=skull, scalp=scalp, deep=deep, myelinated=myelinated,
                   ventricles=ventricles, lateral_side=lateral, third=third, envelope_sd_mm=sd,
                   labels=None, mni_x_mm=x, mni_y_mm=y, mni_z_mm=z, layers_mm=dict(layers))
    anat.labels = _tissue_labels(anat)
    return anat


def _simplify_folding(wm, gm, keep, x_mm, scale, sulcus_depth_mm, closing_mm):
    """Preterm folding: everything deeper than ``sulcus_depth_mm`` below the
    brain envelope becomes white matter (sulcal fundi and their grey matter
    are filled; the interhemispheric fissure is kept), then the GM/WM boundary
    is smoothed. Shallower sulci, same cortical ribbon near the surface.
    Voxels in ``keep`` are left unchanged."""
    spacing = (scale, scale, scale)
    par = np.clip(gm + wm, 0, 1)
    depth_below_envelope = -_brain_envelope_sd_mm(par, spacing, closing_mm)
    fill = _ramp(depth_below_envelope - sulcus_depth_mm, width_mm=1.5)
    fill[np.abs(x_mm) < 4.0] = 0.0
    par_new = np.maximum(par, fill)
    wm_new = ndi.gaussian_filter(np.maximum(wm, fill), 1.0)
    wm_new = np.minimum(1.0 / (1.0 + np.exp(-(wm_new - 0.5) / 0.1)), par_new)
    wm_new = np.where(keep, wm, wm_new).astype(np.float32)
    gm_new = np.where(keep, gm, np.clip(par_new - wm_new, 0, 1)).astype(np.float32)
    return wm_new, gm_new


def _tissue_labels(anat):
    """Dominant-class label per canonical voxel."""
    air = np.clip(1.0 - anat.parenchyma - anat.csf - anat.skull - anat.scalp, 0, 1)
    stack = np.stack([air, anat.scalp, anat.skull, anat.csf, anat.parenchyma])
    winner = np.argmax(stack, axis=0)
    labels = np.zeros(winner.shape, np.uint8)
    labels[winner == 1] = LABEL_SCALP
    labels[winner == 2] = LABEL_SKULL
    csf_vox = winner == 3
    labels[csf_vox] = LABEL_EXTRA_CSF
    labels[csf_vox & anat.ventricles] = LABEL_VENTRICLE
    par = winner == 4
    labels[par] = np.where(anat.wm[par] >= anat.gm[par], LABEL_WM, LABEL_CORTEX)
    labels[par & (anat.myelinated > 0.25) & (anat.wm >= anat.gm)] = LABEL_MYELINATED_WM
    deep = par & (anat.deep > 0)
    labels[deep] = anat.deep[deep]
    labels[anat.ventricles & (winner >= 3)] = LABEL_VENTRICLE
    return labels


# ---------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------
_TERM_ANATOMY = dict(
    age="term",
    brain_length_mm=108.0,          # fronto-occipital brain length (biparietal ~87 mm)
    myelination_weight=1.0,         # PLIC / brainstem myelination visible at term
    envelope_closing_mm=4.0,
    layers_mm=dict(csf=2.0, skull=1.5, scalp=3.0),
    ventricle_dilation_vox=(0, 0),
    max_sulcus_depth_mm=None,       # keep the template's folding
    n_dmv_per_side=(18, 32),
    dmv_diameter_median_mm=0.58,
    dmv_diameter_log_sd=0.25,
    dmv_diameter_range_mm=(0.3, 1.2),
    dmv_length_range_mm=(8.0, 30.0),
    thalamostriate_diameter_mm=(1.0, 1.8),
    anterior_caudate_diameter_mm=(0.6, 1.2),
    internal_cerebral_diameter_mm=(1.5, 2.5),
    cortical_diameter_mm=(1.0, 2.0),
    n_cortical_per_side=(2, 4),
    sss_diameter_mm=(3.0, 4.0),
    dchi_ppm=0.45,
)
_PRETERM_ANATOMY = dict(
    _TERM_ANATOMY,
    age="preterm",
    brain_length_mm=85.0,
    myelination_weight=0.35,
    envelope_closing_mm=3.5,
    layers_mm=dict(csf=2.5, skull=1.0, scalp=2.5),
    ventricle_dilation_vox=(3, 6),
    max_sulcus_depth_mm=4.0,
    n_dmv_per_side=(9, 18),
    dmv_diameter_median_mm=0.45,
    dmv_diameter_log_sd=0.2,
    dmv_diameter_range_mm=(0.3, 0.8),
    dmv_length_range_mm=(8.0, 24.0),
    thalamostriate_diameter_mm=(1.0, 1.4),
    anterior_caudate_diameter_mm=(0.6, 0.9),
    internal_cerebral_diameter_mm=(1.5, 2.0),
    cortical_diameter_mm=(1.0, 1.5),
    n_cortical_per_side=(2, 3),
    sss_diameter_mm=(2.5, 3.2),
    dchi_ppm=0.40,
)

PRESETS = {
    "term_3t": dict(
        _TERM_ANATOMY,
        description="term neonate, 3 T, axial 0.45 x 0.45 x 1.2 mm, good SNR, stored LPS",
        field_T=3.0, te_ms=25.0,
        voxel_mm=(0.45, 0.45, 1.2), fov_mm=(128.0, 144.0, 120.0), orientation="LPS",
        oblique_deg=(0.0, 0.0), snr_wm=28.0, psf_fwhm_vox=0.7, bias_amplitude=0.15,
    ),
    "term_1p5t": dict(
        _TERM_ANATOMY,
        description="term neonate, 1.5 T, axial 0.6 x 0.6 x 2.0 mm, lower SNR, stored RAS",
        field_T=1.5, te_ms=40.0,
        voxel_mm=(0.6, 0.6, 2.0), fov_mm=(128.0, 144.0, 120.0), orientation="RAS",
        oblique_deg=(0.0, 0.0), snr_wm=14.0, psf_fwhm_vox=0.7, bias_amplitude=0.15,
    ),
    "preterm": dict(
        _PRETERM_ANATOMY,
        description="preterm (~30-32 weeks), 3 T, axial 0.4 x 0.4 x 1.0 mm, stored LAS (x flipped)",
        field_T=3.0, te_ms=25.0,
        voxel_mm=(0.4, 0.4, 1.0), fov_mm=(104.0, 116.0, 100.0), orientation="LAS",
        oblique_deg=(0.0, 0.0), snr_wm=22.0, psf_fwhm_vox=0.7, bias_amplitude=0.15,
    ),
    "oblique_low_snr": dict(
        _TERM_ANATOMY,
        description="term neonate, 3 T, 0.5 x 0.5 x 1.5 mm grid tilted 10-25 deg about x and y, low SNR",
        field_T=3.0, te_ms=25.0,
        voxel_mm=(0.5, 0.5, 1.5), fov_mm=(150.0, 160.0, 150.0), orientation="RAS",
        oblique_deg=(10.0, 25.0), snr_wm=9.0, psf_fwhm_vox=0.7, bias_amplitude=0.2,
    ),
    "isotropic": dict(
        _TERM_ANATOMY,
        description="term neonate, 3 T, 0.6 mm isotropic 3-D, stored ASL (sagittal-like order)",
        field_T=3.0, te_ms=25.0,
        voxel_mm=(0.6, 0.6, 0.6), fov_mm=(144.0, 120.0, 128.0), orientation="ASL",
        oblique_deg=(0.0, 0.0), snr_wm=20.0, psf_fwhm_vox=0.7, bias_amplitude=0.15,
    ),
}

# Tissue properties: proton density (relative) and T2* (ms) at 3 T and 1.5 T.
TISSUE_PD_T2STAR = {
    #              PD     T2*(3T) T2*(1.5T)
    "wm":        (0.92,  90.0, 130.0),
    "wm_myel":   (0.82,  55.0,  80.0),
    "cortex":    (0.84,  50.0,  75.0),
    LABEL_CAUDATE: (0.84, 48.0, 70.0),
    LABEL_PUTAMEN: (0.84, 46.0, 68.0),
    LABEL_PALLIDUM: (0.82, 40.0, 60.0),
    LABEL_THALAMUS: (0.83, 42.0, 62.0),
    "csf":       (1.00, 400.0, 800.0),
    "scalp":     (0.85,  45.0,  65.0),
    "skull":     (0.15,   8.0,  12.0),
    "blood":     (0.90,  12.0,  30.0),   # venous blood, Y ~ 0.7, Hct ~ 0.45
}
SIGNAL_WM_AU = 1000.0  # noise-free unmyelinated WM magnitude (arbitrary units)


def tissue_level(name, preset):
    """Relative magnitude PD * exp(-TE / T2*) scaled so that WM = SIGNAL_WM_AU."""
    def raw(key):
        pd, t2s_3t, t2s_15t = TISSUE_PD_T2STAR[key]
        t2s = t2s_3t if preset["field_T"] >= 2.0 else t2s_15t
        return pd * math.exp(-preset["te_ms"] / t2s)
    return SIGNAL_WM_AU * raw(name) / raw("wm")


def tissue_signal_map(anat, preset):
    """Noise-free magnitude on the canonical grid (float32)."""
    s_wm = tissue_level("wm", preset)
    s_myel = tissue_level("wm_myel", preset)
    s_cortex = tissue_level("cortex", preset)
    wm_level = (1.0 - anat.myelinated) * s_wm + anat.myelinated * s_myel
    frac_gm_of_par = anat.gm / np.maximum(anat.gm + anat.wm, 1e-3)
    par_level = frac_gm_of_par * s_cortex + (1.0 - frac_gm_of_par) * wm_level
    for label in DEEP_GM_LABELS:
        weight = ndi.gaussian_filter((anat.deep == label).astype(np.float32), 0.7)
        par_level = (1.0 - weight) * par_level + weight * tissue_level(label, preset)
    signal = (anat.parenchyma * par_level + anat.csf * tissue_level("csf", preset)
              + anat.skull * tissue_level("skull", preset) + anat.scalp * tissue_level("scalp", preset))
    return signal.astype(np.float32)


# ---------------------------------------------------------------------------
# Per-case random similarity transform + smooth warp
# ---------------------------------------------------------------------------
@dataclass
class CaseTransform:
    """world = R * scale * v + shift, canonical = v + u(v)  (u: smooth warp)."""

    rotation: np.ndarray
    scale: float
    shift_mm: np.ndarray
    warp_wavevectors: np.ndarray  # (K, 3) rad/mm
    warp_phases: np.ndarray       # (K,)
    warp_amplitudes_mm: np.ndarray  # (K, 3)

    def displacement_mm(self, v):
        phase = v @ self.warp_wavevectors.T + self.warp_phases
        return np.sin(phase) @ self.warp_amplitudes_mm

    def canonical_from_world(self, p):
        v = ((np.asarray(p, np.float64) - self.shift_mm) @ self.rotation) / self.scale
        return v + self.displacement_mm(v)

    def world_from_canonical(self, q):
        q = np.asarray(q, np.float64)
        v = q.copy()
        for _ in range(30):  # fixed point; the warp is a contraction (|grad u| < 0.3)
            v = q - self.displacement_mm(v)
        return (self.scale * v) @ self.rotation.T + self.shift_mm


def random_case_transform(rng):
    """Scale jitter +-3 %, rotation +-4 deg per axis, shift +-2 mm, warp ~1 mm."""
    rotation = _rotation_matrix(rng.uniform(-4.0, 4.0, 3))
    scale = float(rng.uniform(0.97, 1.03))
    shift = rng.uniform(-2.0, 2.0, 3)
    n_modes = 6
    directions = rng.normal(size=(n_modes, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    wavelengths_mm = rng.uniform(45.0, 90.0, n_modes)
    wavevectors = directions * (2 * np.pi / wavelengths_mm)[:, None]
    phases = rng.uniform(0, 2 * np.pi, n_modes)
    amplitudes = rng.normal(size=(n_modes, 3))
    amplitudes *= (0.35 / np.linalg.norm(amplitudes, axis=1, keepdims=True))
    return CaseTransform(rotation, scale, shift, wavevectors, phases, amplitudes)


# ---------------------------------------------------------------------------
# Acquisition grid
# ---------------------------------------------------------------------------
_AXCODE_VECTORS = {"R": (1, 0, 0), "L": (-1, 0, 0), "A": (0, 1, 0), "P": (0, -1, 0),
                   "S": (0, 0, 1), "I": (0, 0, -1)}


@dataclass
class Grid:
    shape: tuple
    affine: np.ndarray
    voxel_mm: np.ndarray
    oblique_deg: tuple

    def world_from_index(self, ijk):
        return np.asarray(ijk, np.float64) @ self.affine[:3, :3].T + self.affine[:3, 3]

    def index_from_world(self, xyz):
        inv = np.linalg.inv(self.affine)
        return np.asarray(xyz, np.float64) @ inv[:3, :3].T + inv[:3, 3]


def acquisition_grid(preset, transform, anat, rng):
    """Voxel grid: storage order from the preset's axis codes, optional tilt."""
    directions = np.array([_AXCODE_VECTORS[c] for c in preset["orientation"]], np.float64).T
    lo, hi = preset["oblique_deg"]
    if hi > 0:
        angles = rng.uniform(lo, hi, 2) * rng.choice([-1.0, 1.0], 2)
        tilt = _rotation_matrix((angles[0], angles[1], 0.0))
        oblique = (float(angles[0]), float(angles[1]))
    else:
        tilt = np.eye(3)
        oblique = (0.0, 0.0)
    voxel = np.asarray(preset["voxel_mm"], np.float64)
    shape = tuple(int(2 * round(f / v / 2)) for f, v in zip(preset["fov_mm"], voxel))
    head = np.argwhere(anat.scalp + anat.skull + anat.csf + anat.parenchyma > 0.5)
    centre_canonical = anat.canonical_from_index((head.min(0) + head.max(0)) / 2.0)
    centre_world = transform.world_from_canonical(centre_canonical[None])[0] + rng.uniform(-3, 3, 3)
    matrix = tilt @ directions @ np.diag(voxel)
    affine = np.eye(4)
    affine[:3, :3] = matrix
    affine[:3, 3] = centre_world - matrix @ ((np.array(shape) - 1) / 2.0)
    return Grid(shape, affine, voxel, oblique)


def sample_anatomy_on_grid(grid, transform, anat, signal_canonical):
    """Tissue magnitude (slice-profile averaged) and labels on the SWI grid."""
    shape = grid.shape
    thick_axis = int(np.argmax(grid.voxel_mm))
    n_sub = 1
    if grid.voxel_mm[thick_axis] > 1.5 * grid.voxel_mm.min():
        n_sub = int(math.ceil(grid.voxel_mm[thick_axis] / 0.6))
    offsets = np.zeros((n_sub, 3))
    offsets[:, thick_axis] = (np.arange(n_sub) + 0.5) / n_sub - 0.5
    signal = np.empty(shape, np.float32)
    labels = np.empty(shape, np.uint8)
    j, k = np.meshgrid(np.arange(shape[1]), np.arange(shape[2]), indexing="ij")
    jk = np.stack([j.ravel(), k.ravel()], axis=1).astype(np.float64)
    slab = max(1, int(1_500_000 // jk.shape[0]))
    for i0 in range(0, shape[0], slab):
        i_values = np.arange(i0, min(i0 + slab, shape[0]))
        ijk = np.concatenate([np.column_stack([np.full(len(jk), i), jk]) for i in i_values])
        acc = np.zeros(len(ijk), np.float64)
        for off in offsets:
            idx = anat.index_from_canonical(transform.canonical_from_world(grid.world_from_index(ijk + off)))
            acc += _sample(signal_canonical, idx, order=1)
        idx = anat.index_from_canonical(transform.canonical_from_world(grid.world_from_index(ijk)))
        lab = _sample(anat.labels, idx, order=0)
        signal[i_values] = (acc / n_sub).reshape(len(i_values), shape[1], shape[2])
        labels[i_values] = lab.reshape(len(i_values), shape[1], shape[2])
    return signal, labels


# ---------------------------------------------------------------------------
# Vein centrelines: geometry helpers
# ---------------------------------------------------------------------------
CENTRELINE_SPACING_MM = 0.2
VEIN_CLEARANCE_MM = 0.4  # minimum wall-to-wall gap between veins that do not join


@dataclass
class Vein:
    name: str
    region: str
    side: str
    diameter_mm: float
    points_mm: np.ndarray          # (n, 3) world RAS, 0.2 mm arc-length spacing
    curvature_per_mm: np.ndarray   # (n,) |curvature| of the smooth centreline
    may_touch: frozenset = frozenset()

    @property
    def radius_mm(self):
        return 0.5 * self.diameter_mm

    def truncated(self, n_points):
        return Vein(self.name, self.region, self.side, self.diameter_mm, self.points_mm[:n_points],
                    self.curvature_per_mm[:n_points], self.may_touch)

    def length_mm(self):
        return float(np.linalg.norm(np.diff(self.points_mm, axis=0), axis=1).sum())

    def record(self, vessel_id):
        pts = np.round(self.points_mm, 4)
        seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
        length = float(seg.sum())
        chord = float(np.linalg.norm(pts[-1] - pts[0]))
        weights = np.zeros(len(pts))
        weights[:-1] += 0.5 * seg
        weights[1:] += 0.5 * seg
        curvature = float(np.sum(weights * self.curvature_per_mm) / max(weights.sum(), 1e-9))
        return {
            "vessel_id": int(vessel_id),
            "region": self.region,
            "side": self.side,
            "diameter_mm": round(float(self.diameter_mm), 4),
            "length_mm": round(length, 4),
            "tortuosity": round(max(1.0, length / max(chord, 1e-9)), 5),
            "curvature_per_mm": round(curvature, 5),
            "centerline_ras_mm": pts.tolist(),
        }


def _dedupe(points, min_step_mm=1e-3):
    keep = [0]
    for i in range(1, len(points)):
        if np.linalg.norm(points[i] - points[keep[-1]]) > min_step_mm:
            keep.append(i)
    return points[keep]


def smooth_resample(points_mm, smoothing_mm=0.05, spacing_mm=CENTRELINE_SPACING_MM):
    """Cubic smoothing spline through ``points_mm`` re-sampled every
    ``spacing_mm`` of arc length; returns points and |curvature| (1/mm)."""
    pts = _dedupe(np.asarray(points_mm, np.float64))
    if len(pts) < 2:
        raise ValueError("centreline needs at least two distinct points")
    if len(pts) < 4:  # enough knots for a cubic
        t = np.linspace(0, 1, 4)
        pts = np.array([np.interp(t, np.linspace(0, 1, len(pts)), pts[:, d]) for d in range(3)]).T
    chord = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    u = np.concatenate([[0.0], np.cumsum(chord)]) / chord.sum()
    tck, _ = interpolate.splprep(pts.T, u=u, s=len(pts) * smoothing_mm ** 2, k=3)
    dense_u = np.linspace(0.0, 1.0, max(400, int(chord.sum() / 0.005)))
    dense = np.array(interpolate.splev(dense_u, tck)).T
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(dense, axis=0), axis=1))])
    n_steps = int(arc[-1] / spacing_mm + 1e-6)
    u_out = np.interp(np.arange(n_steps + 1) * spacing_mm, arc, dense_u)
    out = np.array(interpolate.splev(u_out, tck)).T
    d1 = np.array(interpolate.splev(u_out, tck, der=1)).T
    d2 = np.array(interpolate.splev(u_out, tck, der=2)).T
    speed = np.linalg.norm(d1, axis=1)
    curvature = np.linalg.norm(np.cross(d1, d2), axis=1) / np.maximum(speed, 1e-9) ** 3
    return out, curvature


def make_vein(name, region, side, diameter_mm, control_canonical, transform, smoothing_mm=0.05,
              may_touch=()):
    world = transform.world_from_canonical(np.asarray(control_canonical, np.float64))
    points, curvature = smooth_resample(world, smoothing_mm)
    return Vein(name, region, side, float(diameter_mm), points, curvature, frozenset(may_touch))


class Occupancy:
    """Accepted vein lumens, to keep veins of different ids apart."""

    def __init__(self):
        self.veins = []
        self._tree = None

    def add(self, vein):
        self.veins.append(vein)
        self._tree = None

    def _build(self):
        pts = np.concatenate([v.points_mm for v in self.veins])
        self._radii = np.concatenate([np.full(len(v.points_mm), v.radius_mm) for v in self.veins])
        self._owner = np.concatenate([np.full(len(v.points_mm), i) for i, v in enumerate(self.veins)])
        self._tree = cKDTree(pts)

    def first_conflict(self, vein):
        """Index of the first centreline point that comes too close to an
        accepted vein it is not allowed to join; None if there is none."""
        if not self.veins:
            return None
        if self._tree is None:
            self._build()
        allowed = {i for i, v in enumerate(self.veins) if v.name in vein.may_touch or vein.name in v.may_touch}
        reach = vein.radius_mm + self._radii.max() + VEIN_CLEARANCE_MM
        hits = self._tree.query_ball_point(vein.points_mm, reach)
        for i, near in enumerate(hits):
            if not near:
                continue
            near = np.asarray(near)
            near = near[~np.isin(self._owner[near], list(allowed))] if allowed else near
            if near.size == 0:
                continue
            gap = (np.linalg.norm(self._tree.data[near] - vein.points_mm[i], axis=1)
                   - vein.radius_mm - self._radii[near])
            if np.any(gap < VEIN_CLEARANCE_MM):
                return i
        return None


def _side_of(x_mm, midline_tol_mm=0.0):
    if abs(x_mm) <= midline_tol_mm:
        return "midline"
    return "right" if x_mm > 0 else "left"  # RAS+: +x is the patient's right


def _sample_canonical(volume, anat, points_canonical, order=1, cval=0.0):
    return _sample(volume, anat.index_from_canonical(points_canonical), order=order, cval=cval)


def _gradient_canonical(volume, anat, points_canonical):
    """Central-difference gradient (per mm) of a canonical-grid volume."""
    idx = anat.index_from_canonical(points_canonical)
    grad = np.empty_like(idx)
    for axis in range(3):
        step = np.zeros(3)
        step[axis] = 1.0
        grad[:, axis] = (_sample(volume, idx + step) - _sample(volume, idx - step)) / (2 * anat.scale)
    return grad


# ---------------------------------------------------------------------------
# Deep medullary veins
# ---------------------------------------------------------------------------
@dataclass
class DmvFields:
    d_vent_mm: np.ndarray         # distance to the lateral ventricles
    d_vent_smooth_mm: np.ndarray  # smoothed, its gradient gives the radial direction
    d_cortex_mm: np.ndarray       # distance to cortex, sulcal CSF or outside the brain
    d_deep_mm: np.ndarray         # distance to deep grey matter


def dmv_fields(anat):
    lateral = anat.lateral_side != 0
    d_vent = _edt_mm(~lateral, anat.spacing_mm)
    cortex_like = (((anat.gm >= 0.5) | (anat.csf >= 0.5) | (anat.parenchyma < 0.5))
                   & (anat.deep == 0) & ~anat.ventricles)
    d_cortex = _edt_mm(~cortex_like, anat.spacing_mm)
    d_deep = _edt_mm(anat.deep == 0, anat.spacing_mm)
    return DmvFields(d_vent, ndi.gaussian_filter(d_vent, 1.2), d_cortex, d_deep)


def _dmv_seed_points(anat, fields, side, rng, min_spacing_mm=1.3):
    """Wall points on the lateral/superolateral ventricle wall in WM."""
    x = anat.mni_x_mm[:, None, None]
    z = anat.mni_z_mm[None, None, :]
    wall = ((fields.d_vent_mm > 0) & (fields.d_vent_mm <= 1.01 * anat.scale)
            & (anat.wm >= 0.45) & (anat.deep == 0) & (anat.myelinated < 0.15)
            & (x * side > 2.0) & (z > -2.0))
    idx = np.argwhere(wall).astype(np.float64)
    pts = anat.canonical_from_index(idx)
    normal = _gradient_canonical(fields.d_vent_smooth_mm, anat, pts)
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-9)
    pts = pts[normal[:, 0] * side >= 0.15]
    order = rng.permutation(len(pts))
    chosen = []
    buckets = {}
    cell = min_spacing_mm
    for i in order:
        p = pts[i]
        key = tuple((p // cell).astype(int))
        ok = True
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for dz in (-1, 0, 1):
                    for q in buckets.get((key[0] + dx, key[1] + dy, key[2] + dz), ()):
                        if np.sum((p - q) ** 2) < min_spacing_mm ** 2:
                            ok = False
                            break
        if ok:
            chosen.append(p)
            buckets.setdefault(key, []).append(p)
    return np.array(chosen).reshape(-1, 3)


def _turn_towards(current, target, max_angle_rad):
    """Unit vectors turned from ``current`` towards ``target`` by at most
    ``max_angle_rad`` (row-wise)."""
    cos_a = np.clip(np.einsum("ij,ij->i", current, target), -1.0, 1.0)
    angle = np.arccos(cos_a)
    ortho = target - cos_a[:, None] * current
    ortho /= np.maximum(np.linalg.norm(ortho, axis=1, keepdims=True), 1e-12)
    step = np.minimum(angle, max_angle_rad)[:, None]
    return np.cos(step) * current + np.sin(step) * ortho


def _trace_radial(anat, fields, seeds, max_len_mm, radius_mm, step_mm=0.4, max_curvature_per_mm=0.15):
    """Follow the gradient of the smoothed ventricle distance outwards
    (turning rate limited so that the path stays gently curved)."""
    n = len(seeds)
    paths = [[s.copy()] for s in seeds]
    pos = seeds.copy()
    heading = _gradient_canonical(fields.d_vent_smooth_mm, anat, pos)
    heading /= np.maximum(np.linalg.norm(heading, axis=1, keepdims=True), 1e-9)
    length = np.zeros(n)
    active = np.ones(n, bool)
    for _ in range(int(max_len_mm.max() / step_mm) + 1):
        ids = np.flatnonzero(active)
        if ids.size == 0:
            break
        g = _gradient_canonical(fields.d_vent_smooth_mm, anat, pos[ids])
        gnorm = np.linalg.norm(g, axis=1)
        heading[ids] = _turn_towards(heading[ids], g / np.maximum(gnorm, 1e-9)[:, None],
                                     max_curvature_per_mm * step_mm)
        new = pos[ids] + step_mm * heading[ids]
        wm = _sample_canonical(anat.wm, anat, new)
        d_vent = _sample_canonical(fields.d_vent_mm, anat, new)
        d_cortex = _sample_canonical(fields.d_cortex_mm, anat, new)
        d_deep = _sample_canonical(fields.d_deep_mm, anat, new)
        stop = ((gnorm < 0.3) | ((wm < 0.5) & (d_vent > 1.0)) | (d_cortex < radius_mm[ids] + 0.9)
                | (d_deep < radius_mm[ids] + 0.3) | (length[ids] + step_mm > max_len_mm[ids]))
        for k, i in enumerate(ids):
            if stop[k]:
                active[i] = False
            else:
                paths[i].append(new[k])
                pos[i] = new[k]
                length[i] += step_mm
    return [np.array(p) for p in paths]


def _bend(path_mm, rng, scale=1.0):
    """Add a gentle bow (constant curvature <= 0.08 / mm, zero at both ends)
    and, in 60 % of veins, a low wiggle, in a fixed frame perpendicular to
    the chord (so the result stays smooth)."""
    if len(path_mm) < 3 or scale <= 0:
        return path_mm
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path_mm, axis=0), axis=1))])
    chord = path_mm[-1] - path_mm[0]
    chord /= max(np.linalg.norm(chord), 1e-9)

    def random_perpendicular():
        v = rng.normal(size=3)
        v -= (v @ chord) * chord
        return v / max(np.linalg.norm(v), 1e-9)

    curvature = scale * rng.uniform(0.0, 0.08)                         # 1/mm
    amplitude = scale * rng.uniform(0.0, 0.3) * (rng.random() < 0.6)   # mm
    wavelength = rng.uniform(8.0, 16.0)                                 # mm
    bow = 0.5 * curvature * arc * (arc[-1] - arc)
    wiggle = amplitude * np.sin(2 * np.pi * arc / wavelength)
    return path_mm + bow[:, None] * random_perpendicular() + wiggle[:, None] * random_perpendicular()


def _valid_prefix(anat, fields, pts_canonical, radius_mm, relaxed_mm=1.0):
    """Number of leading points that are in WM, outside the ventricle and
    clear of the cortex / deep GM."""
    seg = np.linalg.norm(np.diff(pts_canonical, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    wm = _sample_canonical(anat.wm, anat, pts_canonical)
    d_vent = _sample_canonical(fields.d_vent_mm, anat, pts_canonical)
    d_cortex = _sample_canonical(fields.d_cortex_mm, anat, pts_canonical)
    d_deep = _sample_canonical(fields.d_deep_mm, anat, pts_canonical)
    ok = ((d_cortex >= radius_mm + 0.6) & (d_deep >= radius_mm + 0.1)
          & ((wm >= 0.5) | (arc < relaxed_mm)) & ((d_vent > 0.25) | (arc < 0.3)))
    bad = np.flatnonzero(~ok)
    return int(bad[0]) if bad.size else len(pts_canonical)


def _try_dmv(anat, fields, transform, occupancy, path, diameter_mm, name, side, length_range_mm, rng,
             bend_scale):
    """Bend a traced path, map it to the world and validate it; None if it
    cannot be turned into an acceptable DMV."""
    lo_len, hi_len = length_range_mm
    path = _bend(path, rng, bend_scale)
    path = path[:_valid_prefix(anat, fields, path, diameter_mm / 2)]
    if len(path) < 4 or np.linalg.norm(np.diff(path, axis=0), axis=1).sum() < lo_len * 0.9:
        return None
    control = np.vstack([path[:-1:3], path[-1:]]) if len(path) > 12 else path
    vein = make_vein(name, "dmv", side, diameter_mm, control, transform, smoothing_mm=0.05)
    # final check on the exact world centreline, mapped back to the anatomy
    back = transform.canonical_from_world(vein.points_mm)
    n_ok = _valid_prefix(anat, fields, back, vein.radius_mm - 0.1)
    conflict = occupancy.first_conflict(vein.truncated(max(n_ok, 2)))
    if conflict is not None:
        n_ok = min(n_ok, max(conflict - 5, 0))
    n_ok = min(n_ok, int(hi_len / CENTRELINE_SPACING_MM) + 1)
    if n_ok < 2:
        return None
    vein = vein.truncated(n_ok)
    return vein if vein.length_mm() >= lo_len else None


def deep_medullary_veins(anat, fields, transform, occupancy, preset, rng):
    """Fan of thin veins from the lateral ventricle walls through the WM."""
    veins = []
    lo_len, hi_len = preset["dmv_length_range_mm"]
    dmin, dmax = preset["dmv_diameter_range_mm"]
    counts = {}
    for side in (1, -1):
        side_name = "right" if side > 0 else "left"
        target = int(rng.integers(preset["n_dmv_per_side"][0], preset["n_dmv_per_side"][1] + 1))
        seeds = _dmv_seed_points(anat, fields, side, rng)
        seeds = seeds[rng.permutation(len(seeds))]
        diam = np.clip(preset["dmv_diameter_median_mm"]
                       * np.exp(rng.normal(0, preset["dmv_diameter_log_sd"], len(seeds))), dmin, dmax)
        max_len = rng.uniform(lo_len + 1.0, hi_len, len(seeds)) / transform.scale
        paths = _trace_radial(anat, fields, seeds, max_len, diam / 2)
        accepted = 0
        for k, path in enumerate(paths):
            if accepted >= target:
                break
            if len(path) < 4:
                continue
            for bend_scale in (1.0, 0.5, 0.0):  # a weaker bend if the first one leaves the WM
                vein = _try_dmv(anat, fields, transform, occupancy, path, diam[k], f"dmv_{side}_{k}",
                                side_name, (lo_len, hi_len), rng, bend_scale)
                if vein is not None:
                    occupancy.add(vein)
                    veins.append(vein)
                    accepted += 1
                    break
        counts[side_name] = accepted
    return veins, counts


# ---------------------------------------------------------------------------
# Large deep veins: thalamostriate, anterior caudate, internal cerebral
# ---------------------------------------------------------------------------
# Internal cerebral vein path (MNI y, z in mm) above the third-ventricle roof,
# from the venous angle behind the foramen of Monro to below the splenium.
ICV_PATH_MNI_YZ = ((-5.0, 12.0), (-10.0, 15.0), (-16.0, 17.5), (-22.0, 18.5), (-27.0, 17.5),
                   (-31.0, 14.5), (-34.0, 10.5))
BRAIN_CENTRE_MNI = (0.0, -18.0, 15.0)


def _deep_crop(anat):
    """Slices covering the central grey matter and ventricles."""
    x, y, z = anat.mni_x_mm, anat.mni_y_mm, anat.mni_z_mm
    sx = np.flatnonzero(np.abs(x) < 45)
    sy = np.flatnonzero((y > -60) & (y < 45))
    sz = np.flatnonzero((z > -25) & (z < 45))
    return (slice(sx[0], sx[-1] + 1), slice(sy[0], sy[-1] + 1), slice(sz[0], sz[-1] + 1))


def _shift_index(points_idx, crop):
    return points_idx + np.array([c.start for c in crop], np.float64)


def thalamostriate_control(anat, side):
    """Caudothalamic groove on the ventricle floor, posterior to anterior."""
    crop = _deep_crop(anat)
    deep = anat.deep[crop]
    vent = anat.lateral_side[crop] == side
    near_caudate = ndi.binary_dilation(deep == LABEL_CAUDATE, iterations=3)
    near_thalamus = ndi.binary_dilation(deep == LABEL_THALAMUS, iterations=4)
    groove = anat.canonical_from_index(_shift_index(np.argwhere(vent & near_caudate & near_thalamus), crop))
    y_lo, y_hi = -28.0 * anat.scale, -4.0 * anat.scale
    groove = groove[(groove[:, 1] > y_lo) & (groove[:, 1] < y_hi)]
    bins = np.arange(y_lo, y_hi + 1e-6, 1.5)
    control = []
    for b0, b1 in zip(bins[:-1], bins[1:]):
        sel = groove[(groove[:, 1] >= b0) & (groove[:, 1] < b1)]
        if len(sel) >= 2:
            control.append(np.median(sel, axis=0))
    if len(control) < 4:  # fallback: textbook position of the groove
        mni = np.array([(17, -24, 18), (15, -18, 17), (13, -12, 15), (10, -7, 13)], np.float64)
        mni[:, 0] *= side
        control = list(anat.canonical_from_mni(mni))
    return np.array(control)


def icv_control(anat, x_offset_mm):
    yz = np.array(ICV_PATH_MNI_YZ) * anat.scale
    return np.column_stack([np.full(len(yz), x_offset_mm), yz[:, 0], yz[:, 1]])


def caudate_surface(anat, side):
    crop = _deep_crop(anat)
    vent = anat.lateral_side[crop] == side
    near_caudate = ndi.binary_dilation(anat.deep[crop] == LABEL_CAUDATE, iterations=1)
    return anat.canonical_from_index(_shift_index(np.argwhere(vent & near_caudate), crop))


def _path_on_cloud(start, end, cloud, n=10):
    """Straight line start->end snapped to the nearest points of a cloud."""
    tree = cKDTree(cloud)
    t = np.linspace(0, 1, n)[:, None]
    line = start[None] * (1 - t) + end[None] * t
    _, j = tree.query(line[1:-1])
    return np.vstack([start, cloud[j], end])


def deep_venous_system(anat, transform, occupancy, preset, rng):
    """Internal cerebral, thalamostriate and anterior caudate veins."""
    veins = []
    d_icv = rng.uniform(*preset["internal_cerebral_diameter_mm"], 2)
    half_gap = 0.5 * (d_icv.sum() / 2 + VEIN_CLEARANCE_MM + 0.6) + 0.25
    icv = {}
    for side, d in zip((1, -1), d_icv):
        name = f"icv_{side}"
        ctrl = icv_control(anat, side * half_gap)
        vein = make_vein(name, "internal_cerebral", "midline", d, ctrl, transform, smoothing_mm=0.05,
                         may_touch=(f"tsv_{side}",))
        icv[side] = ctrl
        if occupancy.first_conflict(vein) is None:
            occupancy.add(vein)
            veins.append(vein)
    for side in (1, -1):
        groove = thalamostriate_control(anat, side)
        # from the groove forwards to the foramen, then the venous angle = ICV start
        ctrl = np.vstack([groove, icv[side][0] + np.array([side * 0.4, 0.8, -0.3]), icv[side][0]])
        d = rng.uniform(*preset["thalamostriate_diameter_mm"])
        name = f"tsv_{side}"
        vein = make_vein(name, "thalamic", _side_of(side), d, ctrl, transform, smoothing_mm=0.35,
                         may_touch=(f"icv_{side}", f"acv_{side}_0", f"acv_{side}_1"))
        if occupancy.first_conflict(vein) is None:
            occupancy.add(vein)
            veins.append(vein)
        surface = caudate_surface(anat, side)
        surface = surface[surface[:, 1] > 0.0]
        if len(surface) < 10:
            continue
        n_acv = int(rng.integers(1, 3))
        z_mid = np.median(surface[:, 2])
        join = groove[-1]
        for k in range(n_acv):
            band = surface[(surface[:, 1] > 8 * anat.scale) & (surface[:, 1] < 18 * anat.scale)]
            band = band[band[:, 2] >= z_mid] if k == 0 else band[band[:, 2] < z_mid]
            if len(band) == 0:
                continue
            start = band[rng.integers(len(band))]
            ctrl = _path_on_cloud(start, join, surface)
            d = rng.uniform(*preset["anterior_caudate_diameter_mm"])
            name = f"acv_{side}_{k}"
            vein = make_vein(name, "anterior_caudate", _side_of(side), d, ctrl, transform,
                             smoothing_mm=0.4, may_touch=(f"tsv_{side}", f"acv_{side}_{1 - k}"))
            if occupancy.first_conflict(vein) is None:
                occupancy.add(vein)
                veins.append(vein)
    return veins


# ---------------------------------------------------------------------------
# Superficial veins: superior sagittal sinus and cortical veins
# ---------------------------------------------------------------------------
def _radial_surface(anat, centre, directions, d_target_mm):
    """Points along rays from ``centre`` where the envelope signed distance
    equals ``d_target_mm`` (outermost crossing)."""
    radii = np.arange(0.0, 95.0, 0.2)
    pts = centre[None, None, :] + directions[:, None, :] * radii[None, :, None]
    sd = _sample_canonical(anat.envelope_sd_mm, anat, pts.reshape(-1, 3), cval=100.0)
    sd = sd.reshape(len(directions), len(radii))
    inside = sd <= d_target_mm
    last = len(radii) - 1 - np.argmax(inside[:, ::-1], axis=1)
    last = np.minimum(last, len(radii) - 2)
    s0 = sd[np.arange(len(last)), last]
    s1 = sd[np.arange(len(last)), last + 1]
    frac = np.clip((d_target_mm - s0) / np.maximum(s1 - s0, 1e-6), 0, 1)
    r_hit = radii[last] + frac * (radii[1] - radii[0])
    return centre[None] + directions * r_hit[:, None]


def _slerp(a, b, t):
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    omega = math.acos(float(np.clip(a @ b, -1, 1)))
    if omega < 1e-6:
        return np.repeat(a[None], len(t), 0)
    return (np.sin((1 - t) * omega)[:, None] * a + np.sin(t * omega)[:, None] * b) / math.sin(omega)


def superficial_veins(anat, transform, occupancy, preset, rng):
    veins = []
    centre = anat.canonical_from_mni(np.array(BRAIN_CENTRE_MNI))
    csf_mm = anat.layers_mm["csf"]
    d_sss = rng.uniform(*preset["sss_diameter_mm"])
    theta = np.deg2rad(np.linspace(25.0, 200.0, 90))
    sss_dirs = np.column_stack([np.zeros_like(theta), np.cos(theta), np.sin(theta)])
    sss_ctrl = _radial_surface(anat, centre, sss_dirs, 0.5 * csf_mm)
    sss = make_vein("sss", "other", "midline", d_sss, sss_ctrl, transform, smoothing_mm=0.4,
                    may_touch=tuple(f"cortical_{s}_{k}" for s in (1, -1) for k in range(6)))
    occupancy.add(sss)
    veins.append(sss)
    lo, hi = preset["n_cortical_per_side"]
    d_cv = 0.5 * csf_mm
    for side in (1, -1):
        n = int(rng.integers(lo, hi + 1))
        az_edges = np.linspace(45.0, 135.0, n + 1)
        for k in range(n):
            az = np.deg2rad(rng.uniform(az_edges[k] + 4, az_edges[k + 1] - 4))
            el = np.deg2rad(rng.uniform(5.0, 35.0))
            start_dir = np.array([side * math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el)])
            start = _radial_surface(anat, centre, start_dir[None], d_cv)[0]
            target_y = start[1] + rng.uniform(-3.0, 10.0)
            j = int(np.argmin(np.abs(sss_ctrl[:, 1] - target_y) + 100 * (sss_ctrl[:, 2] < centre[2])))
            end = sss_ctrl[j]
            t = np.linspace(0, 1, 40)
            dirs = _slerp(start_dir, end - centre, t)
            path = _radial_surface(anat, centre, dirs, d_cv)
            blend = np.clip((t - 0.8) / 0.2, 0, 1)[:, None]
            path = (1 - blend) * path + blend * end[None]
            d = rng.uniform(*preset["cortical_diameter_mm"])
            vein = make_vein(f"cortical_{side}_{k}", "other", _side_of(side), d, path, transform,
                             smoothing_mm=0.2, may_touch=("sss",))
            if occupancy.first_conflict(vein) is None:
                occupancy.add(vein)
                veins.append(vein)
    return veins


# ---------------------------------------------------------------------------
# Susceptibility rendering of the veins (sub-voxel, complex)
# ---------------------------------------------------------------------------
SUBSAMPLE_MM = 0.16          # sub-voxel sample spacing used around veins
FIELD_CUTOFF_RAD = 0.1       # outside this dipole phase a vein's field is ignored
INTRAVOXEL_PHASE_TOL_RAD = 0.3


def _vein_phase_scale_rad(preset):
    """2*pi*gamma_bar*dchi*B0*TE: phase scale of the vein's field (rad)."""
    return 2 * np.pi * GAMMA_BAR_HZ_PER_T * preset["dchi_ppm"] * 1e-6 * preset["field_T"] * preset["te_ms"] * 1e-3


def _subvoxel_offsets(voxel_mm):
    counts = [max(1, int(math.ceil(v / SUBSAMPLE_MM))) for v in voxel_mm]
    axes = [(np.arange(n) + 0.5) / n - 0.5 for n in counts]
    grid = np.meshgrid(*axes, indexing="ij")
    return np.stack([g.ravel() for g in grid], axis=1)


def _closest_on_polyline(points, tree, query, upper_mm):
    """Closest point on a polyline (and local unit tangent) for query points."""
    dist, j = tree.query(query, distance_upper_bound=upper_mm)
    valid = np.isfinite(dist)
    q = query[valid]
    j = j[valid]
    n = len(points)
    best_c = None
    best_d = None
    best_t = None
    for a_off, b_off in ((-1, 0), (0, 1)):
        a = points[np.clip(j + a_off, 0, n - 1)]
        b = points[np.clip(j + b_off, 0, n - 1)]
        ab = b - a
        ab_len2 = np.maximum(np.einsum("ij,ij->i", ab, ab), 1e-12)
        s = np.clip(np.einsum("ij,ij->i", q - a, ab) / ab_len2, 0.0, 1.0)
        c = a + s[:, None] * ab
        d = np.linalg.norm(q - c, axis=1)
        t = ab / np.sqrt(ab_len2)[:, None]
        if best_d is None:
            best_c, best_d, best_t = c, d, t
        else:
            take = d < best_d
            best_c[take], best_d[take], best_t[take] = c[take], d[take], t[take]
    degenerate = np.linalg.norm(best_t, axis=1) < 0.5
    if np.any(degenerate):
        best_t[degenerate] = np.array([1.0, 0.0, 0.0])
    return valid, q - best_c, best_d, best_t


def render_veins(veins, grid, tissue, preset):
    """Complex signal of every voxel touched by a vein or its dephasing halo.

    Returns flat voxel indices, complex values and lumen volume fractions.
    """
    shape = grid.shape
    voxel = grid.voxel_mm
    half_diag = 0.5 * float(np.linalg.norm(voxel))
    longest = float(voxel.max())
    phase_scale = _vein_phase_scale_rad(preset)
    b0 = np.array([0.0, 0.0, 1.0])  # B0 along world (scanner) z
    offsets_vox = _subvoxel_offsets(voxel)
    offsets_mm = offsets_vox @ grid.affine[:3, :3].T
    s_blood = tissue_level("blood", preset)

    trees = [cKDTree(v.points_mm) for v in veins]
    detail_mm = []
    field_mm = []
    for v in veins:
        a = v.radius_mm
        phi_s = 0.5 * phase_scale  # outside phase at the lumen surface, perpendicular vein
        grad_rho = (2 * phi_s * a * a * longest / INTRAVOXEL_PHASE_TOL_RAD) ** (1 / 3)
        detail_mm.append(max(a + half_diag + 0.1, grad_rho))
        field_mm.append(max(a * math.sqrt(phi_s / FIELD_CUTOFF_RAD), detail_mm[-1]))

    # 1) voxels that need sub-voxel treatment
    inv = np.linalg.inv(grid.affine)
    detail = np.zeros(shape, bool)
    boxes = []
    for v, tree, r_det, r_field in zip(veins, trees, detail_mm, field_mm):
        idx = v.points_mm @ inv[:3, :3].T + inv[:3, 3]
        pad = (r_field + half_diag) / voxel
        lo = np.maximum(np.floor(idx.min(0) - pad).astype(int), 0)
        hi = np.minimum(np.ceil(idx.max(0) + pad).astype(int) + 1, shape)
        boxes.append((lo, hi))
        pad_d = (r_det + half_diag) / voxel
        lo_d = np.maximum(np.floor(idx.min(0) - pad_d).astype(int), 0)
        hi_d = np.minimum(np.ceil(idx.max(0) + pad_d).astype(int) + 1, shape)
        ii, jj, kk = np.meshgrid(*[np.arange(l, h) for l, h in zip(lo_d, hi_d)], indexing="ij")
        ijk = np.stack([ii.ravel(), jj.ravel(), kk.ravel()], axis=1)
        dist, _ = tree.query(grid.world_from_index(ijk), distance_upper_bound=r_det)
        hit = ijk[np.isfinite(dist)]
        detail[hit[:, 0], hit[:, 1], hit[:, 2]] = True
    flat = np.flatnonzero(detail)
    lookup = np.full(int(np.prod(shape)), -1, np.int64)
    lookup[flat] = np.arange(flat.size)
    lookup = lookup.reshape(shape)
    n_sub = len(offsets_vox)
    phase = np.zeros((flat.size, n_sub), np.float32)
    inside = np.zeros((flat.size, n_sub), bool)
    centres = grid.world_from_index(np.column_stack(np.unravel_index(flat, shape)))

    # 2) accumulate each vein's dipole phase at the sub-voxel samples
    for v, tree, r_field, (lo, hi) in zip(veins, trees, field_mm, boxes):
        ids = lookup[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].ravel()
        ids = ids[ids >= 0]
        if ids.size == 0:
            continue
        d_centre, _ = tree.query(centres[ids], distance_upper_bound=r_field + half_diag)
        ids = ids[np.isfinite(d_centre)]
        if ids.size == 0:
            continue
        for chunk in np.array_split(ids, max(1, ids.size * n_sub // 2_000_000 + 1)):
            pts = (centres[chunk][:, None, :] + offsets_mm[None]).reshape(-1, 3)
            valid, r_vec, rho, tangent = _closest_on_polyline(v.points_mm, tree, pts, r_field)
            a = v.radius_mm
            cos_b0 = tangent @ b0
            b_perp = b0[None] - cos_b0[:, None] * tangent
            r_perp = r_vec - np.einsum("ij,ij->i", r_vec, tangent)[:, None] * tangent
            r_perp_len = np.linalg.norm(r_perp, axis=1)
            proj = np.einsum("ij,ij->i", r_perp, b_perp) / np.maximum(r_perp_len, 1e-9)
            sin2_cos2phi = 2 * proj ** 2 - np.einsum("ij,ij->i", b_perp, b_perp)
            is_in = rho < a
            outside_phase = 0.5 * phase_scale * (a * a / np.maximum(rho, a) ** 2) * sin2_cos2phi
            inside_phase = phase_scale / 6.0 * (3 * cos_b0 ** 2 - 1)
            contrib = np.where(is_in, inside_phase, outside_phase).astype(np.float32)
            rows = np.repeat(np.arange(chunk.size), n_sub)[valid]
            cols = np.tile(np.arange(n_sub), chunk.size)[valid]
            local_phase = phase[chunk]
            local_inside = inside[chunk]
            np.add.at(local_phase, (rows, cols), contrib)
            local_inside[rows[is_in], cols[is_in]] = True
            phase[chunk] = local_phase
            inside[chunk] = local_inside

    # 3) voxel signal = tissue * <e^{i phi}>_outside + blood * <e^{i phi}>_lumen
    tissue_flat = tissue.ravel()[flat].astype(np.float64)
    values = np.empty(flat.size, np.complex64)
    for rows in np.array_split(np.arange(flat.size), max(1, flat.size // 50_000)):
        expo = np.exp(1j * phase[rows].astype(np.float64))
        mean_out = np.where(inside[rows], 0, expo).mean(axis=1)
        mean_in = np.where(inside[rows], expo, 0).mean(axis=1)
        values[rows] = tissue_flat[rows] * mean_out + s_blood * mean_in
    return flat, values, inside.mean(axis=1).astype(np.float32)


# ---------------------------------------------------------------------------
# Acquisition: coil bias, point spread, Rician noise
# ---------------------------------------------------------------------------
def bias_field(grid, centre_world, rng, amplitude):
    """Smooth multiplicative coil sensitivity: log-quadratic, brighter rim."""
    shape = grid.shape
    coeff_lin = rng.normal(0, 0.6 * amplitude, 3)
    coeff_quad = rng.normal(0, 0.4 * amplitude, 6)
    rim = rng.uniform(0.5, 1.0) * amplitude
    out = np.empty(shape, np.float32)
    j, k = np.meshgrid(np.arange(shape[1]), np.arange(shape[2]), indexing="ij")
    for i in range(shape[0]):
        ijk = np.column_stack([np.full(j.size, i), j.ravel(), k.ravel()])
        x = (grid.world_from_index(ijk) - centre_world) / 60.0
        quad = np.column_stack([x[:, 0] ** 2, x[:, 1] ** 2, x[:, 2] ** 2,
                                x[:, 0] * x[:, 1], x[:, 0] * x[:, 2], x[:, 1] * x[:, 2]])
        log_b = x @ coeff_lin + quad @ coeff_quad + rim * np.sum(x ** 2, axis=1)
        out[i] = np.exp(log_b).reshape(shape[1], shape[2])
    return out


def acquire(complex_image, grid, bias, preset, rng):
    """Coil bias, acquisition point spread (Gaussian, per voxel axis) and
    complex Gaussian noise; returns the magnitude (Rician) image."""
    img = complex_image * bias
    sigma_vox = preset["psf_fwhm_vox"] / 2.3548
    re = ndi.gaussian_filter(img.real.astype(np.float32), sigma_vox)
    im = ndi.gaussian_filter(img.imag.astype(np.float32), sigma_vox)
    noise_sd = SIGNAL_WM_AU / preset["snr_wm"]
    re += rng.normal(0.0, noise_sd, re.shape).astype(np.float32)
    im += rng.normal(0.0, noise_sd, im.shape).astype(np.float32)
    return np.sqrt(re * re + im * im).astype(np.float32), noise_sd


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------
def _save_nifti(path, data, affine):
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, path)


def _case_rng(preset_name, seed):
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(preset_name.encode("utf-8"))])


def generate(out_dir, preset, seed):
    """Generate one case; write swi.nii.gz, masks, labels and vessels.json."""
    t_start = time.perf_counter()
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    cfg = PRESETS[preset]
    rng = _case_rng(preset, seed)
    rng_anatomy, rng_case, rng_veins, rng_noise = rng.spawn(4)

    anat = build_anatomy(cfg, rng_anatomy)
    transform = random_case_transform(rng_case)
    grid = acquisition_grid(cfg, transform, anat, rng_case)
    signal_canonical = tissue_signal_map(anat, cfg)
    tissue, labels = sample_anatomy_on_grid(grid, transform, anat, signal_canonical)
    del signal_canonical

    occupancy = Occupancy()
    veins = superficial_veins(anat, transform, occupancy, cfg, rng_veins)
    veins += deep_venous_system(anat, transform, occupancy, cfg, rng_veins)
    fields = dmv_fields(anat)
    dmvs, dmv_counts = deep_medullary_veins(anat, fields, transform, occupancy, cfg, rng_veins)
    veins += dmvs
    del fields

    flat, values, frac_in = render_veins(veins, grid, tissue, cfg)
    image = tissue.astype(np.complex64)
    image.ravel()[flat] = values
    labels_out = labels.copy()
    labels_out.ravel()[flat[frac_in >= 0.5]] = LABEL_VEIN
    head_centre = grid.world_from_index((np.array(grid.shape) - 1) / 2.0)
    bias = bias_field(grid, head_centre, rng_noise, cfg["bias_amplitude"])
    magnitude, noise_sd = acquire(image, grid, bias, cfg, rng_noise)
    del image, bias

    os.makedirs(out_dir, exist_ok=True)
    _save_nifti(os.path.join(out_dir, "swi.nii.gz"), magnitude, grid.affine)
    brain = np.isin(labels, BRAIN_LABELS).astype(np.uint8)
    _save_nifti(os.path.join(out_dir, "brain_mask.nii.gz"), brain, grid.affine)
    _save_nifti(os.path.join(out_dir, "ventricles.nii.gz"), (labels == LABEL_VENTRICLE).astype(np.uint8),
                grid.affine)
    _save_nifti(os.path.join(out_dir, "labels.nii.gz"), labels_out, grid.affine)
    records = [v.record(i + 1) for i, v in enumerate(veins)]
    with open(os.path.join(out_dir, "vessels.json"), "w") as fh:
        json.dump({"vessels": records, "generator": "atlas", "preset": preset, "seed": int(seed)}, fh)

    return {
        "out_dir": out_dir,
        "preset": preset,
        "seed": int(seed),
        "shape": list(grid.shape),
        "voxel_mm": [float(v) for v in grid.voxel_mm],
        "affine": grid.affine.tolist(),
        "oblique_deg": list(grid.oblique_deg),
        "n_vessels": len(records),
        "dmv_per_side": dmv_counts,
        "noise_sd": float(noise_sd),
        "wm_signal": float(tissue_level("wm", cfg)),
        "seconds": round(time.perf_counter() - t_start, 2),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--preset", required=True, choices=sorted(PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    info = generate(args.out, args.preset, args.seed)
    print(json.dumps({k: v for k, v in info.items() if k != "affine"}))


if __name__ == "__main__":
    main()
