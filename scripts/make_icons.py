"""Draw the extension and module icons (128 x 128 RGBA PNG) with matplotlib.

    python scripts/make_icons.py [--out-dir REPO_ROOT]

Writes ``NeonatalBrain.png`` (axial neonatal brain: smooth gyri, lateral
ventricles, deep medullary veins fanning from them), the NeonatalVessels icon
(SWI-like slab with dark veins traced in cyan) and the NeonatalClassify icon
(coronal deep grey matter with a Grad-CAM-like glow over the globus pallidus).
Colours come from :mod:`NeonatalBrainLib.anatomy`.  Deterministic: same bytes
on every run with the same matplotlib.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Ellipse, PathPatch  # noqa: E402
from matplotlib.path import Path as MplPath  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from NeonatalBrainLib import anatomy  # noqa: E402

SIZE_PX = 128
DPI = 100


def _canvas():
    fig = plt.figure(figsize=(SIZE_PX / DPI, SIZE_PX / DPI), dpi=DPI)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(-1, 1)
    ax.set_ylim(-1, 1)
    ax.set_aspect("equal")
    ax.axis("off")
    fig.patch.set_alpha(0.0)
    return fig, ax


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, transparent=True, metadata={"Software": None})
    plt.close(fig)
    return path


def _brain_outline(n=400, wobble=0.025, lobes=14):
    """Closed axial brain outline: an egg shape (frontal narrower) with shallow neonatal gyri."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = 1 + wobble * np.sin(lobes * t) + 0.5 * wobble * np.sin(2 * lobes * t + 1.0)
    x = 0.74 * r * np.cos(t) * (1 - 0.08 * np.sin(t))   # narrower anteriorly (top)
    y = 0.90 * r * np.sin(t)
    return np.c_[x, y]


def _filled_gradient(ax, outline, inner, outer, clip_patch, n=200):
    """Radial grey-white gradient clipped to the outline (cortex darker than the WM core)."""
    yy, xx = np.mgrid[-1:1:n * 1j, -1:1:n * 1j]
    rr = np.clip(np.hypot(xx / 0.74, yy / 0.9), 0, 1)
    img = np.empty((n, n, 4))
    for c in range(3):
        img[..., c] = inner[c] + (outer[c] - inner[c]) * rr ** 2.2
    img[..., 3] = 1.0
    im = ax.imshow(img, extent=(-1, 1, -1, 1), origin="lower", interpolation="bilinear", zorder=1)
    im.set_clip_path(clip_patch)


def _vein(ax, start, angle, length, bend, color, width, zorder=5):
    s = np.linspace(0, 1, 30)
    direction = np.array([np.cos(angle), np.sin(angle)])
    normal = np.array([-direction[1], direction[0]])
    pts = start + np.outer(s * length, direction) + np.outer(bend * np.sin(np.pi * s) * length, normal)
    ax.plot(pts[:, 0], pts[:, 1], color=color, lw=width, solid_capstyle="round", zorder=zorder)


def _ventricles(ax, color, edge):
    for side in (-1, 1):
        verts = np.array([[0.05, 0.42], [0.20, 0.38], [0.22, 0.05], [0.26, -0.35], [0.14, -0.45],
                          [0.10, -0.10], [0.05, 0.2], [0.05, 0.42]]) * [side, 1]
        path = MplPath(verts, [MplPath.MOVETO] + [MplPath.CURVE4] * 6 + [MplPath.CLOSEPOLY])
        ax.add_patch(PathPatch(path, facecolor=color, edgecolor=edge, lw=0.8, zorder=4))


def draw_extension_icon(path: Path) -> Path:
    fig, ax = _canvas()
    outline = _brain_outline()
    patch = plt.Polygon(outline, closed=True, facecolor="none", edgecolor=(0.42, 0.28, 0.25), lw=2.2, zorder=6)
    ax.add_patch(patch)
    _filled_gradient(ax, outline, inner=(0.93, 0.90, 0.88), outer=anatomy.STRUCTURE_COLORS["cortical_gm"], clip_patch=patch)
    ax.plot([0, 0], [-0.88, 0.86], color=(0.45, 0.3, 0.28), lw=1.4, zorder=6)  # interhemispheric fissure
    _ventricles(ax, color=anatomy.STRUCTURE_COLORS["lateral_ventricle"], edge=(0.15, 0.2, 0.5))
    vein = anatomy.VESSEL_REGION_COLORS["dmv"]
    for side in (-1, 1):
        for k, y0 in enumerate(np.linspace(0.30, -0.32, 6)):
            start = np.array([side * (0.21 + 0.03 * (y0 < 0)), y0])
            angle = np.arctan2(1.5 * y0, side * 1.0)  # radial fan from the ventricle wall
            length = 0.34 + 0.06 * (k % 2)
            _vein(ax, start, angle, length, 0.10 * side, (0.05, 0.1, 0.35), 2.8)
            _vein(ax, start, angle, length, 0.10 * side, vein, 1.4, zorder=6)
    return _save(fig, path)


