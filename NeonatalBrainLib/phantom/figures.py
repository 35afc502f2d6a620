"""Pictures of the phantom (docs/phantom.md, demo): anatomy-aligned reformats in radiological view.

Slices are sampled in the brain frame (axial = perpendicular to the head's S-I axis,
whatever the head rotation and acquisition grid) by trilinear interpolation of the
volume through its affine; images are shown in radiological convention (patient's
right on the left of the picture).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.ndimage import map_coordinates

from ..imageio import Volume


def reformat(volume: Volume, brain_to_ras: np.ndarray, centre_b, u_b, v_b, extent_mm, step_mm=0.25,
             order: int = 1) -> np.ndarray:
    """2D image [row, col] of ``volume`` on the brain-frame plane ``centre + a*u + b*v``.

    ``extent_mm`` = (half width along u, half height along v); rows run along -v
    (top of the picture = +v), columns along +u.
    """
    hu, hv = extent_mm
    a = np.arange(-hu, hu + 1e-9, step_mm)
    b = np.arange(hv, -hv - 1e-9, -step_mm)
    bb, aa = np.meshgrid(b, a, indexing="ij")
    pts_b = (np.asarray(centre_b, float)[None, None] + aa[..., None] * np.asarray(u_b, float)
             + bb[..., None] * np.asarray(v_b, float))
    ras = pts_b.reshape(-1, 3) @ brain_to_ras[:3, :3].T + brain_to_ras[:3, 3]
    ijk = volume.ras_to_ijk(ras)
    vals = map_coordinates(volume.array.astype(np.float32), ijk.T, order=order, mode="constant", cval=0.0)
    return vals.reshape(aa.shape)


def axial(volume, pose, z_mm, extent=(60, 72), step=0.25, order=1):
    """Axial reformat at brain-frame height ``z_mm``; radiological (R on the left)."""
    return reformat(volume, pose, (0, 0, z_mm), (-1, 0, 0), (0, 1, 0), extent, step, order)


def coronal(volume, pose, y_mm, extent=(60, 50), step=0.25, order=1):
    return reformat(volume, pose, (0, y_mm, 0), (-1, 0, 0), (0, 0, 1), extent, step, order)


def min_ip(volume, pose, z_from, z_to, extent=(60, 72), step=0.25, dz=0.5):
    """Minimum-intensity projection over axial reformats from ``z_from`` to ``z_to`` mm."""
    out = None
    for z in np.arange(z_from, z_to + 1e-9, dz):
        img = axial(volume, pose, z, extent, step)
        out = img if out is None else np.minimum(out, img)
    return out


def _window(img, lo_pct=1.0, hi_pct=99.5, mask=None):
    """Scale to 0..1 between percentiles of the head (values above 15 % of the maximum)."""
    vals = img[mask] if mask is not None else img[img > 0.15 * float(img.max())]
    lo, hi = np.percentile(vals, [lo_pct, hi_pct])
    return np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)


def _show(ax, img, title, lo=1.0, hi=99.5):
    ax.imshow(_window(img, lo, hi), cmap="gray", interpolation="bilinear")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.02, 0.5, "R", color="yellow", transform=ax.transAxes, fontsize=9, va="center")
    ax.text(0.96, 0.5, "L", color="yellow", transform=ax.transAxes, fontsize=9, va="center")


def make_figures(out_dir, seed: int = 0, which=("swi", "t1", "injury", "presets")) -> list[Path]:
    """Write the four documentation pictures ``phantom_*.png`` into ``out_dir``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import generate_phantom

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    ph = generate_phantom(seed, "term_3t")
    pose = np.array(ph.subject["brain_to_ras"])

    # 1. SWI minIP through the ventricle bodies + single slice + vessel truth
    if "swi" in which:
        _fig_swi(plt, ph, pose, seed, out, paths)
    if "t1" in which:
        _fig_t1(plt, ph, pose, out, paths)
    if "injury" in which:
        _fig_injury(plt, ph, pose, seed, out, paths)
    if "presets" in which:
        _fig_presets(plt, ph, seed, out, paths)
    return paths


