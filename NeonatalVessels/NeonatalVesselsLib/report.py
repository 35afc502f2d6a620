"""Output folder of a vessel analysis (the output contract of docs/vessels.md).

Files: ``summary.json``, ``vessels.csv``, ``centerlines.csv``, ``vessel_labels.nii.gz``
(the four required), ``vessels.seg.nrrd`` (one segment per region and side),
``centerlines.mrk.json``, ``minip.nii.gz``, ``report.html`` + ``overlay_*.png``.
Everything is written into a staging folder and moved into ``out_dir`` only when
all files are complete (:func:`NeonatalBrainLib.outputs.staged_output`).
"""
from __future__ import annotations

import html
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from NeonatalBrainLib import anatomy
from NeonatalBrainLib.imageio import canonical_axes, radiological_axial_view, save_volume, sha256_file
from NeonatalBrainLib.outputs import staged_output

from .definitions import SUMMARY_KEY_DEFINITIONS, VESSEL_COLUMN_DEFINITIONS

CENTERLINE_COLUMNS = ("vessel_id", "x", "y", "z")


def _json_ready(x):
    if isinstance(x, dict):
        return {str(k): _json_ready(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_ready(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.ndarray):
        return _json_ready(x.tolist())
    return x


def centerlines_frame(centerlines: dict[int, np.ndarray]) -> pd.DataFrame:
    """Long table vessel_id, x, y, z (RAS mm) in the order of the points along each vessel."""
    if not centerlines:
        return pd.DataFrame(columns=list(CENTERLINE_COLUMNS))
    ids = sorted(centerlines)
    lines = [np.asarray(centerlines[vid], float).reshape(-1, 3) for vid in ids]
    xyz = np.concatenate(lines)
    return pd.DataFrame({"vessel_id": np.repeat(np.asarray(ids, np.int64), [len(p) for p in lines]),
                         "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]})[list(CENTERLINE_COLUMNS)]


def overlay_slab_centres(dmv_voxels_per_slice: np.ndarray, brain_slices: np.ndarray, slab_vox: int,
                         n_slices: int, min_share: float = 0.05) -> np.ndarray:
    """Centre slices (increasing) of up to ``n_slices`` minIP slabs to show, a slab being the
    ``2 * (slab_vox // 2) + 1`` slices around its centre (as :func:`overlay_slabs` takes it):
    greedily the slab holding the most DMV voxels (``dmv_voxels_per_slice[k]``: the count in
    slice ``k``; ties: the most in the centre slice), then the best not overlapping those taken,
    as long as it holds at least ``min_share`` of the first one's DMV voxels (a slab grazing
    the DMVs' end shows nothing to read).  Without DMVs, evenly from 35 % to 80 % of the brain's
    extent (``brain_slices``: the slices holding brain)."""
    counts = np.asarray(dmv_voxels_per_slice, float)
    half = max(1, slab_vox) // 2
    width = 2 * half + 1
    csum = np.concatenate([[0.0], np.cumsum(counts)])
    centre = np.arange(len(counts))
    in_slab = csum[np.minimum(centre + half + 1, len(counts))] - csum[np.maximum(centre - half, 0)]   # slab sums
    taken: list[int] = []
    for k in np.lexsort((-counts, -in_slab)):
        if in_slab[k] <= 0 or len(taken) == n_slices or (taken and in_slab[k] < min_share * in_slab[taken[0]]):
            break
        if all(abs(int(k) - t) >= width for t in taken):
            taken.append(int(k))
    if taken:
        return np.array(sorted(taken))
    present = np.asarray(brain_slices) if len(brain_slices) else np.arange(len(counts))
    return np.linspace(present[0] + 0.35 * len(present), present[0] + 0.8 * len(present), n_slices).astype(int)


@dataclass
class OverlaySlab:
    """One picture of the report: an axial minIP slab in radiological convention."""

    z_mm: float                 #: RAS z of the slab's centre slice (mm)
    thickness_mm: float
    minip: np.ndarray           #: [row, column]: rows anterior -> posterior, columns patient's right -> left
    regions: np.ndarray         #: region+side value (``region_table``) of the veins in the slab, same layout
    spacing_mm: np.ndarray      #: (row, column) pixel size
    dmv_voxels: int             #: DMV voxels in the slab


def overlay_slabs(analysis, n_slices: int = 4) -> list[OverlaySlab]:
    """The report's pictures as arrays: axial minIP slabs (:func:`.imageio.radiological_axial_view`:
    anterior up, the patient's right on the left) with the veins of each slab by region; the slabs
    holding the most DMV voxels (:func:`overlay_slab_centres`)."""
    affine = analysis.minip.affine
    minip, spacing = radiological_axial_view(analysis.minip.array, affine)   # views: no volume copies
    reg, _ = radiological_axial_view(analysis.region_labels.array, affine)
    brain, _ = radiological_axial_view(np.asarray(analysis.brain_mask.array) > 0, affine)
    slab_mm = float(analysis.provenance.get("parameters", {}).get("minip_slab_mm", 8.0))
    slab_vox = max(1, int(round(slab_mm / float(spacing[0]))))
    dmv_values = [value for value, name, _rgb in analysis.region_table if name.startswith("dmv_")]
    dmv_per_slice = _voxels_per_axial_slice(analysis.region_labels.array, affine, dmv_values)
    centres = overlay_slab_centres(dmv_per_slice, np.flatnonzero(brain.any(axis=(1, 2))), slab_vox, n_slices)
    slabs = []
    for c in centres:
        lo, hi = max(0, c - slab_vox // 2), min(minip.shape[0], c + slab_vox // 2 + 1)
        slabs.append(OverlaySlab(z_mm=_slice_height_mm(affine, minip.shape, c),
                                 thickness_mm=slab_vox * float(spacing[0]), minip=np.array(minip[c], float),
                                 regions=np.asarray(reg[lo:hi]).max(axis=0), spacing_mm=spacing[1:].copy(),
                                 dmv_voxels=int(dmv_per_slice[lo:hi].sum())))
    return slabs


#: width (pixels) of the report's pictures; the height follows the slab's extent in mm
OVERLAY_WIDTH_PX = 480


def rgb_255(rgb) -> tuple[int, int, int]:
    """A colour given as fractions 0-1 in 8-bit channels (rounded), as the pictures and the legend show it."""
    return tuple(int(c) for c in np.rint(np.asarray(rgb, float) * 255))


def overlay_rgb(slab: OverlaySlab, region_table) -> np.ndarray:
    """uint8 RGB picture of a slab (``[row, column, channel]``, the slab's layout): the minIP
    in grey, windowed linearly from the 1st to the 99th percentile of its non-zero pixels, the
    veins in the colours of their region and side (``region_table``: (value, name, rgb 0-1))."""
    lut = np.zeros((256, 3), np.uint8)
    for value, _name, rgb in region_table:
        lut[value] = rgb_255(rgb)
    img = np.asarray(slab.minip, float)
    inside = img[img > 0]
    lo, hi = np.percentile(inside, [1, 99]) if inside.size else (0.0, 1.0)
    grey = np.rint(np.clip((img - lo) / max(hi - lo, 1e-12), 0.0, 1.0) * 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    regions = np.asarray(slab.regions).astype(np.uint8)
    veins = regions > 0
    rgb[veins] = lut[regions[veins]]
    return rgb


def overlay_caption(slab: OverlaySlab) -> str:
    return (f"minIP slab {slab.thickness_mm:.0f} mm at z = {slab.z_mm:.0f} mm (RAS), "
            f"{slab.dmv_voxels} DMV voxels")


def _overlay_pngs(analysis, folder: Path, n_slices: int = 4) -> list[tuple[str, str]]:
    """:func:`overlay_slabs` written as PNGs (:func:`overlay_rgb`, resized to square millimetres,
    R / L / A / P marked): ``[(file name, caption)]``.  Drawn with Pillow alone: matplotlib's
    import and figures took about 1 s of the command on the benchmark volume."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=16)      # Pillow's own font (FreeType); nothing is downloaded
    except (TypeError, ValueError, OSError, ImportError):
        font = ImageFont.load_default()             # its bitmap font

    out = []
    for n, slab in enumerate(overlay_slabs(analysis, n_slices)):
        rgb = overlay_rgb(slab, analysis.region_table)
        height_mm = rgb.shape[0] * float(slab.spacing_mm[0])
        width_mm = rgb.shape[1] * float(slab.spacing_mm[1])
        w = OVERLAY_WIDTH_PX
        h = max(1, int(round(w * height_mm / max(width_mm, 1e-9))))
        # enlarged by nearest neighbour: each picture pixel shows the slab pixel under its centre
        rows = ((np.arange(h) + 0.5) * rgb.shape[0] / h).astype(int)
        cols = ((np.arange(w) + 0.5) * rgb.shape[1] / w).astype(int)
        picture = Image.fromarray(np.ascontiguousarray(rgb[rows][:, cols]), "RGB")
        draw = ImageDraw.Draw(picture)
        # each letter placed by its box (x, y: 0 left / top, 0.5 middle, 1 right / bottom of the picture)
        for fx, fy, text in ((0.0, 0.5, "R"), (1.0, 0.5, "L"), (0.5, 0.0, "A"), (0.5, 1.0, "P")):
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            x = 4 + fx * (w - 8 - (right - left)) - left
            y = 4 + fy * (h - 8 - (bottom - top)) - top
            draw.text((x, y), text, fill=(255, 255, 0), font=font)
        name = f"overlay_{n + 1}.png"
        picture.save(folder / name)
        out.append((name, overlay_caption(slab)))
    return out


def _voxels_per_axial_slice(labels: np.ndarray, affine: np.ndarray, values) -> np.ndarray:
    """Voxels of ``labels`` (stored order) holding one of ``values``, per slice of
    :func:`.imageio.radiological_axial_view` (inferior to superior).  Counted on the labelled
    voxels of the stored array: the view is strided, and a whole-volume pass over it took
    0.15 s on the benchmark volume against 0.03 s."""
    stored = np.ascontiguousarray(labels)
    perm, flip = canonical_axes(affine)
    flat = stored.reshape(-1)
    at = np.flatnonzero(flat)
    slice_of = np.unravel_index(at[np.isin(flat[at], values)], stored.shape)[perm[2]]
    counts = np.bincount(slice_of, minlength=stored.shape[perm[2]])
    return counts[::-1] if flip[2] else counts


def _slice_height_mm(affine: np.ndarray, view_shape, k: int) -> float:
    """RAS z (mm) of the centre of slice ``k`` of :func:`.imageio.radiological_axial_view`
    (``view_shape``: that view's shape)."""
    perm, flip = canonical_axes(affine)
    ijk = np.zeros(3)
    ijk[perm[2]] = (view_shape[0] - 1 - k) if flip[2] else k
    for r in (0, 1):       # the middle of the picture (view axes 2 and 1 are R and A)
        ijk[perm[r]] = (view_shape[2 - r] - 1) / 2.0
    return float((np.asarray(affine, float) @ np.r_[ijk, 1.0])[2])


def _html_report(analysis, pngs: list[tuple[str, str]], input_path) -> str:
    s = {k: v for k, v in analysis.summary.items() if k not in ("provenance", "warnings")}
    warnings = "".join(f"<p style='color:#a00'><b>Warning:</b> {html.escape(w)}</p>"
                       for w in analysis.summary.get("warnings", []))
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{'null' if v is None else (f'{v:.4g}' if isinstance(v, float) else v)}</td></tr>"
                   for k, v in s.items())
    legend = "".join(
        f"<span style='display:inline-block;width:12px;height:12px;background:{'rgb(%d,%d,%d)' % rgb_255(rgb)}'></span> {reg} &nbsp; "
        for reg, rgb in anatomy.VESSEL_REGION_COLORS.items())
    imgs = "".join(f"<figure style='display:inline-block;margin:4px'><img src='{name}' alt='{html.escape(caption)}'>"
                   f"<figcaption style='font-size:12px'>{html.escape(caption)}</figcaption></figure>"
                   for name, caption in pngs)
    table = analysis.vessels.round(4).to_html(index=False, border=0)
    prov = html.escape(json.dumps(_json_ready(analysis.provenance), indent=1))
    definitions = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
                          for k, v in {**SUMMARY_KEY_DEFINITIONS, **VESSEL_COLUMN_DEFINITIONS}.items())
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>NeonatalVessels report</title>
<style>body{{font-family:sans-serif;margin:20px}} table{{border-collapse:collapse;font-size:12px}}
td,th{{padding:2px 8px;border-bottom:1px solid #ddd}}</style></head><body>
<h1>NeonatalVessels report</h1><p>Input: {html.escape(str(input_path)) if input_path else '(in memory)'}</p>
<h2>Summary</h2>{warnings}<table>{rows}</table>
<h2>minIP with veins by region</h2><p>{legend}</p>{imgs}
<p>Axial minIP slabs (the voxel axes nearest R, A, S; an oblique grid is not resampled) in radiological
convention: anterior up, the patient's right on the left of the picture (R / L / A / P marked); the slabs
holding the most DMV voxels, each with the veins inside it coloured by region.</p>
<h2>Vessels</h2>{table}
<h2>Definitions</h2><p>Coordinates: RAS mm (x = patient's right, y = anterior, z = superior); sides are the
patient's.  Methods and their validation: docs/vessels.md.</p><table>{definitions}</table>
<h2>Provenance</h2><pre>{prov}</pre></body></html>"""


def write_outputs(analysis, out_dir: str | os.PathLike, *, input_path: str | os.PathLike | None = None) -> Path:
    """Write the output contract of a :class:`~NeonatalVesselsLib.pipeline.VesselAnalysis` into ``out_dir``.

    ``out_dir`` must be new or empty (nothing is overwritten); on any error nothing
    is left in it.  ``input_path`` (the SWI file) is recorded with its SHA-256.
    Returns ``out_dir``.
    """
    from NeonatalBrainLib.slicerfiles import write_markups_curves_json, write_seg_nrrd

    out_dir = Path(out_dir)
    summary = dict(analysis.summary)
    prov = dict(summary.get("provenance", analysis.provenance))
    if input_path is not None:
        prov["input"] = str(input_path)
        try:
            prov["input_sha256"] = sha256_file(input_path)
        except OSError:
            prov["input_sha256"] = None
    summary["provenance"] = prov
    # the minIP (float noise: compressing it takes ~1.5 s on the 128 x 384 x 384 benchmark volume)
    # is written by SimpleITK, which releases the GIL, on a thread beside everything else; the
    # pool's exit waits for it before the stage is published or, on an error, removed
    with staged_output(out_dir) as stage, ThreadPoolExecutor(1) as pool:
        minip_job = pool.submit(save_volume, analysis.minip, stage / "minip.nii.gz")
        (stage / "summary.json").write_text(json.dumps(_json_ready(summary), indent=1))
        analysis.vessels.to_csv(stage / "vessels.csv", index=False, float_format="%.6g")
        centerlines_frame(analysis.centerlines).to_csv(stage / "centerlines.csv", index=False, float_format="%.5f")
        save_volume(analysis.vessel_labels, stage / "vessel_labels.nii.gz")
        present = set(np.unique(analysis.region_labels.array).tolist()) - {0}
        segments = [seg for seg in analysis.region_table if seg[0] in present]
        write_seg_nrrd(stage / "vessels.seg.nrrd", analysis.region_labels, segments)
        curves = {f"vessel_{vid}_{r}_{s}": analysis.centerlines[vid]
                  for vid, r, s in analysis.vessels[["vessel_id", "region", "side"]].itertuples(index=False)
                  if len(analysis.centerlines[vid]) >= 2}
        colors = {f"vessel_{vid}_{r}_{s}": anatomy.VESSEL_REGION_COLORS[r]
                  for vid, r, s in analysis.vessels[["vessel_id", "region", "side"]].itertuples(index=False)}
        if curves:
            write_markups_curves_json(stage / "centerlines.mrk.json", curves, {k: colors[k] for k in curves})
        else:
            (stage / "centerlines.mrk.json").write_text(json.dumps(
                {"@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json#",
                 "markups": []}))
        pngs = _overlay_pngs(analysis, stage)
        (stage / "report.html").write_text(_html_report(analysis, pngs, input_path))
        minip_job.result()
    return out_dir