def draw_vessels_icon(path: Path) -> Path:
    fig, ax = _canvas()
    rng = np.random.default_rng(7)
    disk = Ellipse((0, 0), 1.9, 1.9, facecolor="none", edgecolor=(0.1, 0.25, 0.45), lw=3, zorder=6)
    ax.add_patch(disk)
    n = 160
    yy, xx = np.mgrid[-1:1:n * 1j, -1:1:n * 1j]
    swi = 0.72 + 0.08 * np.cos(3 * xx) * np.sin(2 * yy) + 0.05 * rng.standard_normal((n, n))
    rgba = np.dstack([np.clip(swi, 0, 1)] * 3 + [np.ones((n, n))])
    im = ax.imshow(rgba, extent=(-1, 1, -1, 1), origin="lower", interpolation="bilinear", zorder=1)
    im.set_clip_path(disk)
    ax.add_patch(Ellipse((-0.55, -0.05), 0.5, 1.1, facecolor=(0.97, 0.97, 1.0), edgecolor=(0.5, 0.5, 0.6),
                         lw=1, zorder=3))  # ventricle (bright CSF on SWI)
    for k, a in enumerate(np.linspace(-1.0, 1.0, 5)):
        start = np.array([-0.33, 0.42 * a])
        length = 0.95 - 0.2 * abs(a)
        _vein(ax, start, a * 0.75, length, 0.10, (0.08, 0.08, 0.1), 4.2, zorder=4)
        _vein(ax, start, a * 0.75, length, 0.10, anatomy.VESSEL_REGION_COLORS["dmv"], 1.6, zorder=5)
    ax.plot([0.15, 0.75], [-0.78, -0.78], color=(1.0, 0.55, 0.0), lw=3, solid_capstyle="butt", zorder=7)
    for x in (0.15, 0.75):
        ax.plot([x, x], [-0.86, -0.70], color=(1.0, 0.55, 0.0), lw=2, zorder=7)
    return _save(fig, path)


def draw_classify_icon(path: Path) -> Path:
    fig, ax = _canvas()
    outline = _brain_outline(lobes=12)
    outline[:, 1] *= 0.92
    patch = plt.Polygon(outline, closed=True, facecolor="none", edgecolor=(0.35, 0.25, 0.25), lw=2.2, zorder=6)
    ax.add_patch(patch)
    _filled_gradient(ax, outline, inner=(0.55, 0.55, 0.58), outer=(0.78, 0.74, 0.72), clip_patch=patch)
    c = anatomy.STRUCTURE_COLORS
    for side in (-1, 1):
        ax.add_patch(Ellipse((side * 0.34, 0.12), 0.22, 0.48, color=c["putamen"], zorder=3))
        ax.add_patch(Ellipse((side * 0.20, 0.10), 0.12, 0.32, color=c["globus_pallidus"], zorder=3))
        ax.add_patch(Ellipse((side * 0.15, -0.30), 0.24, 0.30, color=c["thalamus"], zorder=3))
        ax.add_patch(Ellipse((side * 0.14, 0.45), 0.14, 0.22, color=c["caudate"], zorder=3))
    n = 160
    yy, xx = np.mgrid[-1:1:n * 1j, -1:1:n * 1j]
    heat = np.exp(-(((np.abs(xx) - 0.22) / 0.16) ** 2 + ((yy - 0.1) / 0.22) ** 2))
    cmap = plt.get_cmap("inferno")
    rgba = cmap(heat)
    rgba[..., 3] = 0.85 * heat
    im = ax.imshow(rgba, extent=(-1, 1, -1, 1), origin="lower", interpolation="bilinear", zorder=4)
    im.set_clip_path(patch)
    ax.add_patch(plt.Circle((0.66, -0.68), 0.24, facecolor=(0.85, 0.15, 0.15), edgecolor="white", lw=2, zorder=7))
    ax.plot([0.66, 0.66], [-0.78, -0.56], color="white", lw=3, zorder=8, solid_capstyle="round")
    ax.plot([0.66], [-0.85], "o", color="white", ms=2.5, zorder=8)
    return _save(fig, path)


def make_icons(root: Path = REPO) -> list[Path]:
    root = Path(root)
    return [
        draw_extension_icon(root / "NeonatalBrain.png"),
        draw_vessels_icon(root / "NeonatalVessels" / "Resources" / "Icons" / "NeonatalVessels.png"),
        draw_classify_icon(root / "NeonatalClassify" / "Resources" / "Icons" / "NeonatalClassify.png"),
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=REPO, help="repository root to write into")
    args = parser.parse_args(argv)
    for p in make_icons(args.out_dir):
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