def _fig_swi(plt, ph, pose, seed, out, paths):
    fig, axs = plt.subplots(1, 3, figsize=(13.5, 5.6))
    z0 = 12.0
    _show(axs[0], min_ip(ph.swi, pose, z0, z0 + 12.0), "SWI minIP, 12 mm slab over the ventricle bodies", 0.5, 99.5)
    _show(axs[1], axial(ph.swi, pose, z0 + 4.0), f"SWI single slice (2 mm), z = {z0 + 4:.0f} mm")
    truth = np.zeros_like(axial(ph.vessel_labels, pose, z0, order=0))
    for z in np.arange(z0, z0 + 12.01, 0.5):
        truth = np.maximum(truth, axial(ph.vessel_labels, pose, z, order=0) > 0)
    base = _window(min_ip(ph.swi, pose, z0, z0 + 12.0), 0.5, 99.5)
    rgb = np.stack([base] * 3, -1)
    rgb[truth > 0] = (0.0, 0.75, 1.0)
    axs[2].imshow(rgb)
    axs[2].set_title("vessel truth (fraction >= 0.5) over the minIP", fontsize=10)
    axs[2].set_xticks([])
    axs[2].set_yticks([])
    fig.suptitle(f"Phantom term_3t seed {seed}: SWI 0.5 x 0.5 x 2 mm, "
                 f"{ph.summary['dmv_count']} deep medullary veins", fontsize=11)
    fig.tight_layout()
    paths.append(out / "phantom_swi_minip.png")
    fig.savefig(paths[-1], dpi=80)
    plt.close(fig)



def _fig_t1(plt, ph, pose, out, paths):
    fig, axs = plt.subplots(1, 3, figsize=(13.5, 5.0))
    _show(axs[0], axial(ph.t1, pose, 1.0), "T1 axial through the basal ganglia")
    _show(axs[1], axial(ph.t1, pose, 9.0), "T1 axial, level of the caudate bodies")
    _show(axs[2], coronal(ph.t1, pose, -6.0), "T1 coronal through the thalami")
    fig.suptitle("Phantom term_3t: T1 0.9 mm (PLIC myelinated, unmyelinated WM darker than cortex)", fontsize=11)
    fig.tight_layout()
    paths.append(out / "phantom_t1_axial.png")
    fig.savefig(paths[-1], dpi=80)
    plt.close(fig)



def _fig_injury(plt, ph, pose, seed, out, paths):
    from . import InjurySpec, generate_phantom

    fig, axs = plt.subplots(1, 4, figsize=(17, 4.6))
    cases = [("control", None), ("bilirubin, strength 1", InjurySpec("bilirubin", 1.0)),
             ("bilirubin 0.5, asymmetry 0.6 (left weaker)", InjurySpec("bilirubin", 0.5, 0.6, "left")),
             ("HIE (BGT + PLIC loss), strength 1", InjurySpec("hie", 1.0))]
    ref = None
    for ax, (title, inj) in zip(axs, cases):
        p = ph if inj is None else generate_phantom(seed, "term_3t", inj, ("t1",))
        img = axial(p.t1, pose, 1.0, extent=(40, 40))
        if ref is None:  # window of the control's whole slice (head incl. scalp fat)
            full = axial(p.t1, pose, 1.0)
            ref = np.percentile(full[full > 0.15 * full.max()], [0.5, 99.8])
        ax.imshow(np.clip((img - ref[0]) / (ref[1] - ref[0]), 0, 1), cmap="gray")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.text(0.02, 0.5, "R", color="yellow", transform=ax.transAxes, fontsize=9)
        ax.text(0.95, 0.5, "L", color="yellow", transform=ax.transAxes, fontsize=9)
    fig.suptitle("T1 injury options (same window)", fontsize=11)
    fig.tight_layout()
    paths.append(out / "phantom_injury.png")
    fig.savefig(paths[-1], dpi=80)
    plt.close(fig)



def _fig_presets(plt, ph, seed, out, paths):
    from . import PRESETS, generate_phantom

    names = list(PRESETS)
    fig, axs = plt.subplots(2, len(names), figsize=(3.6 * len(names), 7.6))
    for col, name in enumerate(names):
        p = ph if name == "term_3t" else generate_phantom(seed, name)
        pz = np.array(p.subject["brain_to_ras"])
        s = PRESETS[name].brain_scale
        _show(axs[0, col], min_ip(p.swi, pz, 12.0 * s, 24.0 * s), f"{name}: SWI minIP", 0.5, 99.5)
        _show(axs[1, col], axial(p.t1, pz, 1.0 * s), f"{name}: T1 axial")
    fig.suptitle("Presets (same seed; anatomy-aligned reformats of each acquisition)", fontsize=11)
    fig.tight_layout()
    paths.append(out / "phantom_presets.png")
    fig.savefig(paths[-1], dpi=70)
    plt.close(fig)


if __name__ == "__main__":  # pragma: no cover
    import sys

    for path in make_figures(sys.argv[1] if len(sys.argv) > 1 else "docs/images"):
        print(path)
