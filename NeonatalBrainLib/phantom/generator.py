"""Rendering of the phantom onto acquisition grids, and the file writers.

Physics (magnitude images, arbitrary units):

* tissue signal per tissue class (tables ``T1_SIGNAL`` / ``SWI_SIGNAL``), partial-volume
  averaged: voxels on a tissue boundary are supersampled (``preset.supersampling``
  sub-samples at most per voxel edge, one per ~0.5 mm of edge) and their
  signal is the mean over the sub-samples;
* veins on SWI: ``S = (1 - f) * S_tissue + f * S_vein`` with ``f`` the vessel volume
  fraction of the voxel (sub-sampled exactly against the analytic tubes);
* smooth multiplicative bias field (low-order polynomial in the exponent);
* Rician noise: ``|S + n1 + i n2|``, ``n1, n2 ~ N(0, sigma)``, sigma = WM signal / SNR;
* head pose: rotation (a few degrees, random per seed) and off-centre position;
  the acquisition grids are axial in the scanner frame (oblique for
  ``grid_obliquity_deg``), so the head is rotated with respect to the grid.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from .. import centerline, outputs
from ..anatomy import LABELS, LABEL_VALUES, write_label_table
from ..imageio import InputError, Volume, grid_summary, save_volume
from ..progress import as_progress
from .anatomy_model import SCALP, SKULL, BrainModel, build_model
from .presets import InjurySpec, Preset, get_preset, preset_changes
from .vessels import build_vessels

L = LABEL_VALUES
MODALITIES = ("t1", "swi")


def _signal_table(pairs: dict[str, float], skull: float, scalp: float) -> np.ndarray:
    table = np.zeros(256, np.float32)
    for name, value in pairs.items():
        for label, lname in LABELS.items():
            if lname == name or lname.rsplit("_", 1)[0] == name:
                table[label] = value
    table[SKULL] = skull
    table[SCALP] = scalp
    return table


#: Neonatal T1 (term): unmyelinated WM darker than cortex, deep GM intermediate, PLIC bright.
T1_BASE = {"cortical_gm": 0.56, "white_matter": 0.40, "lateral_ventricle": 0.13, "third_ventricle": 0.13,
           "extracerebral_csf": 0.12, "caudate": 0.52, "putamen": 0.53, "globus_pallidus": 0.55,
           "thalamus": 0.57, "plic": 0.72, "brainstem": 0.62, "cerebellum": 0.55}
#: Neonatal SWI magnitude: CSF bright, unmyelinated WM bright, GM a little darker.
SWI_BASE = {"cortical_gm": 0.62, "white_matter": 0.74, "lateral_ventricle": 1.0, "third_ventricle": 1.0,
            "extracerebral_csf": 0.97, "caudate": 0.60, "putamen": 0.58, "globus_pallidus": 0.54,
            "thalamus": 0.57, "plic": 0.60, "brainstem": 0.62, "cerebellum": 0.58}


@dataclass
class Phantom:
    """One generated neonate: volumes (``imageio.Volume``, RAS affines) and truth."""

    t1: Volume | None
    labels: Volume | None
    brain_mask: Volume | None
    swi: Volume | None
    swi_labels: Volume | None
    swi_brain_mask: Volume | None
    swi_ventricles: Volume | None
    vessel_labels: Volume | None
    vessels: list[dict] = field(default_factory=list)
    subject: dict = field(default_factory=dict)

    @property
    def summary(self) -> dict:
        return vessel_summary(self.vessels)


# ----------------------------------------------------------------------------- geometry
_AXIS = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}


def orientation_matrix(code: str) -> np.ndarray:
    """3x3 matrix whose columns are the RAS unit vectors of the voxel axes, e.g. 'LAS'."""
    m = np.zeros((3, 3))
    for col, letter in enumerate(code.upper()):
        axis, sgn = _AXIS[letter]
        m[axis, col] = sgn
    if abs(np.linalg.det(m)) != 1:
        raise InputError(f"orientation {code!r}: needs one of R/L, A/P, S/I each")
    return m


def make_grid(spacing_mm, orientation: str, fov_mm, centre_ras, rotation: np.ndarray) -> Volume:
    """An empty grid covering ``fov_mm`` (along R, A, S before rotation) centred on ``centre_ras``."""
    o = orientation_matrix(orientation)
    spacing = np.asarray(spacing_mm, float)                  # along i, j, k
    fov_ijk = np.abs(o.T) @ np.asarray(fov_mm, float)        # FOV (R, A, S) seen along i, j, k
    shape = tuple(int(np.ceil(f / s)) for f, s in zip(fov_ijk, spacing))
    m = rotation @ o @ np.diag(spacing)
    affine = np.eye(4)
    affine[:3, :3] = m
    affine[:3, 3] = np.asarray(centre_ras, float) - m @ ((np.array(shape) - 1) / 2.0)
    return Volume(np.zeros(shape, np.uint8), affine)


def _grid_points(grid: Volume, pose_inv: np.ndarray) -> np.ndarray:
    """Brain-frame coordinates (N x 3, C order over i, j, k) of the voxel centres."""
    ni, nj, nk = grid.shape
    m = pose_inv[:3, :3] @ grid.affine[:3, :3]
    t = pose_inv[:3, :3] @ grid.affine[:3, 3] + pose_inv[:3, 3]
    i = np.arange(ni, dtype=np.float64)
    j = np.arange(nj, dtype=np.float64)
    k = np.arange(nk, dtype=np.float64)
    pts = np.empty((ni, nj, nk, 3))
    for d in range(3):
        pts[..., d] = (m[d, 0] * i[:, None, None] + m[d, 1] * j[None, :, None]
                       + m[d, 2] * k[None, None, :] + t[d])
    return pts.reshape(-1, 3)


def _subsample_offsets(spacing, n_edge: int) -> np.ndarray:
    counts = [int(np.clip(round(s / 0.5), 1, n_edge)) for s in spacing]
    axes = [(np.arange(c) + 0.5) / c - 0.5 for c in counts]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


# ----------------------------------------------------------------------------- rendering
def render_tissue(model: BrainModel, grid: Volume, pose_inv: np.ndarray, table: np.ndarray):
    """(tissue code per voxel at the centre, partial-volume signal per voxel)."""
    pts = _grid_points(grid, pose_inv)
    codes = model.tissue(pts).reshape(grid.shape)
    signal = table[codes]
    n_edge = model.preset.supersampling
    if n_edge > 1:
        c = codes
        boundary = np.zeros(c.shape, bool)
        for ax in range(3):
            diff = np.diff(c.astype(np.int16), axis=ax) != 0
            sl_a = [slice(None)] * 3
            sl_b = [slice(None)] * 3
            sl_a[ax] = slice(0, -1)
            sl_b[ax] = slice(1, None)
            boundary[tuple(sl_a)] |= diff
            boundary[tuple(sl_b)] |= diff
        # partial volume matters inside the head: skip voxels of air, skull and scalp
        boundary &= (c > 0) & (c <= 100)
        idx = np.flatnonzero(boundary)
        offsets = _subsample_offsets(grid.spacing_mm, n_edge)
        step_b = (pose_inv[:3, :3] @ grid.affine[:3, :3])      # voxel index -> brain mm
        off_b = offsets @ step_b.T
        chunk = max(1, 4_000_000 // len(off_b))            # voxels per call (bounded memory)
        flat = signal.reshape(-1)
        for start in range(0, idx.size, chunk):
            sel = idx[start:start + chunk]
            sub = (pts[sel][:, None, :] + off_b[None, :, :]).reshape(-1, 3)
            flat[sel] = table[model.tissue(sub)].reshape(len(sel), len(off_b)).mean(1)
    return codes, signal


def render_vessels(vessels: list[dict], grid: Volume, pose_inv: np.ndarray, n_sub: float = 0.25):
    """(max vessel volume fraction per voxel, vessel id of that fraction) on ``grid``.

    The fraction of a voxel is the share of its sub-samples (spacing <= ``n_sub`` mm)
    lying within ``diameter_mm / 2`` of the vessel's exact centreline.
    """
    frac = np.zeros(grid.shape, np.float32)
    ids = np.zeros(grid.shape, np.uint16)
    to_b = pose_inv[:3, :3] @ grid.affine[:3, :3]
    t_b = pose_inv[:3, :3] @ grid.affine[:3, 3] + pose_inv[:3, 3]
    to_ijk = np.linalg.inv(to_b)
    counts = [max(1, int(np.ceil(s / n_sub))) for s in grid.spacing_mm]
    axes = [(np.arange(c) + 0.5) / c - 0.5 for c in counts]
    offsets = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3) @ to_b.T
    half_diag = 0.5 * float(np.linalg.norm(grid.spacing_mm))
    shape = np.array(grid.shape)
    for v in vessels:
        pts = centerline.resample_polyline(v["points_b"], 0.05)
        r = v["diameter_mm"] / 2.0
        ijk = (pts - t_b) @ to_ijk.T
        lo = np.maximum(np.floor(ijk.min(0) - (r + 1.0) / grid.spacing_mm) .astype(int), 0)
        hi = np.minimum(np.ceil(ijk.max(0) + (r + 1.0) / grid.spacing_mm).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        gi, gj, gk = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij")
        vox = np.column_stack([gi.ravel(), gj.ravel(), gk.ravel()])
        centres = vox @ to_b.T + t_b
        tree = cKDTree(pts)
        d, _ = tree.query(centres, distance_upper_bound=r + half_diag)
        near = np.isfinite(d)
        if not near.any():
            continue
        vox, centres = vox[near], centres[near]
        sub = (centres[:, None, :] + offsets[None, :, :]).reshape(-1, 3)
        ds, _ = tree.query(sub, distance_upper_bound=r)
        f = np.isfinite(ds).reshape(len(vox), -1).mean(1).astype(np.float32)
        ii, jj, kk = vox.T
        better = f > frac[ii, jj, kk]
        frac[ii[better], jj[better], kk[better]] = f[better]
        ids[ii[better], jj[better], kk[better]] = v["vessel_id"]
    return frac, ids


def bias_field(grid: Volume, rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """Smooth multiplicative field exp(sum of random 1st/2nd-order terms), max |log| ~ amplitude."""
    ni, nj, nk = grid.shape
    u = [np.linspace(-1, 1, n, dtype=np.float32) for n in (ni, nj, nk)]
    c = rng.uniform(-1, 1, 9).astype(np.float32)
    x, y, z = u[0][:, None, None], u[1][None, :, None], u[2][None, None, :]
    g = (c[0] * x + c[1] * y + c[2] * z + 0.6 * (c[3] * x * y + c[4] * y * z + c[5] * x * z)
         + 0.5 * (c[6] * x * x + c[7] * y * y + c[8] * z * z))
    g *= np.float32(amplitude / max(float(np.abs(g).max()), 1e-6))
    return np.exp(g, out=g)


def rician(signal: np.ndarray, sigma, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the complex signal plus complex Gaussian noise of std ``sigma`` per channel
    (a number, or an array of ``signal``'s shape: noise that varies across the image)."""
    sigma = np.asarray(sigma, np.float32)
    n1 = rng.standard_normal(signal.shape, dtype=np.float32)
    n1 *= sigma
    n1 += signal
    n2 = rng.standard_normal(signal.shape, dtype=np.float32)
    n2 *= sigma
    return np.hypot(n1, n2)


