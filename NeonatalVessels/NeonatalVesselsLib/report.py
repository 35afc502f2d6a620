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
from pathlib import Path

import numpy as np
import pandas as pd

from NeonatalBrainLib import anatomy
from NeonatalBrainLib.imageio import save_volume, sha256_file
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


def _overlay_pngs(analysis, folder: Path, n_slices: int = 4) -> list[str]:
    """minIP slices (axial, along the voxel axis closest to S-I) with veins coloured by region."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minip = np.asarray(analysis.minip.array)      # one slice at a time in float (no float64 copy of the volume)
    reg = np.asarray(analysis.region_labels.array)
    affine = analysis.minip.affine
    direction = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    axis = int(np.argmax(np.abs(direction[2])))
    slab_vox = max(1, int(round(analysis.provenance.get("parameters", {}).get("minip_slab_mm", 8.0)
                                / float(np.linalg.norm(affine[:3, axis])))))
    brain = np.asarray(analysis.brain_mask.array) > 0
    present = np.flatnonzero(brain.any(axis=tuple(a for a in range(3) if a != axis)))
    if present.size == 0:
        present = np.arange(minip.shape[axis])
    centres = np.linspace(present[0] + 0.35 * len(present), present[0] + 0.8 * len(present), n_slices).astype(int)
    lut = np.zeros((256, 4))
    for value, name, rgb in analysis.region_table:
        lut[value] = (*rgb, 1.0)
    names = []
    for n, c in enumerate(centres):
        lo, hi = max(0, c - slab_vox // 2), min(minip.shape[axis], c + slab_vox // 2 + 1)
        img = np.take(minip, c, axis=axis).astype(float)
        regs = np.take(reg, np.arange(lo, hi), axis=axis).max(axis=axis)
        # display so that the patient's anterior is up and right is on the left (radiological)
        fig, ax = plt.subplots(figsize=(4, 4.6), dpi=100)
        lo_v, hi_v = np.percentile(img[img > 0], [1, 99]) if (img > 0).any() else (0, 1)
        ax.imshow(img.T, cmap="gray", vmin=lo_v, vmax=hi_v, origin="lower", interpolation="nearest")
        over = lut[regs.astype(np.uint8)]
        ax.imshow(np.transpose(over, (1, 0, 2)), origin="lower", interpolation="nearest")
        ax.set_title(f"minIP slab {slab_vox * float(np.linalg.norm(affine[:3, axis])):.0f} mm, slice {c}", fontsize=8)
        ax.axis("off")
        name = f"overlay_{n + 1}.png"
        fig.savefig(folder / name, bbox_inches="tight")
        plt.close(fig)
        names.append(name)
    return names


def _html_report(analysis, pngs: list[str], input_path) -> str:
    s = {k: v for k, v in analysis.summary.items() if k not in ("provenance", "warnings")}
    warnings = "".join(f"<p style='color:#a00'><b>Warning:</b> {html.escape(w)}</p>"
                       for w in analysis.summary.get("warnings", []))
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{'null' if v is None else (f'{v:.4g}' if isinstance(v, float) else v)}</td></tr>"
                   for k, v in s.items())
    legend = "".join(
        f"<span style='display:inline-block;width:12px;height:12px;background:rgb({int(255*r)},{int(255*g)},{int(255*b)})'></span> {reg} &nbsp; "
        for reg, (r, g, b) in anatomy.VESSEL_REGION_COLORS.items())
    imgs = "".join(f"<img src='{p}' style='margin:4px'>" for p in pngs)
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
<p>Radiological display (patient's right on the image left would need a flip; here voxel axes as stored, anterior/superior from the affine).</p>
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
