#!/usr/bin/env python3
"""Independent digital phantom of neonatal brain SWI magnitude images with exact vein truth.

This generator was written from scratch (general neuro-anatomy / MR physics knowledge
only) so that a vessel-analysis engine tuned on another phantom can be tested on data it
has never seen.  It depends on numpy, scipy and nibabel only.

Usage
-----
    python benchmarks/independent_swi_phantom.py --out DIR --preset PRESET --seed N [--no-check]

or, from Python, ``generate(out_dir, preset, seed)``.  Presets: term_3t, term_1p5t,
preterm, oblique_low_snr, isotropic (see ``PRESETS``).

Outputs (in DIR, created if needed)
-----------------------------------
* ``swi.nii.gz``  float32 SWI magnitude; affine maps voxel indices to world RAS mm
  (x+ = patient right, y+ = anterior, z+ = superior).  For ``oblique_low_snr`` the grid is
  rotated about two axes and the continuous anatomy is sampled at the world positions of
  the rotated grid, so image content and affine are consistent.
* ``vessels.json`` ``{"vessels": [...], "generator", "preset", "seed"}``; each vessel has
  vessel_id, region (dmv | thalamic | anterior_caudate | internal_cerebral | other),
  side (patient side: left | right | midline), diameter_mm (true physical diameter),
  length_mm, tortuosity (arc length / chord), curvature_per_mm (arc-length mean of
  |curvature|) and centerline_ras_mm (world points, spacing 0.2 mm).

Model
-----
Anatomy is continuous, defined in a "template" frame (term brain, mm, centred at the
origin) by implicit surfaces / approximate signed distances, then placed in the world by
a per-case similarity transform (scale, rotation of a few degrees, shift of <= 2 mm):

* head: scalp (skin, subcutaneous fat, galea), a dark calvarium with an open anterior
  fontanelle, extra-axial CSF, falx and tentorium (dark dura);
* cerebrum: ellipsoid-like hull (narrower frontally), interhemispheric fissure down to the
  corpus callosum (and through to the base in front of / behind it), Sylvian fissure and
  insula, random sulcal folding (zero sets of band-limited noise, depth-limited; shallow
  and sparse in the preterm), a ~1.8 mm cortical grey ribbon lining every pial surface;
* white matter with a faint texture and slightly brighter periventricular "caps";
* deep grey matter: thalami, caudate (head + tapering body), lentiform nuclei;
* C-shaped lateral ventricles (frontal horn, body, atrium, occipital and temporal horns;
  swept-sphere tubes whose lateral wall is indented by the caudate), third ventricle,
  choroid plexus glomus in each atrium; cerebellum with folia, brainstem.

Veins (all truth in world mm):

* deep medullary veins (20-35 per hemisphere at term, 12-22 preterm) starting
  subependymally (centre 0-0.6 mm outside the wall + radius) around the frontal horns,
  bodies, atria and occipital horns, leaving the wall perpendicularly and fanning
  outwards in 3-D (bent towards the poles near the horns), gently curved (sin^2 bow plus a
  small wiggle; tortuosity mostly 1.02-1.15), lying in white matter only and stopped
  >= 1.5 mm of white matter short of the cortical ribbon (so their length, 10-30 mm, is
  limited by the available white-matter depth; typically 11-20 mm); diameters
  0.4 + 0.8 * Beta(2, 3.5) mm at term, 0.4 + 0.8 * Beta(1.5, 5) mm preterm (x
  ``--dmv-diameter-scale``, 1 by default: engorged veins above 1);
* one thalamostriate vein per side in the caudothalamic groove under the ependyma,
  draining into the internal cerebral vein at the foramen of Monro; 1-3 anterior caudate
  veins per side over the caudate head draining into it; two paramedian internal cerebral
  veins above the third ventricle (side "midline"); several superficial cortical veins in
  the subarachnoid space over the convexity running towards the vertex (region "other").

Imaging model (SWI magnitude, WM ~ 300 a.u.):

* tissue signal ratios to WM: CSF 1.45 (3 T) / 1.38 (1.5 T), cortex 0.85, deep grey 0.87-
  0.9, skull 0.06, scalp fat 0.95, air 0;
* tissue partial volume by soft (linear-ramp) boundaries one voxel wide plus, for thick
  slices, 3 sub-samples through the slice;
* veins: intravascular blood signal (1 - C_in) x WM (C_in 0.5-0.7 at 3 T, 0.3-0.45 at
  1.5 T, slightly larger for larger veins), i.e. a 1 mm vein at full volume is 30-50 % of
  WM at 3 T; plus an extravascular dephasing halo C_ex sin^2(theta) (a/r)^2 (theta = angle
  to B0 = world z, a = radius, truncated at 3a).  This "blooming" makes veins look
  slightly WIDER than diameter_mm, which stays the true physical diameter.  Vessel partial
  volume is computed by super-sampling every voxel intersecting the vessel wall
  (>= 3 sub-samples per axis, sub-sample spacing <= 0.15 mm);
* smooth multiplicative receive-bias field (10-25 % peak-to-peak over the head);
* Gaussian PSF (sigma 0.42 voxel in plane, 0.3 voxel through thick slices);
* Rician noise: magnitude of (object + complex white Gaussian noise), sigma = WM / SNR.

Randomness: everything is drawn from numpy.random.default_rng(seed), so a (preset, seed)
pair is bit-reproducible.  For a given seed the four term presets share the same subject
(anatomy and veins) and differ only in the acquisition (grid, field strength, SNR, bias,
noise); the preterm preset builds a different, smaller subject.  Covering the whole head at
0.45 mm needs ~250 x 300 voxels in plane (the other presets are 180-245 in plane).

Not modelled: phase images / phase masks, venous sinuses and the vein of Galen, septal
and atrial veins, arteries, haemorrhage / germinal matrix pathology, myelination of the
internal capsule, motion, Gibbs ringing, coil-array noise amplification.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.interpolate import CubicSpline
from scipy.spatial import cKDTree

GENERATOR = "independent_swi_phantom v1.0 (numpy/scipy, analytic neonatal anatomy)"

PRESETS = {
    "term_3t": dict(voxel=(0.45, 0.45, 1.0), snr=25.0, field=3.0, preterm=False, oblique=False),
    "term_1p5t": dict(voxel=(0.6, 0.6, 2.0), snr=12.0, field=1.5, preterm=False, oblique=False),
    "preterm": dict(voxel=(0.5, 0.5, 2.0), snr=15.0, field=3.0, preterm=True, oblique=False),
    "oblique_low_snr": dict(voxel=(0.55, 0.55, 2.0), snr=9.0, field=3.0, preterm=False, oblique=True),
    "isotropic": dict(voxel=(0.6, 0.6, 0.6), snr=18.0, field=3.0, preterm=False, oblique=False),
}

WM_LEVEL = 300.0
B0_DIR = np.array([0.0, 0.0, 1.0])

# tissue label codes (hard labels, used for vessel placement and checks)
AIR, SKIN, FAT, GALEA, SKULL, CSF, DURA, GM, WM, CAUDATE, LENTIFORM, THALAMUS, \
    BRAINSTEM, VENT, CHOROID, CB_GM, CB_WM = range(17)
LABEL_NAMES = ["air", "skin", "fat", "galea", "skull", "csf", "dura", "gm", "wm", "caudate",
               "lentiform", "thalamus", "brainstem", "ventricle", "choroid", "cb_gm", "cb_wm"]

BIG = 1.0e3


# ----------------------------------------------------------------------------------------
# small geometric helpers
# ----------------------------------------------------------------------------------------
def rot(axis: str, deg: float) -> np.ndarray:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], float)
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], float)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], float)


def unit(v):
    v = np.asarray(v, float)
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, 1e-12)


def smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def smin(a, b, k):
    """Polynomial smooth minimum (union of two implicit shapes)."""
    h = np.maximum(k - np.abs(a - b), 0.0) / k
    return np.minimum(a, b) - h * h * k * 0.25


def ellipsoid_sdf(p, c, r):
    """Approximate signed distance to an axis-aligned ellipsoid (exact sign, good near surface)."""
    r = np.asarray(r, float)
    q = (p - np.asarray(c, float)) / r
    k0 = np.sqrt(np.einsum("ij,ij->i", q, q))
    q2 = q / r
    k1 = np.sqrt(np.einsum("ij,ij->i", q2, q2))
    out = k0 * (k0 - 1.0) / np.maximum(k1, 1e-9)
    return np.where(k0 < 1e-6, -r.min(), out)


def box_index(p, lo, hi):
    """Indices of points inside an axis-aligned box (progressive narrowing, cheap)."""
    idx = np.nonzero((p[:, 0] > lo[0]) & (p[:, 0] < hi[0]))[0]
    for k in (1, 2):
        v = p[idx, k]
        idx = idx[(v > lo[k]) & (v < hi[k])]
    return idx


def ellipsoid_sdf_box(p, c, r, margin=6.0):
    """ellipsoid_sdf evaluated only inside the bounding box grown by margin (BIG elsewhere)."""
    c = np.asarray(c, float)
    r = np.asarray(r, float)
    idx = box_index(p, c - r - margin, c + r + margin)
    out = np.full(len(p), BIG)
    if len(idx):
        out[idx] = ellipsoid_sdf(p[idx], c, r)
    return out


def capsule_chain_sdf(p, pts, radii, margin=None):
    if margin is not None:
        P = np.asarray(pts, float)
        rm = max(radii) + margin
        m = box_index(p, P.min(0) - rm, P.max(0) + rm)
        out = np.full(len(p), BIG)
        if len(m):
            out[m] = capsule_chain_sdf(p[m], pts, radii)
        return out

    """Union of cones between consecutive points (linear radius), approx signed distance."""
    best = np.full(len(p), BIG)
    for i in range(len(pts) - 1):
        a, b = np.asarray(pts[i], float), np.asarray(pts[i + 1], float)
        ab = b - a
        t = np.clip(((p - a) @ ab) / (ab @ ab), 0.0, 1.0)
        d = np.linalg.norm(p - (a + t[:, None] * ab), axis=1)
        r = radii[i] + t * (radii[i + 1] - radii[i])
        best = np.minimum(best, d - r)
    return best


def resample_polyline(P, step):
    P = np.asarray(P, float)
    seg = np.linalg.norm(np.diff(P, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(int(math.ceil(s[-1] / step)), 1)
    st = np.linspace(0.0, s[-1], n + 1)
    return np.stack([np.interp(st, s, P[:, k]) for k in range(3)], 1), st


def spline_tube(ctrl, step=0.25):
    """Dense centre points + radii of a swept-sphere tube through (x, y, z, r) control points."""
    ctrl = np.asarray(ctrl, float)
    u = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(ctrl[:, :3], axis=0), axis=1))])
    cs = CubicSpline(u, ctrl, bc_type="natural", axis=0)
    uf = np.linspace(0.0, u[-1], int(u[-1] / 0.02) + 2)
    P = cs(uf)
    seg = np.linalg.norm(np.diff(P[:, :3], axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    st = np.linspace(0.0, s[-1], int(math.ceil(s[-1] / step)) + 1)
    out = np.stack([np.interp(st, s, P[:, k]) for k in range(4)], 1)
    tang = unit(np.gradient(out[:, :3], axis=0))
    return out[:, :3], np.maximum(out[:, 3], 0.3), tang


class Tube:
    """Swept-sphere tube; signed distance = min_i |p - c_i| - r_i over near centre samples."""

    def __init__(self, centers, radii, pad=8.0):
        self.c = np.asarray(centers, float)
        self.r = np.asarray(radii, float)
        self.tree = cKDTree(self.c)
        self.reach = float(self.r.max() + pad)
        self.lo = self.c.min(0) - self.reach
        self.hi = self.c.max(0) + self.reach
        self.far = pad

    def sdf(self, p, k=8):
        out = np.full(len(p), BIG)
        m = box_index(p, self.lo, self.hi)
        if len(m):
            d, i = self.tree.query(p[m], k=k, distance_upper_bound=self.reach,
                                   workers=-1 if len(m) > 20000 else 1)
            ok = np.isfinite(d)
            ii = np.where(ok, i, 0)
            v = np.where(ok, d - self.r[ii], BIG)
            out[m] = v.min(1)
        return out


class GridField:
    """Smooth random scalar field (unit std) on a regular template-space grid, trilinear lookup."""

    def __init__(self, rng, lo, hi, spacing, sigma_mm, gradient=False):
        self.lo = np.asarray(lo, float)
        self.sp = float(spacing)
        shape = tuple(int(math.ceil((h - l) / spacing)) + 1 for l, h in zip(lo, hi))
        w = rng.standard_normal(shape)
        f = ndimage.gaussian_filter(w, sigma_mm / spacing, mode="wrap")
        f = (f - f.mean()) / f.std()
        self.f = f.astype(np.float32)
        self.g = None
        if gradient:
            gx, gy, gz = np.gradient(f, spacing)
            self.g = np.sqrt(gx * gx + gy * gy + gz * gz).astype(np.float32)

    def __call__(self, p, grad=False):
        idx = ((p - self.lo) / self.sp).T
        arr = self.g if grad else self.f
        return ndimage.map_coordinates(arr, idx, order=1, mode="nearest")


def numeric_grad(fun, p, h=0.05):
    """Central-difference gradient of a vectorised scalar function (one batched call)."""
    e = np.eye(3) * h
    q = np.concatenate([p + e[k] for k in range(3)] + [p - e[k] for k in range(3)])
    f = fun(q).reshape(6, len(p))
    return ((f[:3] - f[3:]) / (2 * h)).T


def project_to_level(fun, p, target, iters=15):
    p = np.array(p, float, ndmin=2)
    for _ in range(iters):
        f = fun(p) - target
        g = numeric_grad(fun, p)
        gg = np.maximum(np.einsum("ij,ij->i", g, g), 1e-6)
        step = (f / gg)[:, None] * g
        n = np.linalg.norm(step, axis=1, keepdims=True)
        step = step * np.minimum(1.0, 3.0 / np.maximum(n, 1e-12))
        p = p - step
        if np.all(np.abs(f) < 1e-3):
            break
    return p


# ----------------------------------------------------------------------------------------
# pose (template -> world similarity)
# ----------------------------------------------------------------------------------------
class Pose:
    def __init__(self, scale, R, t):
        self.s = float(scale)
        self.R = np.asarray(R, float)
        self.t = np.asarray(t, float)

    def to_world(self, p):
        return self.s * (np.asarray(p, float) @ self.R.T) + self.t

    def to_template(self, w):
        return ((np.asarray(w, float) - self.t) @ self.R) / self.s


# ----------------------------------------------------------------------------------------
# anatomy (template space, term-sized, mm)
# ----------------------------------------------------------------------------------------
class Anatomy:
    def __init__(self, rng, preterm: bool, field: float, ventricle_scale: float = 1.0,
                 extracerebral_csf_scale: float = 1.0):
        self.preterm = preterm
        U = rng.uniform
        # --- head layers (template mm; preterm template is scaled by ~0.81 into the world);
        # extracerebral_csf_scale < 1: the CSF between brain and skull narrowed (a swollen brain)
        self.t_csf = (3.6 if preterm else 3.0) * extracerebral_csf_scale
        self.t_skull = 1.5 if preterm else 1.8
        self.t_scalp = 4.0 if preterm else 4.2
        # --- cerebral hull
        self.ax = 45.0 * U(0.97, 1.03) * (0.96 if preterm else 1.0)
        self.ay = 55.0 * U(0.985, 1.015)
        self.az_sup = 38.0 * U(0.97, 1.03)
        self.az_inf = 30.0 * U(0.97, 1.03)
        self.frontal_narrow = U(0.04, 0.08)
        cbf = 0.86 if preterm else 1.0
        self.cb_c = np.array([0.0, -33.0, -25.0])
        self.cb_r = np.array([26.0, 15.0, 11.5]) * cbf * U(0.96, 1.04)
        self.cb_gap = 2.0
        self.bs_pts = [(0.0, -10.0, -10.0), (0.0, -16.0, -28.0), (0.0, -19.0, -45.0)]
        self.bs_r = [7.0, 6.5, 5.5]
        self.z_bs_cut = -41.0
        # fissures
        self.fis_hw = 0.9
        self.cc_y = (-23.0 + U(-1, 1), 28.0 + U(-1, 1))
        self.cc_top = 12.5
        self.syl_x = 31.0 * U(0.97, 1.03)
        self.syl_z0 = -1.0 + U(-1, 1)
        self.syl_slope = 0.3
        self.syl_y = (-24.0, 10.0)
        self.syl_hw = 0.8
        # cortex and folding
        self.t_gm = 1.8
        self.sulc_hw = 0.5 if preterm else 0.35
        self.sulc_depth = 3.0 if preterm else 5.5
        lo, hi = (-52.0, -64.0, -48.0), (52.0, 64.0, 48.0)
        self.f_sulc = GridField(rng, lo, hi, 1.0, 4.5 if preterm else 2.1, gradient=True)
        self.f_depth = GridField(rng, lo, hi, 2.0, 8.0)
        self.f_presence = GridField(rng, lo, hi, 2.0, 9.0)
        self.f_tex = GridField(rng, lo, hi, 1.0, 2.5)
        # --- deep grey matter, per side (index 0: right, x>0; 1: left)
        self.sides = (1.0, -1.0)
        # ventricle_scale != 1: the lateral ventricles' tube radii scaled (slit ventricles below 1); the
        # choroid plexus keeps its size and the random draws stay the same
        vscale = (1.35 if preterm else 1.0) * ventricle_scale
        self.thal, self.lent, self.caud_head, self.caud_body = [], [], [], []
        self.vent_main, self.vent_occ, self.choroid = [], [], []
        tubes_c, tubes_r = [], []
        cb_c, cb_r = [], []
        for sd in self.sides:
            j = lambda: U(-0.7, 0.7)
            self.thal.append((np.array([sd * (8.5 + j()), -6.0 + j(), 0.0 + j()]),
                              np.array([6.5, 10.0, 6.0]) * U(0.95, 1.05)))
            self.lent.append((np.array([sd * (21.5 + j()), 3.0 + j(), -1.0 + j()]),
                              np.array([4.5, 11.0, 7.0]) * U(0.95, 1.05)))
            self.caud_head.append((np.array([sd * (14.5 + 0.5 * j()), 14.0 + j(), 3.5 + j()]),
                                   np.array([4.5, 7.0, 5.5]) * U(0.95, 1.05)))
            body = np.array([[13.8, 10.0, 6.5, 3.0], [14.2, 0.0, 6.3, 2.3],
                             [15.0, -9.0, 7.2, 1.7], [17.5, -16.0, 8.3, 1.2]])
            body[:, 0] *= sd
            cc, rr, _ = spline_tube(body, 0.25)
            cb_c.append(cc)
            cb_r.append(rr)
            rs = U(0.9, 1.15) * vscale
            main = np.array([
                [8.0, 25.0, 4.5, 1.6], [8.8, 21.0, 6.8, 2.3], [9.8, 14.0, 7.8, 2.5],
                [10.3, 7.0, 8.0, 2.5], [10.8, -1.0, 8.2, 2.4], [11.8, -9.0, 8.2, 2.4],
                [14.5, -16.0, 7.5, 2.8], [18.5, -21.0, 4.5, 3.4], [22.5, -20.5, -1.5, 2.8],
                [25.5, -14.0, -7.5, 2.2], [27.0, -5.0, -12.0, 1.9], [26.5, 3.5, -15.0, 1.5]])
            occ = np.array([[18.5, -21.0, 4.5, 3.4], [19.5, -28.0, 4.0, 2.6],
                            [18.0, -35.0, 3.5, 1.9], [16.0, -40.0 + U(-2, 2), 3.0, 1.2]])
            jit = rng.uniform(-0.6, 0.6, size=(len(main), 3))
            jit[:, 2] *= 0.5
            main[:, :3] += jit
            occ[0, :3] = main[7, :3]
            occ[1:, :3] += rng.uniform(-0.6, 0.6, size=(3, 3))
            for arr in (main, occ):
                arr[:, 0] *= sd
                arr[:, 3] *= rs
            if preterm:  # enlarged ventricles pushed slightly outwards and upwards
                for arr in (main, occ):
                    arr[:, 0] += sd * 0.6
            mc, mr, mt = spline_tube(main, 0.25)
            oc, orr, ot = spline_tube(occ, 0.25)
            self.vent_main.append((mc, mr, mt))
            self.vent_occ.append((oc, orr, ot))
            tubes_c += [mc, oc]
            tubes_r += [mr, orr]
            atr = main[7, :3]
            self.choroid.append((atr + np.array([0.0, 0.0, -0.6]),
                                 np.array([2.0, 3.0, 1.8]) * rs / vscale * (1.2 if preterm else 1.0)))
        self.lat_vent = Tube(np.concatenate(tubes_c), np.concatenate(tubes_r))
        self.caud_tube = Tube(np.concatenate(cb_c), np.concatenate(cb_r))
        # box containing every deep structure (ventricles, basal ganglia, thalami, brainstem top)
        allc = np.concatenate(tubes_c + cb_c)
        self.deep_lo = np.minimum(allc.min(0) - 6.0, [-33.0, -30.0, -24.0])
        self.deep_hi = np.maximum(allc.max(0) + 6.0, [33.0, 30.0, 16.0])
        self.v3_c = np.array([0.0, -3.0, -3.5])
        self.v3_r = np.array([1.1 * (1.3 if preterm else 1.0), 10.0, 7.5])
        # --- intensities relative to WM
        if field >= 2.0:
            I = dict(csf=1.45, gm=0.85, caud=0.90, lent=0.89, thal=0.87, bs=0.82, cb_gm=0.84,
                     cb_wm=0.90, chor=0.75, dura=0.40, skull=0.06, font=0.55, galea=0.45,
                     fat=0.95, skin=0.55, wm=1.0)
        else:
            I = dict(csf=1.38, gm=0.88, caud=0.92, lent=0.91, thal=0.90, bs=0.85, cb_gm=0.87,
                     cb_wm=0.92, chor=0.80, dura=0.45, skull=0.06, font=0.58, galea=0.48,
                     fat=0.95, skin=0.58, wm=1.0)
        if preterm:
            I["gm"] -= 0.03
            I["csf"] -= 0.03
        self.I = I
        self.af_c = np.array([0.0, 14.0 + U(-2, 2)])  # anterior fontanelle (x, y)
        self.af_size = U(9.0, 13.0)

    # ---- component implicit functions (template coords) -----------------------------
    def hull_sdf(self, p):
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        ax = self.ax * (1.0 - self.frontal_narrow * np.clip(y / self.ay, -1, 1))
        az = np.where(z > 0, self.az_sup, self.az_inf)
        r = np.stack([ax, np.full_like(x, self.ay), az], 1)
        q = p / r
        k0 = np.sqrt(np.einsum("ij,ij->i", q, q))
        q2 = q / r
        k1 = np.sqrt(np.einsum("ij,ij->i", q2, q2))
        return np.where(k0 < 1e-6, -30.0, k0 * (k0 - 1.0) / np.maximum(k1, 1e-9))

    def cb_raw(self, p):
        return ellipsoid_sdf_box(p, self.cb_c, self.cb_r, 12.0)

    def bs_sdf(self, p):
        return capsule_chain_sdf(p, self.bs_pts, self.bs_r, margin=12.0)

    def brain_union(self, p):
        bs_cut = np.maximum(self.bs_sdf(p), self.z_bs_cut - p[:, 2])
        return smin(smin(self.hull_sdf(p), self.cb_raw(p), 5.0), bs_cut, 4.0)

    def head_sdf(self, p):
        return self.brain_union(p) - (self.t_csf + self.t_skull + self.t_scalp)

    def z_floor(self, y):
        out = np.maximum(self.cc_y[0] - y, y - self.cc_y[1])
        return self.cc_top - 60.0 * smoothstep(out / 6.0)

    def sylvian_dist(self, x, y, z):
        """Distance to the Sylvian fissure CSF: a stem running in from the lateral surface
        (rising slightly laterally and posteriorly) plus the vertical insular cistern."""
        ax_ = np.abs(x)
        zsy = self.syl_z0 - self.syl_slope * (y + 5.0)
        zst = zsy + 0.2 * (ax_ - self.syl_x)
        ds = np.abs(z - zst) - self.syl_hw
        oy = np.maximum(np.maximum(self.syl_y[0] - y, y - self.syl_y[1]), 0.0)
        ox = np.maximum(self.syl_x - ax_, 0.0)
        d_stem = np.where((oy == 0) & (ox == 0), ds, np.sqrt(np.maximum(ds, 0) ** 2 + ox ** 2 + oy ** 2))
        di = np.abs(ax_ - self.syl_x) - 0.5
        oz = np.maximum(np.abs(z - zsy - 0.5) - 7.5, 0.0)
        oy2 = np.maximum(np.maximum(self.syl_y[0] + 3.0 - y, y - self.syl_y[1] + 2.0), 0.0)
        d_ins = np.where((oz == 0) & (oy2 == 0), di, np.sqrt(np.maximum(di, 0) ** 2 + oz ** 2 + oy2 ** 2))
        return np.minimum(d_stem, d_ins)

    def caudate_sdf(self, p):
        d = self.caud_tube.sdf(p)
        for c, r in self.caud_head:
            d = np.minimum(d, ellipsoid_sdf_box(p, c, r))
        return d

    def vent_sdf(self, p):
        """Signed distance to ventricular CSF (lateral ventricles minus caudate, 3rd ventricle)."""
        lat = np.maximum(self.lat_vent.sdf(p), -self.caudate_sdf(p))
        return np.minimum(lat, ellipsoid_sdf_box(p, self.v3_c, self.v3_r))

    def sulc_dist(self, p, s):
        """Distance to sulcal CSF sheets (negative inside) for points at hull depth s."""
        f = self.f_sulc(p)
        g = np.maximum(self.f_sulc(p, grad=True), 0.05)
        ds = np.abs(f) / g - self.sulc_hw
        D = self.sulc_depth * np.clip(1.0 + 0.35 * self.f_depth(p), 0.4, 1.5)
        d = np.where(s <= D, ds, np.sqrt(np.maximum(ds, 0.0) ** 2 + (s - D) ** 2))
        if self.preterm:
            d = np.where(self.f_presence(p) > 0.2, d, BIG)
        return d

    # ---- full evaluation --------------------------------------------------------------
    def evaluate(self, p, edge, want=("value", "label")):
        """Evaluate the anatomy at template points p (N,3).

        edge: width (template mm) of the linear partial-volume ramp at boundaries (0: hard).
        Returns dict with 'value' (signal / WM), 'label' (int8 hard labels) and, when asked,
        'vent' (ventricle signed distance) and 'pial' (distance to nearest pial surface).
        """
        p = np.asarray(p, float)
        N = len(p)
        m = self._near_head(p, edge)
        if m.all():
            return self._evaluate_core(p, edge, want)
        idx = np.nonzero(m)[0]
        sub = self._evaluate_core(p[idx], edge, want) if len(idx) else None
        out = {}
        for key in want:
            full = np.zeros(N, np.int8) if key == "label" else (
                np.zeros(N) if key == "value" else np.full(N, BIG))
            if sub is not None:
                full[idx] = sub[key]
            out[key] = full
        return out

    def _near_head(self, p, edge):
        """Cheap conservative test: False only for points certainly outside the scalp."""
        pad = self.t_csf + self.t_skull + self.t_scalp + edge + 4.0
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        ax = self.ax * (1.0 + self.frontal_narrow) + pad
        az = np.where(z > 0, self.az_sup, self.az_inf) + pad
        m = (x / ax) ** 2 + (y / (self.ay + pad)) ** 2 + (z / az) ** 2 < 1.0
        lo = np.minimum(self.cb_c - self.cb_r, [-8.0, -26.0, self.z_bs_cut]) - pad
        hi = np.maximum(self.cb_c + self.cb_r, [8.0, 0.0, 0.0]) + pad
        m[box_index(p, lo, hi)] = True
        return m

    def _evaluate_core(self, p, edge, want=("value", "label")):
        """:meth:`evaluate` without the early-out for points outside the head."""
        p = np.asarray(p, float)
        N = len(p)
        I = self.I
        val = np.zeros(N)
        lab = np.zeros(N, np.int8)
        vent_all = np.full(N, BIG)
        pial_all = np.full(N, BIG)

        def frac(sdf):
            if edge <= 0:
                return (sdf < 0).astype(float)
            return np.clip(0.5 - sdf / edge, 0.0, 1.0)

        def layer(idx, sdf, v, code):
            f = frac(sdf)
            val[idx] = val[idx] * (1.0 - f) + v * f
            lab[idx[sdf < 0]] = code

        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        hull = self.hull_sdf(p)
        cbr = self.cb_raw(p)
        bs = self.bs_sdf(p)
        bs_cut = np.maximum(bs, self.z_bs_cut - z)
        B = smin(smin(hull, cbr, 5.0), bs_cut, 4.0)
        t1 = self.t_csf
        t2 = t1 + self.t_skull
        t3 = t2 + self.t_scalp
        head = np.nonzero(B - t3 < edge)[0]
        if len(head):
            Bh = B[head]
            layer(head, Bh - t3, I["skin"], SKIN)
            layer(head, Bh - (t3 - 0.8), I["fat"], FAT)
            layer(head, Bh - (t2 + 1.0), I["galea"], GALEA)
            ph = p[head]
            afd = (np.abs(ph[:, 0] - self.af_c[0]) + np.abs(ph[:, 1] - self.af_c[1])) / self.af_size - 1.0
            in_font = (afd < 0) & (ph[:, 2] > 15.0)
            layer(head, Bh - t2, np.where(in_font, I["font"], I["skull"]), SKULL)
            layer(head, Bh - t1, I["csf"], CSF)
        ic = np.nonzero(B - t1 < edge)[0]
        if len(ic):
            pi = p[ic]
            xi, yi, zi = x[ic], y[ic], z[ic]
            zf = self.z_floor(yi)
            falx = np.maximum(np.abs(xi) - 0.35, zf + 1.5 - zi)
            cbi = cbr[ic]
            tent = np.maximum(np.abs(cbi - 0.5 * self.cb_gap) - 0.35, self.cb_c[2] + 2.0 - zi)
            layer(ic, np.minimum(falx, tent), I["dura"], DURA)
            # cerebellum (carved by the brainstem), folia near its surface
            cb = np.maximum(cbi, -(bs[ic] - 1.0))
            sel = np.nonzero(cb < edge + 0.5)[0]
            if len(sel):
                q = pi[sel]
                depth = -cb[sel]
                rho = (q[:, 2] - self.cb_c[2]) - 0.55 * (q[:, 1] - self.cb_c[1])
                fol = np.cos(2 * np.pi * rho / 3.2 + 0.3 * self.f_tex(q))
                fis = np.where(depth < 4.0, 0.5 * (0.82 - fol) * 3.2 / np.pi, BIG)
                par = np.maximum(cb[sel], -fis)
                idx = ic[sel]
                f_wm = frac(4.0 - depth)
                v = I["cb_gm"] * (1 - f_wm) + I["cb_wm"] * f_wm
                layer(idx, par, v, CB_GM)
                lab[idx[(par < 0) & (depth > 4.0)]] = CB_WM
            # cerebrum
            carve_bs = np.maximum(bs[ic] - 1.5, zi + 14.0)
            cer = np.maximum(np.maximum(hull[ic], -(cbi - self.cb_gap)), -carve_bs)
            sel = np.nonzero(cer < edge)[0]
            if len(sel):
                q = pi[sel]
                xs, ys, zs = q[:, 0], q[:, 1], q[:, 2]
                s = -hull[ic][sel]
                depth_c = -cer[sel]
                hw = self.fis_hw
                zfs = zf[sel]
                dx = np.abs(xs) - hw
                d_fis = np.where(zs >= zfs, dx, np.sqrt(np.maximum(dx, 0) ** 2 + (zfs - zs) ** 2))
                d_fis_gm = np.where(zs >= zfs - 1.0, dx, BIG)
                d_syl = self.sylvian_dist(xs, ys, zs)
                d_sul = np.full(len(sel), BIG)
                shallow = np.nonzero(s < 1.5 * self.sulc_depth + 6.0)[0]
                if len(shallow):
                    d_sul[shallow] = self.sulc_dist(q[shallow], s[shallow])
                d_csf = np.minimum(np.minimum(d_sul, d_fis), d_syl)
                par = np.maximum(cer[sel], -d_csf)
                pial = np.minimum(np.minimum(depth_c, d_sul), np.minimum(d_fis_gm, d_syl))
                pial_all[ic[sel]] = pial
                wm_sdf = self.t_gm - pial
                f_wm = frac(wm_sdf)
                tex = self.f_tex(q)
                # periventricular caps: slightly brighter WM near the ventricles
                vs = np.full(len(sel), BIG)
                deep = box_index(q, self.deep_lo - 8.0, self.deep_hi + 8.0)
                deep = deep[s[deep] > 8.0]
                if len(deep):
                    vs[deep] = self.vent_sdf(q[deep])
                vent_all[ic[sel]] = vs
                wmv = I["wm"] * (1.0 + 0.02 * tex + 0.04 * np.exp(-(np.maximum(vs, 0) / 4.0) ** 2))
                v = I["gm"] * (1.0 + 0.015 * tex) * (1 - f_wm) + wmv * f_wm
                idx = ic[sel]
                layer(idx, par, v, GM)
                lab[idx[(par < 0) & (wm_sdf < 0)]] = WM
                # deep structures
                dsel = box_index(q, self.deep_lo, self.deep_hi)
                dsel = dsel[s[dsel] > 10.0]
                if len(dsel):
                    qd = q[dsel]
                    idd = idx[dsel]
                    layer(idd, bs[ic][sel][dsel], I["bs"], BRAINSTEM)
                    dl = np.minimum(ellipsoid_sdf_box(qd, *self.lent[0]), ellipsoid_sdf_box(qd, *self.lent[1]))
                    layer(idd, dl, I["lent"], LENTIFORM)
                    layer(idd, self.caudate_sdf(qd), I["caud"], CAUDATE)
                    dt = np.minimum(ellipsoid_sdf_box(qd, *self.thal[0]), ellipsoid_sdf_box(qd, *self.thal[1]))
                    layer(idd, dt, I["thal"], THALAMUS)
                    vd = vs[dsel]
                    layer(idd, vd, I["csf"], VENT)
                    dch = np.minimum(ellipsoid_sdf_box(qd, *self.choroid[0]), ellipsoid_sdf_box(qd, *self.choroid[1]))
                    layer(idd, np.maximum(dch, vd), I["chor"], CHOROID)
            # brainstem below the cerebrum
            bsel = np.nonzero((bs_cut[ic] < edge) & (cer > -0.5))[0]
            if len(bsel):
                layer(ic[bsel], bs_cut[ic][bsel], I["bs"], BRAINSTEM)
        out = {}
        if "value" in want:
            out["value"] = val
        if "label" in want:
            out["label"] = lab
        if "vent" in want:
            out["vent"] = vent_all
        if "pial" in want:
            out["pial"] = pial_all
        return out


# ----------------------------------------------------------------------------------------
# vessel curves
# ----------------------------------------------------------------------------------------
class Curve:
    """Natural cubic spline through world control points (chord-length parametrisation)."""

    def __init__(self, ctrl):
        ctrl = np.asarray(ctrl, float)
        keep = np.concatenate([[True], np.linalg.norm(np.diff(ctrl, axis=0), axis=1) > 1e-3])
        ctrl = ctrl[keep]
        u = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(ctrl, axis=0), axis=1))])
        self.cs = CubicSpline(u, ctrl, bc_type="natural", axis=0)
        uf = np.linspace(0.0, u[-1], max(2000, int(u[-1] / 0.01)))
        d1 = self.cs(uf, 1)
        d2 = self.cs(uf, 2)
        sp = np.linalg.norm(d1, axis=1)
        kappa = np.linalg.norm(np.cross(d1, d2), axis=1) / np.maximum(sp, 1e-9) ** 3
        du = np.diff(uf)
        arc = np.concatenate([[0.0], np.cumsum(0.5 * (sp[1:] + sp[:-1]) * du)])
        self.uf, self.arc = uf, arc
        self.length = float(arc[-1])
        kin = kappa * sp
        self.curv_mean = float(np.sum(0.5 * (kin[1:] + kin[:-1]) * du) / self.length)
        self.tortuosity = float(self.length / np.linalg.norm(ctrl[-1] - ctrl[0]))

    def sample(self, step):
        n = int(math.ceil(self.length / step))
        st = np.linspace(0.0, self.length, n + 1)
        u = np.interp(st, self.arc, self.uf)
        return self.cs(u), unit(self.cs(u, 1))


class VesselBuilder:
    """Places all veins in template space with anatomical constraints."""

    def __init__(self, anat: Anatomy, pose: Pose, rng, preterm: bool, dmv_diameter_scale: float = 1.0):
        self.A = anat
        self.pose = pose
        self.rng = rng
        self.preterm = preterm
        self.dmv_diameter_scale = float(dmv_diameter_scale)
        self.s = pose.s
        self.items = []  # dicts: region, side, diameter, ctrl (template), pts (template dense), rad_t
        self.tree = None
        self.all_pts = np.zeros((0, 3))
        self.all_rad = np.zeros(0)
        self.all_vid = np.zeros(0, int)

    # -- bookkeeping
    def _add(self, region, side, diam, ctrl):
        pts, _ = resample_polyline(ctrl, 0.3)
        self.items.append(dict(region=region, side=side, diameter=float(diam),
                               ctrl=np.asarray(ctrl, float)))
        k = len(self.items) - 1
        self.all_pts = np.vstack([self.all_pts, pts])
        self.all_rad = np.concatenate([self.all_rad, np.full(len(pts), 0.5 * diam / self.s)])
        self.all_vid = np.concatenate([self.all_vid, np.full(len(pts), k)])
        self.tree = cKDTree(self.all_pts)
        return k

    def _clear(self, pts, rad_t, margin_w=0.5, ignore=()):
        """True if a candidate (template points, template radius) keeps clear of placed veins."""
        if self.tree is None:
            return True
        d, i = self.tree.query(pts, k=4, distance_upper_bound=6.0)
        ok = np.isfinite(d)
        ii = np.where(ok, i, 0)
        need = rad_t + self.all_rad[ii] + margin_w / self.s
        bad = ok & (d < need)
        if ignore:
            bad &= ~np.isin(self.all_vid[ii], list(ignore))
        return not bad.any()

    def _eval(self, pts, want=("label", "vent", "pial")):
        return self.A.evaluate(pts, 0.0, want=want)

    # -- internal cerebral veins
    def build_icv(self):
        rng = self.rng
        out = []
        for sd in (1.0, -1.0):
            d = rng.uniform(1.5, 2.0) if self.preterm else rng.uniform(1.5, 2.5)
            a = 0.5 * d / self.s
            x0 = a + 0.5 + rng.uniform(0.0, 0.3)
            zb = max(5.0, 4.0 + a + 0.6) + rng.uniform(0.0, 0.4)
            ys = np.array([8.0, 2.0, -5.0, -12.0, -18.0, -22.5])
            zs = zb + np.array([0.0, 0.4, 0.8, 1.0, 0.8, 0.1]) + rng.uniform(-0.2, 0.2, 6)
            xs = np.maximum(x0 * np.array([1.0, 1.0, 1.0, 0.95, 0.9, 0.85]), a + 0.45)
            ctrl = np.stack([sd * xs, ys, zs], 1)
            ctrl = resample_polyline(ctrl, 1.0)[0]
            out.append(self._add("internal_cerebral", "midline", d, ctrl))
        self.icv = out
        return out

    # -- thalamostriate veins
    def build_tsv(self):
        rng = self.rng
        self.tsv = []
        for k, sd in enumerate((1.0, -1.0)):
            d = rng.uniform(1.0, 1.4) if self.preterm else rng.uniform(1.0, 1.6)
            a = 0.5 * d / self.s
            pts = np.array([[14.8, -11.0, 7.0], [13.5, -5.5, 6.2], [12.6, 0.0, 5.8], [11.0, 5.5, 5.2]])
            pts += rng.uniform(-0.6, 0.6, size=pts.shape)
            if self.preterm:
                pts[:, 0] += 0.6
            pts[:, 0] *= sd
            pts = project_to_level(self.A.vent_sdf, pts, a + 0.25)
            icv_start = self.items[self.icv[k]]["ctrl"][0]
            mid = np.array([sd * 7.5, 8.2, 0.5 * (pts[-1, 2] + icv_start[2])])
            ctrl = np.vstack([pts, mid, icv_start])
            ctrl = Curve(ctrl).sample(1.0)[0]
            self.tsv.append(self._add("thalamic", "right" if sd > 0 else "left", d, ctrl))

    # -- anterior caudate veins
    def build_acv(self):
        rng = self.rng
        for k, sd in enumerate((1.0, -1.0)):
            n = int(rng.integers(1, 4))
            tsv_pts = self.items[self.tsv[k]]["ctrl"]
            placed = 0
            for _ in range(100 * n):
                if placed >= n:
                    break
                d = rng.uniform(0.6, 0.85) if self.preterm else rng.uniform(0.6, 1.0)
                a = 0.5 * d / self.s
                ys = rng.uniform(14.0, 23.0)
                st = np.array([sd * (12.0 + rng.uniform(-0.5, 1.0)), ys, rng.uniform(4.5, 9.0)])
                tgt = np.array([sd * 10.5, 6.0, 5.2])
                j = int(np.argmin(np.linalg.norm(tsv_pts - tgt, axis=1)))
                j = min(max(j + int(rng.integers(-3, 4)), 1), len(tsv_pts) - 2)
                end = tsv_pts[j]
                mid = 0.5 * (st + end) + np.array([sd * rng.uniform(0.5, 1.5), 0.0, rng.uniform(0.0, 1.5)])
                pr = project_to_level(self.A.vent_sdf, np.vstack([st, mid]), a + 0.2)
                ctrl = np.vstack([pr, end])
                if np.linalg.norm(ctrl[1] - ctrl[0]) < 2.0:
                    continue
                c = Curve(ctrl)
                L = c.length * self.s
                if not (6.0 <= L <= 20.0) or c.tortuosity > 1.35:
                    continue
                pts = c.sample(0.5)[0]
                ev = self._eval(pts[:-4], want=("label", "vent"))
                if np.any(ev["vent"] < a * 0.7) or np.any(ev["label"] == CSF):
                    continue
                if not self._clear(pts[:-7], a, ignore=(self.tsv[k],)):  # last 3 mm: confluence
                    continue
                self._add("anterior_caudate", "right" if sd > 0 else "left", d, c.sample(1.0)[0])
                placed += 1

    # -- deep medullary veins
    def _vent_frames(self, k, sd):
        mc, mr, mt = self.A.vent_main[k]
        oc, orr, ot = self.A.vent_occ[k]
        parts = {}
        y, z = mc[:, 1], mc[:, 2]
        parts["frontal"] = [(mc, mr, mt, np.nonzero(y > 7.0)[0], 0)]
        parts["body"] = [(mc, mr, mt, np.nonzero((y <= 7.0) & (y >= -16.0) & (z > 3.0))[0], None)]
        parts["posterior"] = [(mc, mr, mt, np.nonzero((y < -16.0) & (z > 1.0))[0], None),
                              (oc, orr, ot, np.arange(len(oc)), len(oc) - 1)]
        return parts

    def build_dmv(self):
        rng = self.rng
        pre = self.preterm
        for k, sd in enumerate((1.0, -1.0)):
            side = "right" if sd > 0 else "left"
            n_target = int(rng.integers(12, 23)) if pre else int(rng.integers(20, 36))
            parts = self._vent_frames(k, sd)
            placed = 0
            tries = 0
            while placed < n_target and tries < 80 * n_target:
                tries += 1
                u = rng.uniform()
                part = "frontal" if u < 0.3 else ("body" if u < 0.7 else "posterior")
                opts = parts[part]
                c, r, t, idxs, tip = opts[int(rng.integers(len(opts)))] if len(opts) > 1 and rng.uniform() < 0.5 \
                    else opts[0]
                if len(idxs) == 0:
                    continue
                if pre:
                    diam = 0.4 + 0.8 * rng.beta(1.5, 5.0)
                else:
                    diam = 0.4 + 0.8 * rng.beta(2.0, 3.5)
                diam *= self.dmv_diameter_scale
                a = 0.5 * diam / self.s
                use_tip = tip is not None and rng.uniform() < 0.25
                i = tip if use_tip else int(idxs[int(rng.integers(len(idxs)))])
                T = t[i] if i > 0 else t[0]
                Lat = np.array([sd, 0.0, 0.0]) - (sd * T[0]) * T
                Lat = unit(Lat)
                Up = unit(np.cross(T, Lat))
                if Up[2] < 0:
                    Up = -Up
                lo_hi = {"frontal": (25.0, 105.0), "body": (5.0, 100.0), "posterior": (-50.0, 105.0)}[part]
                phi = math.radians(rng.uniform(*lo_hi))
                nrm = math.cos(phi) * Lat + math.sin(phi) * Up
                if part == "frontal":
                    tout = unit(np.array([0.0, 1.0, 0.15]))
                elif part == "posterior":
                    tout = unit(np.array([0.0, -1.0, 0.1]))
                else:
                    tout = unit(T * (1 if rng.uniform() < 0.5 else -1))
                if use_tip:  # seed on the hemispherical cap of a horn tip
                    cap = -t[0] if i == 0 else t[-1]
                    beta = math.radians(rng.uniform(0.0, 65.0))
                    nrm = unit(math.cos(beta) * cap + math.sin(beta) * nrm)
                delta = rng.uniform(0.0, 0.6) / self.s
                p0 = c[i] + (r[i] + a + delta) * nrm
                ev0 = self._eval(p0[None], want=("label", "vent"))
                if not (a + delta - 0.35 <= ev0["vent"][0] <= a + delta + 0.35):
                    continue
                if ev0["label"][0] not in (WM,):
                    continue
                tau = rng.uniform(-0.3, 0.3) if part == "body" else rng.uniform(0.0, 0.7)
                m = unit(nrm + tau * tout + 0.15 * unit(rng.standard_normal(3)))
                if m @ nrm < 0.3:
                    continue
                Lmin = (8.0 if pre else 10.0) / self.s
                Lmax = (24.0 if pre else 30.0) / self.s
                L = rng.uniform(Lmin + 1.0 / self.s, Lmax)
                shape = dict(A1=rng.uniform(0.07, 0.26) * rng.choice([-1, 1]),
                             w3=rng.uniform(0.0, 0.15) / self.s, lam3=rng.uniform(5.0, 10.0) / self.s,
                             psi3=rng.uniform(0, 2 * np.pi), bend=rng.uniform(0.35, 0.8))
                perp = unit(np.cross(m, rng.standard_normal(3)))
                perp2 = unit(np.cross(m, rng.standard_normal(3)))
                ok_path = None
                for attempt in range(2):
                    path = self._dmv_path(p0, nrm, m, L, shape, perp, perp2)
                    ev = self._eval(path, want=("label", "vent", "pial"))
                    ds = np.linalg.norm(np.diff(path, axis=0), axis=1)
                    sarc = np.concatenate([[0.0], np.cumsum(ds)])
                    good = (ev["label"] == WM) & (ev["pial"] >= self.A.t_gm + 1.5 / self.s) & \
                           ((ev["vent"] >= a + 0.15) | (sarc < 0.8))
                    good[sarc < 0.6] = True
                    bad = np.nonzero(~good)[0]
                    if len(bad) == 0:
                        ok_path = path
                        break
                    L_ok = sarc[bad[0]] - 1.5 / self.s
                    if L_ok < Lmin:
                        break
                    L = L_ok
                if ok_path is None:
                    continue
                if not self._clear(ok_path, a, margin_w=0.5):
                    continue
                ctrl = ok_path[::2] if len(ok_path) > 6 else ok_path
                if np.linalg.norm(ctrl[-1] - ok_path[-1]) > 1e-6:
                    ctrl = np.vstack([ctrl, ok_path[-1]])
                cv = Curve(self.pose.to_world(ctrl))
                if cv.tortuosity > 1.4:
                    continue
                self._add("dmv", side, diam, ctrl)
                placed += 1
            self.dmv_counts = getattr(self, "dmv_counts", {})
            self.dmv_counts[side] = (placed, n_target)

    def _dmv_path(self, p0, n, m, L, sh, perp, perp2, ds=0.5):
        ns = max(int(math.ceil(L / ds)), 4)
        s = np.linspace(0.0, L, ns + 1)
        w = smoothstep(s / (sh["bend"] * L))
        d = unit((1 - w)[:, None] * n + w[:, None] * m)
        base = p0 + np.concatenate([[np.zeros(3)], np.cumsum(0.5 * (d[1:] + d[:-1]) * np.diff(s)[:, None], 0)])
        bump = sh["A1"] * L * np.sin(np.pi * s / L) ** 2
        wig = sh["w3"] * smoothstep(s / 2.0) * smoothstep((L - s) / 1.0) * np.sin(2 * np.pi * s / sh["lam3"] + sh["psi3"])
        return base + bump[:, None] * perp + wig[:, None] * perp2

    # -- superficial cortical veins
    def build_cortical(self):
        rng = self.rng
        A = self.A
        n_target = int(rng.integers(4, 8)) if self.preterm else int(rng.integers(6, 11))
        placed = 0
        tries = 0
        while placed < n_target and tries < 60 * n_target:
            tries += 1
            sd = 1.0 if rng.uniform() < 0.5 else -1.0
            d = rng.uniform(1.0, 1.8) if self.preterm else rng.uniform(1.0, 2.5)
            a = 0.5 * d / self.s
            level = min(a + 0.25, A.t_csf - a + 0.3)
            y0, z0 = rng.uniform(-38.0, 32.0), rng.uniform(-8.0, 18.0)
            p = project_to_level(A.hull_sdf, np.array([[sd * 50.0, y0, z0]]), level)[0]
            target = np.array([sd * 4.0, y0 + rng.uniform(-20, 20), 45.0])
            Lt = rng.uniform(25.0, 55.0) / self.s
            pts = [p]
            dprev = None
            Ltot = 0.0
            while Ltot < Lt:
                g = unit(numeric_grad(A.hull_sdf, p[None])[0])
                v = target - p
                v = unit(v - (v @ g) * g)
                rnd = rng.standard_normal(3)
                rnd = unit(rnd - (rnd @ g) * g)
                dn = v if dprev is None else unit(0.65 * dprev + 0.35 * v + 0.12 * rnd)
                q = project_to_level(A.hull_sdf, (p + 1.0 * dn)[None], level, iters=6)[0]
                Ltot += np.linalg.norm(q - p)
                dprev = unit(q - p)
                p = q
                pts.append(p)
                if abs(p[0]) < 6.0 + a or p[2] > 44:
                    break
            pts = np.array(pts)
            if Ltot * self.s < 15.0:
                continue
            if np.any(np.sign(pts[:, 0]) != sd):
                continue
            c = Curve(pts)
            dense = c.sample(0.5)[0]
            ev = self._eval(dense, want=("label",))
            if np.mean(np.isin(ev["label"], (CSF, GM, DURA))) < 0.9:
                continue
            if not self._clear(dense, a, margin_w=1.0):
                continue
            self._add("other", "right" if sd > 0 else "left", d, pts)
            placed += 1

    def build_all(self):
        self.build_icv()
        self.build_tsv()
        self.build_acv()
        self.build_dmv()
        self.build_cortical()
        return self.items


# ----------------------------------------------------------------------------------------
# case assembly
# ----------------------------------------------------------------------------------------
def build_case(preset: str, seed: int, ventricle_scale: float = 1.0, head_yaw_deg: float = 0.0,
               head_roll_deg: float = 0.0, dmv_diameter_scale: float = 1.0, extracerebral_csf_scale: float = 1.0):
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    P = PRESETS[preset]
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.78, 0.84) if P["preterm"] else rng.uniform(0.97, 1.03)
    R = rot("z", rng.uniform(-4, 4)) @ rot("y", rng.uniform(-3, 3)) @ rot("x", rng.uniform(-4, 4))
    if head_yaw_deg or head_roll_deg:     # the head turned further in the scanner (about S-I, then A-P)
        R = rot("z", head_yaw_deg) @ rot("y", head_roll_deg) @ R
    pose = Pose(scale, R, rng.uniform(-2.0, 2.0, 3))
    anat = Anatomy(rng, P["preterm"], P["field"], ventricle_scale, extracerebral_csf_scale)
    vb = VesselBuilder(anat, pose, rng, P["preterm"], dmv_diameter_scale)
    items = vb.build_all()
    # contrast parameters per vessel
    vessels = []
    for k, it in enumerate(items):
        cw = pose.to_world(it["ctrl"])
        cv = Curve(cw)
        d = it["diameter"]
        if P["field"] >= 2.0:
            c_in = rng.uniform(0.5, 0.65) + 0.05 * (d - 1.0)
            c_ex = 0.30
        else:
            c_in = rng.uniform(0.30, 0.42) + 0.03 * (d - 1.0)
            c_ex = 0.15
        vessels.append(dict(vessel_id=k + 1, region=it["region"], side=it["side"], diameter_mm=d,
                            curve=cv, c_in=float(np.clip(c_in, 0.2, 0.75)), c_ex=c_ex))
    # imaging grid
    if P["oblique"]:
        ax_ = rng.uniform(10.0, 15.0) * rng.choice([-1, 1])
        ay_ = rng.uniform(10.0, 15.0) * rng.choice([-1, 1])
        Rg = rot("x", ax_) @ rot("y", ay_)
        grid_angles = (float(ax_), float(ay_))
    else:
        Rg = np.eye(3)
        grid_angles = (0.0, 0.0)
    vox = np.array(P["voxel"], float)
    # head extent from a coarse template sampling of the head implicit surface
    g = np.mgrid[-62:63:1.5, -75:76:1.5, -66:60:1.5].reshape(3, -1).T
    hs = anat.head_sdf(g)
    hp = pose.to_world(g[hs < 0.0])
    gf = hp @ Rg  # coordinates in the grid frame
    lo = gf.min(0) - 3.0
    hi = gf.max(0) + 3.0
    shape = np.ceil((hi - lo) / vox).astype(int) + 1
    shape += shape % 2
    ctr = 0.5 * (lo + hi)
    lo = ctr - 0.5 * (shape - 1) * vox
    Aff = np.eye(4)
    Aff[:3, :3] = Rg @ np.diag(vox)
    Aff[:3, 3] = Rg @ lo
    return dict(P=P, rng=rng, pose=pose, anat=anat, builder=vb, vessels=vessels,
                affine=Aff, shape=tuple(int(v) for v in shape), grid_angles=grid_angles)


# ----------------------------------------------------------------------------------------
# rendering
# ----------------------------------------------------------------------------------------
def bias_field_fn(rng, centre):
    comps = []
    for _ in range(4):
        lam = rng.uniform(160.0, 400.0)
        k = unit(rng.standard_normal(3)) * (2 * np.pi / lam)
        comps.append((k, rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 1.0)))
    radial = rng.uniform(0.3, 1.0)
    grad = unit(rng.standard_normal(3)) * rng.uniform(0.2, 0.6) / 60.0

    def f(w):
        v = np.zeros(len(w))
        for k, ph, amp in comps:
            v += amp * np.cos(w @ k + ph)
        r2 = np.sum((w - centre) ** 2, axis=1) / 70.0 ** 2
        v += radial * r2 + (w - centre) @ grad
        return v

    return f


def render_tissue(case, chunk_pts=1_200_000):
    pose, anat = case["pose"], case["anat"]
    Aff = case["affine"]
    M, o = Aff[:3, :3], Aff[:3, 3]
    ni, nj, nk = case["shape"]
    vox = np.linalg.norm(M, axis=0)
    inplane = float(min(vox[0], vox[1]))
    nz = 3 if vox[2] > 1.5 * inplane else 1
    zoffs = (np.arange(nz) + 0.5) / nz - 0.5
    edge_w = max(inplane, vox[2] / nz) if nz > 1 else float(np.mean(vox))
    edge_t = edge_w / pose.s
    tissue = np.zeros((ni, nj, nk), np.float32)
    labels = np.zeros((ni, nj, nk), np.int8)
    braw = np.zeros((ni, nj, nk), np.float32)
    bfun = bias_field_fn(case["rng"], pose.t)
    ii, jj = np.meshgrid(np.arange(ni), np.arange(nj), indexing="ij")
    ii = ii.ravel().astype(float)
    jj = jj.ravel().astype(float)
    per_slice = ni * nj * nz
    ks = max(1, chunk_pts // per_slice)
    for k0 in range(0, nk, ks):
        k1 = min(nk, k0 + ks)
        kk = np.arange(k0, k1, dtype=float)
        # points ordered (k, sub, ij)
        kz = (kk[:, None] + zoffs[None, :]).ravel()
        ijk = np.empty((len(kz) * len(ii), 3))
        ijk[:, 0] = np.tile(ii, len(kz))
        ijk[:, 1] = np.tile(jj, len(kz))
        ijk[:, 2] = np.repeat(kz, len(ii))
        w = ijk @ M.T + o
        ev = anat.evaluate(pose.to_template(w), edge_t, want=("value", "label"))
        v = ev["value"].reshape(k1 - k0, nz, ni, nj).mean(1)
        tissue[:, :, k0:k1] = np.transpose(v, (1, 2, 0))
        lab = ev["label"].reshape(k1 - k0, nz, ni, nj)[:, nz // 2]
        labels[:, :, k0:k1] = np.transpose(lab, (1, 2, 0))
        wc = w.reshape(k1 - k0, nz, ni * nj, 3)[:, nz // 2].reshape(-1, 3)
        braw[:, :, k0:k1] = np.transpose(bfun(wc).reshape(k1 - k0, ni, nj), (1, 2, 0))
    return tissue, labels, braw


def render_vessels(case, tissue):
    """Return image (WM units) with veins inserted (partial volume + blooming)."""
    Aff = case["affine"]
    M, o = Aff[:3, :3], Aff[:3, 3]
    Minv = np.linalg.inv(M)
    shape = case["shape"]
    vox = np.linalg.norm(M, axis=0)
    hd = 0.5 * float(np.linalg.norm(vox))
    nsub = [int(max(3, min(14, math.ceil(v / 0.15)))) for v in vox]
    grids = np.meshgrid(*[(np.arange(n) + 0.5) / n - 0.5 for n in nsub], indexing="ij")
    offs = np.stack([g.ravel() for g in grids], 1) @ M.T
    ns = len(offs)
    log1mF = np.zeros(shape, np.float32)
    blood = np.zeros(shape, np.float32)
    fsum = np.zeros(shape, np.float32)
    log1mE = np.zeros(shape, np.float32)
    for v in case["vessels"]:
        a = 0.5 * v["diameter_mm"]
        P, T = v["curve"].sample(0.05)
        v["_dense"] = (P, T)
        rb = 3.0 * a
        reach = rb + hd
        lo = P.min(0) - reach
        hi = P.max(0) + reach
        corners = np.array([[lo[0], lo[1], lo[2]], [hi[0], lo[1], lo[2]], [lo[0], hi[1], lo[2]],
                            [lo[0], lo[1], hi[2]], [hi[0], hi[1], lo[2]], [hi[0], lo[1], hi[2]],
                            [lo[0], hi[1], hi[2]], [hi[0], hi[1], hi[2]]])
        cij = (corners - o) @ Minv.T
        i0 = np.maximum(np.floor(cij.min(0)).astype(int), 0)
        i1 = np.minimum(np.ceil(cij.max(0)).astype(int) + 1, np.array(shape))
        if np.any(i1 <= i0):
            continue
        g = np.mgrid[i0[0]:i1[0], i0[1]:i1[1], i0[2]:i1[2]].reshape(3, -1).T
        cw = g @ M.T + o
        tree = cKDTree(P)
        d, idx = tree.query(cw, distance_upper_bound=reach, workers=-1)
        near = np.isfinite(d)
        g, cw, d, idx = g[near], cw[near], d[near], idx[near]
        sin2_all = 1.0 - (T @ B0_DIR) ** 2

        def halo(dd, jj):
            dd = np.maximum(dd, 1e-6)
            taper = np.clip((rb - dd) / a, 0.0, 1.0)
            return v["c_ex"] * sin2_all[jj] * (a / dd) ** 2 * taper

        f = np.zeros(len(d))
        E = np.zeros(len(d))
        full = d <= a - hd
        f[full] = 1.0
        out = d >= a + hd
        E[out] = halo(d[out], idx[out])
        edge = ~(full | out)
        if edge.any():
            pts = (cw[edge][:, None, :] + offs[None]).reshape(-1, 3)
            dsub, jsub = tree.query(pts, distance_upper_bound=rb, workers=-1)
            inside = dsub < a
            fin = np.isfinite(dsub)
            hsub = np.zeros(len(dsub))
            m = fin & ~inside
            hsub[m] = halo(dsub[m], jsub[m])
            inside = inside.reshape(-1, ns)
            f[edge] = inside.mean(1)
            nout = np.maximum((~inside).sum(1), 1)
            E[edge] = hsub.reshape(-1, ns).sum(1) / nout
        sel = (f > 0) | (E > 1e-4)
        gi = tuple(g[sel].T)
        fs = np.minimum(f[sel], 0.9999)
        log1mF[gi] += np.log1p(-fs).astype(np.float32)
        blood[gi] += (fs * (1.0 - v["c_in"])).astype(np.float32)
        fsum[gi] += fs.astype(np.float32)
        log1mE[gi] += np.log1p(-np.minimum(E[sel], 0.95)).astype(np.float32)
    F = 1.0 - np.exp(log1mF)
    Sb = np.where(fsum > 0, blood / np.maximum(fsum, 1e-6), 0.0)
    Ev = 1.0 - np.exp(log1mE)
    return (F * Sb + (1.0 - F) * tissue * (1.0 - Ev)).astype(np.float32), F


def render(preset: str, seed: int, ventricle_scale: float = 1.0, head_yaw_deg: float = 0.0,
           head_roll_deg: float = 0.0, dmv_diameter_scale: float = 1.0, extracerebral_csf_scale: float = 1.0) -> dict:
    """One case rendered in memory, every stage kept: ``case`` (:func:`build_case`), ``tissue``
    (vessel-free, WM = 1), ``labels``, ``veins`` (tissue with the veins, WM = 1), ``bias``, the
    point-spread sigmas ``psf_sigma_vox`` (voxels), the noise ``sigma`` (image units, each of the
    real and imaginary channels), ``obj`` (noise-free image: veins x bias x WM level, blurred) and
    ``mag`` (the magnitude image written as swi.nii.gz), with ``timings_s``."""
    t0 = time.time()
    case = build_case(preset, int(seed), ventricle_scale, head_yaw_deg, head_roll_deg, dmv_diameter_scale,
                      extracerebral_csf_scale)
    t_geom = time.time() - t0
    P = case["P"]
    tissue, labels, braw = render_tissue(case)
    t_tis = time.time() - t0 - t_geom
    img, F = render_vessels(case, tissue)
    t_ves = time.time() - t0 - t_geom - t_tis
    # bias field normalised over the head: mean 1, peak-to-peak amp
    rng = case["rng"]
    head = labels > 0
    bh = braw[head]
    amp = rng.uniform(0.10, 0.25)
    lo_, hi_ = np.percentile(bh, [0.5, 99.5])
    bias = (1.0 + amp * (braw - bh.mean()) / max(hi_ - lo_, 1e-6)).astype(np.float32)
    del braw
    vox = np.linalg.norm(case["affine"][:3, :3], axis=0)
    sig = [0.42, 0.42, 0.3 if vox[2] > 1.5 * min(vox[:2]) else 0.42]
    obj = ndimage.gaussian_filter(img * bias * np.float32(WM_LEVEL), sig, mode="nearest")
    sigma = WM_LEVEL / P["snr"]
    nr = rng.standard_normal(obj.shape, dtype=np.float32) * np.float32(sigma)
    ni_ = rng.standard_normal(obj.shape, dtype=np.float32) * np.float32(sigma)
    mag = np.sqrt((obj + nr) ** 2 + ni_ ** 2).astype(np.float32)
    del nr, ni_
    return dict(case=case, tissue=tissue, labels=labels, veins=img, bias=bias, psf_sigma_vox=sig,
                sigma=float(sigma), obj=obj, mag=mag, bias_amp=float(amp),
                timings_s=dict(total=time.time() - t0, geometry=t_geom, tissue=t_tis, vessels=t_ves))


def truth_vessels(case) -> list[dict]:
    """The truth of a built case's vessels as ``vessels.json`` lists them (RAS mm, centreline points
    every 0.2 mm)."""
    vlist = []
    for v in case["vessels"]:
        pts = v["curve"].sample(0.2)[0]
        vlist.append(dict(vessel_id=int(v["vessel_id"]), region=v["region"], side=v["side"],
                          diameter_mm=round(float(v["diameter_mm"]), 4),
                          length_mm=round(v["curve"].length, 4),
                          tortuosity=round(max(1.0, v["curve"].tortuosity), 5),
                          curvature_per_mm=round(v["curve"].curv_mean, 5),
                          centerline_ras_mm=np.round(pts, 4).tolist()))
    return vlist


def generate(out_dir, preset, seed, check=False, verbose=True, ventricle_scale=1.0, head_yaw_deg=0.0,
             head_roll_deg=0.0, dmv_diameter_scale=1.0, extracerebral_csf_scale=1.0):
    """Generate one phantom case into out_dir; returns a small info dict.  ``ventricle_scale``:
    the lateral ventricles' radii x this (1: the preset's); ``head_yaw_deg``, ``head_roll_deg``: the
    head turned further about S-I, then A-P (0: the preset's pose); ``dmv_diameter_scale``: every
    DMV's drawn diameter x this (1: the preset's; above 1: engorged veins);
    ``extracerebral_csf_scale``: the CSF between brain and skull x this (below 1: a swollen brain);
    each recorded in vessels.json when not the default."""
    os.makedirs(out_dir, exist_ok=True)
    r = render(preset, seed, ventricle_scale, head_yaw_deg, head_roll_deg, dmv_diameter_scale, extracerebral_csf_scale)
    case, mag, amp = r["case"], r["mag"], r["bias_amp"]
    t = r["timings_s"]
    t_geom, t_tis, t_ves = t["geometry"], t["tissue"], t["vessels"]
    t0 = time.time() - t["total"]
    nii = nib.Nifti1Image(mag, case["affine"])
    nii.header.set_xyzt_units("mm", "sec")
    nii.set_qform(case["affine"], code=1)
    nii.set_sform(case["affine"], code=1)
    nii.header["descrip"] = f"indep SWI phantom {preset} seed {seed}".encode()[:79]
    nib.save(nii, os.path.join(out_dir, "swi.nii.gz"))
    vlist = truth_vessels(case)
    record = dict(vessels=vlist, generator=GENERATOR, preset=preset, seed=int(seed))
    if ventricle_scale != 1.0:
        record["ventricle_scale"] = float(ventricle_scale)
    if head_yaw_deg or head_roll_deg:
        record["head_yaw_deg"], record["head_roll_deg"] = float(head_yaw_deg), float(head_roll_deg)
    if dmv_diameter_scale != 1.0:
        record["dmv_diameter_scale"] = float(dmv_diameter_scale)
    if extracerebral_csf_scale != 1.0:
        record["extracerebral_csf_scale"] = float(extracerebral_csf_scale)
    with open(os.path.join(out_dir, "vessels.json"), "w") as fh:
        json.dump(record, fh)
    info = dict(out_dir=out_dir, preset=preset, seed=int(seed), shape=case["shape"],
                n_vessels=len(vlist), seconds=round(time.time() - t0, 2),
                t_geometry=round(t_geom, 2), t_tissue=round(t_tis, 2), t_vessels=round(t_ves, 2),
                dmv_counts=getattr(case["builder"], "dmv_counts", {}), grid_angles=case["grid_angles"],
                scale=case["pose"].s, bias_amp=amp)
    if verbose:
        print(f"[generate] {preset} seed={seed} shape={case['shape']} vessels={len(vlist)} "
              f"time={info['seconds']} s (geometry {info['t_geometry']} s, tissue {info['t_tissue']} s, "
              f"vessels {info['t_vessels']} s)")
    if check:
        check_case(out_dir, verbose=verbose)
    return info


# ----------------------------------------------------------------------------------------
# self-check
# ----------------------------------------------------------------------------------------
def check_case(out_dir, verbose=True):
    """Load a generated case from disk and run consistency checks; returns a metrics dict."""
    nii = nib.load(os.path.join(out_dir, "swi.nii.gz"))
    data = np.asarray(nii.dataobj, dtype=np.float32)
    A = nii.affine
    with open(os.path.join(out_dir, "vessels.json")) as fh:
        meta = json.load(fh)
    preset, seed = meta["preset"], meta["seed"]
    P = PRESETS[preset]
    res = {}
    vox = np.sqrt((A[:3, :3] ** 2).sum(0))
    res["voxel_ok"] = bool(np.allclose(vox, P["voxel"], atol=1e-4))
    res["axcodes"] = "".join(nib.aff2axcodes(A))
    R = A[:3, :3] / vox
    res["grid_rotation_deg"] = float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))))
    res["qform_eq_sform"] = bool(np.allclose(nii.get_qform(), nii.get_sform(), atol=1e-4))
    # rebuild the (deterministic) anatomy for model-based checks
    case = build_case(preset, seed)
    pose, anat = case["pose"], case["anat"]
    res["affine_reproducible"] = bool(np.allclose(case["affine"], A, atol=1e-4))
    Ainv = np.linalg.inv(A)

    def sample(w):
        ijk = w @ Ainv[:3, :3].T + Ainv[:3, 3]
        return ndimage.map_coordinates(data, ijk.T, order=1, mode="nearest")

    V = meta["vessels"]
    keys = {"vessel_id", "region", "side", "diameter_mm", "length_mm", "tortuosity",
            "curvature_per_mm", "centerline_ras_mm"}
    res["keys_ok"] = all(set(v) == keys for v in V)
    res["max_spacing_mm"] = max(float(np.linalg.norm(np.diff(np.array(v["centerline_ras_mm"]), axis=0),
                                                     axis=1).max()) for v in V)
    counts = {}
    side_ok = True
    ratios = {}
    dmv_start = []
    dmv_end_pial = []
    mirrored = []
    ratios_model = {}
    # noise-free reference for WM: WM voxels from model labels on a random voxel subset
    rng = np.random.default_rng(12345)
    shape = np.array(data.shape)
    vi = rng.integers(0, shape, size=(300_000, 3))
    wv = vi @ A[:3, :3].T + A[:3, 3]
    lab = anat.evaluate(pose.to_template(wv), 0.0, want=("label",))["label"]
    allpts = np.vstack([np.array(v["centerline_ras_mm"]) for v in V])
    dvess, _ = cKDTree(allpts).query(wv)
    wm_sel = (lab == WM) & (dvess > 4.0)
    ivals = data[vi[wm_sel, 0], vi[wm_sel, 1], vi[wm_sel, 2]]
    wm_mean = float(np.mean(ivals))
    # noise from background air (Rayleigh) and from neighbour differences in WM
    air = (lab == AIR)
    aw = data[vi[air, 0], vi[air, 1], vi[air, 2]]
    sig_bg = float(np.mean(aw) / math.sqrt(math.pi / 2))
    vv = vi[wm_sel]
    vv = vv[(vv[:, 0] < shape[0] - 1)]
    nb = data[vv[:, 0] + 1, vv[:, 1], vv[:, 2]]
    # the PSF correlates neighbours only through the object, the noise is white
    lab2 = anat.evaluate(pose.to_template((vv + [1, 0, 0]) @ A[:3, :3].T + A[:3, 3]), 0.0, want=("label",))["label"]
    dd = (data[vv[:, 0], vv[:, 1], vv[:, 2]] - nb)[lab2 == WM]
    sig_diff = float(1.4826 * np.median(np.abs(dd - np.median(dd))) / math.sqrt(2))
    res["wm_mean"] = wm_mean
    res["snr_bg"] = wm_mean / sig_bg
    res["snr_diff"] = wm_mean / sig_diff
    res["snr_nominal"] = P["snr"]
    ring_r_extra = max(1.5, float(vox.max()))
    for v in V:
        key = (v["region"], v["side"])
        counts[key] = counts.get(key, 0) + 1
        C = np.array(v["centerline_ras_mm"])
        xt = pose.to_template(C)[:, 0]
        if v["side"] == "right":
            side_ok &= bool(np.mean(C[:, 0]) > 0 and np.mean(xt) > 0)
        elif v["side"] == "left":
            side_ok &= bool(np.mean(C[:, 0]) < 0 and np.mean(xt) < 0)
        # darkness: centreline vs ring of surrounding tissue
        a = 0.5 * v["diameter_mm"]
        Cs = C[::2]
        T = unit(np.gradient(Cs, axis=0)) if len(Cs) > 2 else unit(np.diff(C, axis=0)[:1].repeat(len(Cs), 0))
        e1 = unit(np.cross(T, np.array([0.3, 0.5, 0.81])))
        e2 = np.cross(T, e1)
        ang = np.linspace(0, 2 * np.pi, 8, endpoint=False)
        rr = a + ring_r_extra
        ring = (Cs[:, None, :] + rr * (np.cos(ang)[None, :, None] * e1[:, None, :]
                                        + np.sin(ang)[None, :, None] * e2[:, None, :])).reshape(-1, 3)
        ic = sample(Cs)
        ir = sample(ring)
        ratios.setdefault(v["region"], []).append(float(np.mean(ic) / max(np.median(ir), 1e-6)))
        # model background: the vein-free tissue signal expected at the centreline (WM-normalised)
        bg = anat.evaluate(pose.to_template(Cs), 0.0, want=("value",))["value"]
        ratios_model.setdefault(v["region"], []).append(float(np.mean(ic) / max(wm_mean * np.mean(bg), 1e-6)))
        if v["region"] == "dmv":  # negative control: same vein mirrored left<->right in the head frame
            Ct = pose.to_template(Cs)
            Ct[:, 0] *= -1.0
            Cm = pose.to_world(Ct)
            ringm = (Cm[:, None, :] + rr * (np.cos(ang)[None, :, None] * e1[:, None, :]
                                             + np.sin(ang)[None, :, None] * e2[:, None, :])).reshape(-1, 3)
            mirrored.append(float(np.mean(sample(Cm)) / max(np.median(sample(ringm)), 1e-6)))
        if v["region"] == "dmv":
            ev = anat.evaluate(pose.to_template(C[[0, -1]]), 0.0, want=("vent", "pial"))
            dmv_start.append(float(ev["vent"][0] * pose.s))  # centre-to-wall distance (mm)
            dmv_end_pial.append(float(ev["pial"][1] * pose.s - anat.t_gm * pose.s))
    res["side_ok"] = bool(side_ok)
    res["counts"] = {f"{r}/{s}": n for (r, s), n in sorted(counts.items())}
    res["dmv_start_to_ventricle_mm"] = (min(dmv_start), float(np.median(dmv_start)), max(dmv_start)) if dmv_start else None
    res["dmv_end_to_cortex_mm_min"] = min(dmv_end_pial) if dmv_end_pial else None
    res["dmv_mirrored_control_ratio_median"] = float(np.median(mirrored)) if mirrored else None
    res["dark_ratio"] = {r: dict(median=float(np.median(x)), max=float(np.max(x)),
                                 frac_below_0p9=float(np.mean(np.array(x) < 0.9)))
                         for r, x in ratios.items()}
    res["dark_ratio_model"] = {r: dict(median=float(np.median(x)), max=float(np.max(x)))
                               for r, x in ratios_model.items()}
    diam = {}
    for v in V:
        diam.setdefault(v["region"], []).append(v["diameter_mm"])
    res["diameter_range"] = {r: (min(x), max(x), float(np.mean(x))) for r, x in diam.items()}
    lens = {}
    for v in V:
        lens.setdefault(v["region"], []).append((v["length_mm"], v["tortuosity"], v["curvature_per_mm"]))
    res["length_tort_curv"] = {r: dict(length=(min(a[0] for a in x), max(a[0] for a in x)),
                                       tort=(min(a[1] for a in x), float(np.median([a[1] for a in x])),
                                             max(a[1] for a in x)),
                                       curv_median=float(np.median([a[2] for a in x])))
                               for r, x in lens.items()}
    if verbose:
        print(f"[check] {out_dir}: shape={data.shape} voxel={tuple(np.round(vox, 3))} ok={res['voxel_ok']} "
              f"axcodes={res['axcodes']} grid_rot={res['grid_rotation_deg']:.1f} deg "
              f"affine_reproducible={res['affine_reproducible']} keys_ok={res['keys_ok']} "
              f"max_spacing={res['max_spacing_mm']:.3f} mm")
        print(f"  counts: {res['counts']}")
        print(f"  sides consistent with RAS x: {res['side_ok']}")
        for r in res["diameter_range"]:
            d = res["diameter_range"][r]
            l = res["length_tort_curv"][r]
            q = res["dark_ratio"][r]
            qm = res["dark_ratio_model"][r]
            print(f"  {r:18s} n={len(diam[r]):3d} diam {d[0]:.2f}-{d[1]:.2f} (mean {d[2]:.2f}) mm  "
                  f"len {l['length'][0]:.1f}-{l['length'][1]:.1f} mm  tort min/med/max {l['tort'][0]:.3f}/"
                  f"{l['tort'][1]:.3f}/{l['tort'][2]:.3f}  curv med {l['curv_median']:.3f}/mm")
            print(f"  {'':18s} darkness: centre/ring ratio med {q['median']:.2f} max {q['max']:.2f} "
                  f"(<0.9: {100 * q['frac_below_0p9']:.0f}%); centre/vein-free-background ratio med "
                  f"{qm['median']:.2f} max {qm['max']:.2f}")
        if dmv_start:
            s = res["dmv_start_to_ventricle_mm"]
            print(f"  DMV start centre-to-ventricle-wall distance min/med/max = {s[0]:.2f}/{s[1]:.2f}/{s[2]:.2f} mm;"
                  f" min DMV end clearance to cortical ribbon = {res['dmv_end_to_cortex_mm_min']:.2f} mm")
        if mirrored:
            print(f"  L/R control: DMV centre/ring ratio median {res['dark_ratio']['dmv']['median']:.2f} at the true "
                  f"positions vs {res['dmv_mirrored_control_ratio_median']:.2f} at left-right mirrored positions")
        print(f"  WM mean {wm_mean:.1f}; SNR (background Rayleigh) {res['snr_bg']:.1f}, "
              f"SNR (WM neighbour differences) {res['snr_diff']:.1f}, nominal {P['snr']}")
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--preset", required=True, choices=sorted(PRESETS))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-check", action="store_true", help="skip the self-check after writing")
    ap.add_argument("--ventricle-scale", type=float, default=1.0,
                    help="lateral ventricle radii x this (below 1: slit ventricles)")
    ap.add_argument("--head-yaw", type=float, default=0.0, help="turn the head further about S-I (degrees)")
    ap.add_argument("--head-roll", type=float, default=0.0, help="turn the head further about A-P (degrees)")
    ap.add_argument("--dmv-diameter-scale", type=float, default=1.0,
                    help="every DMV's diameter x this (above 1: engorged deep medullary veins)")
    ap.add_argument("--extracerebral-csf-scale", type=float, default=1.0,
                    help="the CSF between brain and skull x this (below 1: a swollen brain)")
    args = ap.parse_args(argv)
    generate(args.out, args.preset, args.seed, check=not args.no_check, ventricle_scale=args.ventricle_scale,
             head_yaw_deg=args.head_yaw, head_roll_deg=args.head_roll, dmv_diameter_scale=args.dmv_diameter_scale,
             extracerebral_csf_scale=args.extracerebral_csf_scale)


if __name__ == "__main__":
    main()