#: width (Gaussian sigma, mm) of the noise amplification of :func:`noise_gain_map`
NOISE_GAIN_WIDTH_MM = 35.0


def noise_gain_map(grid: Volume, centre_gain: float, width_mm: float = NOISE_GAIN_WIDTH_MM) -> np.ndarray:
    """Noise SD amplification over ``grid``, as parallel imaging's g-factor amplifies the noise
    most in the middle of the field of view, far from the receive coils:
    ``1 + (centre_gain - 1) exp(-r^2 / (2 width_mm^2))``, ``r`` the distance (mm) from the grid's
    centre (float32, the grid's shape)."""
    gauss = np.ones((1, 1, 1))
    for axis, (n, step) in enumerate(zip(grid.shape, grid.spacing_mm)):
        offset_mm = (np.arange(n) - (n - 1) / 2.0) * float(step)
        shape = [1, 1, 1]
        shape[axis] = n
        gauss = gauss * np.exp(-offset_mm ** 2 / (2.0 * width_mm ** 2)).reshape(shape)
    return (1.0 + (float(centre_gain) - 1.0) * gauss).astype(np.float32)


def zero_filled(volume: Volume, factor: float, axes=None) -> Volume:
    """``volume`` reconstructed on a grid ``factor`` times finer along ``axes`` (default: the
    two finest voxel axes), as a scanner's interpolation option does: k-space zero-filled,
    the magnitude of the inverse transform, intensities kept.  The resolution and the noise
    per voxel stay; neighbouring voxels now share their noise.  Voxel 0 keeps its centre; the
    affine's columns along ``axes`` shrink by ``n / round(n * factor)``."""
    arr = np.asarray(volume.array, np.float64)
    spacing = np.asarray(volume.spacing_mm, float)
    if axes is None:
        axes = tuple(int(a) for a in np.sort(np.argsort(spacing)[:2]))
    spectrum = np.fft.fftn(arr, axes=axes)
    gain = 1.0
    for ax in axes:
        n = arr.shape[ax]
        big = int(round(n * float(factor)))
        spectrum = np.fft.fftshift(spectrum, axes=ax)
        pad = [(0, 0)] * arr.ndim
        pad[ax] = ((big - n) // 2, big - n - (big - n) // 2)
        spectrum = np.fft.ifftshift(np.pad(spectrum, pad), axes=ax)
        gain *= big / n
    out = np.abs(np.fft.ifftn(spectrum, axes=axes)) * gain
    affine = np.array(volume.affine, float)
    for ax in axes:
        affine[:3, ax] *= arr.shape[ax] / out.shape[ax]
    return Volume(out.astype(np.float32), affine)


def _injury_table(table: np.ndarray, injury: InjurySpec | None, weaker: str | None) -> np.ndarray:
    """T1 signal table with the injury applied (per side)."""
    t = table.copy()
    if injury is None or injury.strength <= 0:
        return t
    for side in ("left", "right"):
        gain = injury.strength * ((1.0 - injury.asymmetry) if side == weaker else 1.0)
        if injury.kind == "bilirubin":
            t[L[f"globus_pallidus_{side}"]] += 0.22 * gain
        else:  # hie: basal ganglia / thalamus hyperintensity, loss of PLIC brightness
            t[L[f"putamen_{side}"]] += 0.16 * gain
            t[L[f"globus_pallidus_{side}"]] += 0.12 * gain
            t[L[f"thalamus_{side}"]] += 0.12 * gain
            t[L[f"plic_{side}"]] -= (t[L[f"plic_{side}"]] - 0.45) * gain
    return t


# ----------------------------------------------------------------------------- truth
def vessel_summary(vessels: list[dict]) -> dict:
    """The vessels engine's summary keys computed from the truth."""
    dmv = [v for v in vessels if v["region"] == "dmv"]

    def mean(vals):
        vals = [float(x) for x in vals]
        return float(np.mean(vals)) if vals else float("nan")

    out = {
        "dmv_count": len(dmv),
        "dmv_count_left": sum(v["side"] == "left" for v in dmv),
        "dmv_count_right": sum(v["side"] == "right" for v in dmv),
        "dmv_width_mm": mean(v["diameter_mm"] for v in dmv),
        "dmv_tortuosity": mean(v["tortuosity"] for v in dmv),
        "dmv_curvature_per_mm": mean(v["curvature_per_mm"] for v in dmv),
    }
    # DMVs with at least one voxel in vessel_labels (fraction >= 0.5); 0.5 mm veins in 2 mm
    # slices may darken the image without reaching that fraction anywhere.
    lab = [v for v in dmv if v.get("n_voxels", 0) > 0]
    out["dmv_count_labelled"] = len(lab)
    out["dmv_count_labelled_left"] = sum(v["side"] == "left" for v in lab)
    out["dmv_count_labelled_right"] = sum(v["side"] == "right" for v in lab)
    for region, key in (("thalamic", "thalamic_vein_width_mm"), ("anterior_caudate", "anterior_caudate_vein_width_mm")):
        for side in ("left", "right"):
            out[f"{key}_{side}"] = mean(v["diameter_mm"] for v in vessels
                                        if v["region"] == region and v["side"] == side)
    return out


# ----------------------------------------------------------------------------- main entry
def _pose(preset: Preset, rng: np.random.Generator):
    angles = rng.uniform(-1, 1, 3) * preset.head_rotation_deg
    rot = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    offset = rng.uniform(-1, 1, 3) * preset.head_offset_mm
    pose = np.eye(4)
    pose[:3, :3] = rot
    pose[:3, 3] = offset
    return pose, angles, offset


def generate_phantom(seed: int = 0, preset: "str | Preset" = "term_3t", injury: InjurySpec | None = None,
                     modalities=("t1", "swi"), progress=None) -> Phantom:
    """Generate one synthetic neonate (deterministic per ``seed`` and ``preset``)."""
    pr = get_preset(preset)
    prog = as_progress(progress)
    mods = tuple(modalities)
    bad = [m for m in mods if m not in MODALITIES]
    if bad or not mods:
        raise InputError(f"modalities {mods}: expected a non-empty subset of {MODALITIES}")
    if injury is not None and not isinstance(injury, InjurySpec):
        raise InputError(f"injury must be an InjurySpec or None, got {type(injury).__name__}")
    seed = int(seed)
    root = np.random.SeedSequence([seed, 20261121])
    rng_anat, rng_vessel, rng_pose, rng_t1, rng_swi, rng_misc = [np.random.default_rng(s) for s in root.spawn(6)]
    model = build_model(pr, rng_anat)
    pose, angles, offset = _pose(pr, rng_pose)
    pose_inv = np.linalg.inv(pose)
    obliq = Rotation.from_euler("xyz", rng_misc.uniform(-1, 1, 3) * pr.grid_obliquity_deg, degrees=True).as_matrix()
    fov_centre = rng_misc.uniform(-2.0, 2.0, 3)
    side_draw = rng_misc.random()   # drawn always: an injury must not change anything else
    weaker = None
    if injury is not None:
        weaker = injury.weaker_side or ("left" if side_draw < 0.5 else "right")
    subject = {
        "seed": seed, "preset": pr.name, "preset_description": pr.description,
        "gestational_age_weeks": pr.gestational_age_weeks,
        "injury": None if injury is None else {**injury.as_dict(), "weaker_side": weaker},
        "head_rotation_deg_xyz": [round(float(a), 4) for a in angles],
        "head_offset_mm": [round(float(o), 4) for o in offset],
        "brain_to_ras": np.round(pose, 8).tolist(),
        "cerebrum_size_mm": [round(float(2 * h), 3) for h in model.half_axes],
        "field_strength_t": pr.field_strength_t,
        "grids": {},
    }
    changes = preset_changes(pr)
    if changes:     # a variant of a named preset (presets.with_changes): what it changed
        subject["preset_changes"] = changes
    out = dict.fromkeys(("t1", "labels", "brain_mask", "swi", "swi_labels", "swi_brain_mask",
                         "swi_ventricles", "vessel_labels"))
    vessels: list[dict] = []
    prog.update(0.05, "anatomy")
    if "swi" in mods:
        vessels = build_vessels(model, rng_vessel)
    for i, v in enumerate(vessels, start=1):
        v["vessel_id"] = i
        ras = v["points_b"] @ pose[:3, :3].T + pose[:3, 3]
        v["centerline_ras_mm"] = ras
        v.update(centerline.describe(ras))
    if "t1" in mods:
        prog.update(0.15, "T1")
        grid = make_grid(pr.t1_spacing_mm, pr.t1_orientation, pr.t1_fov_mm, fov_centre, obliq)
        table = _signal_table(T1_BASE, skull=0.05, scalp=0.85)
        if not pr.plic_myelinated:
            table[[L["plic_left"], L["plic_right"]]] = 0.47
        wm = table[L["white_matter_left"]]
        table = (wm + (table - wm) * pr.t1_contrast).astype(np.float32)
        table[0] = 0.0
        table = _injury_table(table, injury, weaker)
        codes, signal = render_tissue(model, grid, pose_inv, table)
        signal *= bias_field(grid, rng_t1, pr.bias_amplitude)
        img = rician(signal, float(table[L["white_matter_left"]]) / pr.t1_snr, rng_t1) * pr.t1_scale
        labels = np.where(codes > 100, 0, codes).astype(np.uint8)
        out["t1"] = grid.with_array(img.astype(np.float32))
        out["labels"] = grid.with_array(labels)
        out["brain_mask"] = grid.with_array(((labels > 0) & (labels != L["extracerebral_csf"])).astype(np.uint8))
        subject["grids"]["t1"] = grid_summary(grid)
    if "swi" in mods:
        prog.update(0.5, "SWI")
        grid = make_grid(pr.swi_spacing_mm, pr.swi_orientation, pr.swi_fov_mm, fov_centre, obliq)
        table = _signal_table(SWI_BASE, skull=0.04, scalp=0.55)
        codes, signal = render_tissue(model, grid, pose_inv, table)
        prog.update(0.75, "SWI veins")
        frac, ids = render_vessels(vessels, grid, pose_inv)
        signal = signal * (1.0 - frac) + np.float32(pr.swi_vein_signal) * frac
        signal *= bias_field(grid, rng_swi, pr.bias_amplitude)
        sigma = float(table[L["white_matter_left"]]) / pr.swi_snr
        if pr.swi_noise_centre_gain != 1.0:
            sigma = sigma * noise_gain_map(grid, pr.swi_noise_centre_gain)
        img = rician(signal, sigma, rng_swi) * pr.swi_scale
        labels = np.where(codes > 100, 0, codes).astype(np.uint8)
        out["swi"] = grid.with_array(img.astype(np.float32))
        out["swi_labels"] = grid.with_array(labels)
        out["swi_brain_mask"] = grid.with_array(((labels > 0) & (labels != L["extracerebral_csf"])).astype(np.uint8))
        vent = np.isin(labels, [L["lateral_ventricle_left"], L["lateral_ventricle_right"], L["third_ventricle"]])
        out["swi_ventricles"] = grid.with_array(vent.astype(np.uint8))
        out["vessel_labels"] = grid.with_array(np.where(frac >= 0.5, ids, 0).astype(np.uint16))
        subject["grids"]["swi"] = grid_summary(grid)
        counts = np.bincount(out["vessel_labels"].array.ravel(), minlength=len(vessels) + 1)
        for v in vessels:
            v["n_voxels"] = int(counts[v["vessel_id"]])
    prog.update(1.0, "done")
    return Phantom(vessels=vessels, subject=subject, **out)


def vessels_json(phantom: Phantom) -> dict:
    rows = []
    for v in phantom.vessels:
        rows.append({
            "vessel_id": int(v["vessel_id"]), "region": v["region"], "side": v["side"],
            "diameter_mm": round(float(v["diameter_mm"]), 6), "length_mm": round(float(v["length_mm"]), 6),
            "tortuosity": round(float(v["tortuosity"]), 6),
            "curvature_per_mm": round(float(v["curvature_per_mm"]), 6),
            "n_voxels": int(v.get("n_voxels", 0)),
            "centerline_ras_mm": np.round(v["centerline_ras_mm"], 5).tolist(),
        })
    summary = {k: (None if isinstance(x, float) and np.isnan(x) else x) for k, x in phantom.summary.items()}
    return {"vessels": rows, "summary": summary,
            "definitions": {"vessel_labels": "vessel id where the voxel's vessel volume fraction >= 0.5",
                            "tortuosity": "arc length / chord length", "curvature_per_mm":
                            "NeonatalBrainLib.centerline.mean_curvature_per_mm of centerline_ras_mm",
                            "centerline_step_mm": 0.2}}


FILES_T1 = ("t1", "labels", "brain_mask")
FILES_SWI = ("swi", "swi_labels", "swi_brain_mask", "swi_ventricles", "vessel_labels")


def _write_into(folder: Path, phantom: Phantom) -> None:
    for name in FILES_T1 + FILES_SWI:
        vol = getattr(phantom, name)
        if vol is not None:
            save_volume(vol, folder / f"{name}.nii.gz")
    if phantom.swi is not None:
        (folder / "vessels.json").write_text(json.dumps(vessels_json(phantom), indent=1))
    write_label_table(folder / "labels.csv")
    (folder / "subject.json").write_text(json.dumps(phantom.subject, indent=1))


def save_phantom(phantom: Phantom, out_dir) -> Path:
    """Write an in-memory phantom (the phantom file contract) into the new/empty ``out_dir``."""
    with outputs.staged_output(out_dir) as stage:
        _write_into(stage, phantom)
    return Path(out_dir)


def write_phantom(out_dir, seed: int = 0, preset: "str | Preset" = "term_3t", injury: InjurySpec | None = None,
                  modalities=("t1", "swi"), progress=None) -> Path:
    """Generate a phantom and write the phantom file contract into the new/empty ``out_dir``."""
    prog = as_progress(progress)
    with outputs.staged_output(out_dir) as stage:
        ph = generate_phantom(seed, preset, injury, modalities, progress=prog.sub(0.0, 0.8))
        prog.update(0.85, "writing")
        _write_into(stage, ph)
    prog.update(1.0, "done")
    return Path(out_dir)
