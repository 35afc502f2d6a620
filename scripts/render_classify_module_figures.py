#!/usr/bin/env python
"""Render the pictures of docs/classify-module.md from real MRML nodes (headless slicer-core).

Runs the module's logic exactly as the Slicer module does, on a synthetic neonate
from the project's phantom: T1 volume node -> "Extract ROIs" (segmentation node)
-> "Classify" with the demo model (heatmap volume node, result tables) -> a user
edit of the ROI segmentation (both globus pallidus segments erased on their upper
half) -> "Classify" again; then draws the nodes with matplotlib
(:func:`NeonatalClassifyLib.mrml_logic.render_overlay_figure`).

Usage::

    .venv/bin/python scripts/render_classify_module_figures.py [--out docs/images] [--seed 7]

Writes ``classify_module_rois.png``, ``classify_module_gradcam.png``,
``classify_module_edited.png`` and ``classify_module_slices.png`` (refuses to
overwrite: delete the old pictures first) and prints the numbers quoted in the doc.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "Testing"))  # the headless MRML scene builder used by the tests


def erase_upper_half(seg_node, t1_node, segment_ids) -> None:
    """Erase the voxels of each segment above its median RAS z (edits the segment's binary labelmap)."""
    import slicer.util

    from NeonatalBrainLib import mrml

    t1 = mrml.volume_from_node(t1_node)
    for sid in segment_ids:
        kji = slicer.util.arrayFromSegmentBinaryLabelmap(seg_node, sid, t1_node)
        ijk = np.argwhere(kji.transpose(2, 1, 0) > 0)
        z = t1.ijk_to_ras(ijk)[:, 2]
        for i, j, k in ijk[z > np.median(z)]:
            kji[k, j, i] = 0
        slicer.util.updateSegmentBinaryLabelmapFromArray(kji, seg_node, sid, t1_node)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "images"))
    parser.add_argument("--seed", type=int, default=7, help="phantom seed")
    parser.add_argument("--injury", default="bilirubin", help="phantom injury kind ('' for a control)")
    parser.add_argument("--strength", type=float, default=0.35, help="injury strength 0..1 (0.35: subtle)")
    parser.add_argument("--model", default=None, help="catalogue id or model folder (default: the demo model)")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from fixtures_mrml import mrml_context

    from NeonatalBrainLib import mrml
    from NeonatalBrainLib.phantom import InjurySpec, write_phantom
    from NeonatalClassifyLib import mrml_logic

    model = args.model or mrml_logic.DEMO_MODEL_ID
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = ["classify_module_rois.png", "classify_module_gradcam.png", "classify_module_gradcam_coronal.png",
             "classify_module_edited.png", "classify_module_slices.png"]
    existing = [n for n in names if (out / n).exists()]
    if existing:
        print(f"refusing to overwrite {existing} in {out}; delete them first", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="classify-figures-"))
    injury = InjurySpec(kind=args.injury, strength=args.strength) if args.injury else None
    t0 = time.perf_counter()
    write_phantom(tmp / "neonate", seed=args.seed, injury=injury, modalities=("t1",))
    print(f"phantom (seed {args.seed}, injury {args.injury or 'none'} strength {args.strength}): "
          f"{time.perf_counter() - t0:.1f} s")

    with mrml_context() as ctx:
        scene = ctx.scene
        t1_node = mrml.load_volume_node(scene, tmp / "neonate" / "t1.nii.gz", "neonate_T1")
        t0 = time.perf_counter()
        seg = mrml_logic.extract_rois(scene, t1_node, model=model)
        print(f"Extract ROIs: {time.perf_counter() - t0:.1f} s, "
              f"{seg.GetSegmentation().GetNumberOfSegments()} segments")
        mrml_logic.render_overlay_figure(out / names[0], t1_node, segmentation_node=seg,
                                         title="Extract ROIs: deep grey-matter segmentation over the T1")

        t0 = time.perf_counter()
        res = mrml_logic.classify_volume_node(scene, t1_node, model, roi_segmentation_node=seg)
        print(f"Classify: {time.perf_counter() - t0:.1f} s; P(injured) = {res.probability:.3f}, "
              f"threshold {res.threshold:.3f} -> {res.predicted_class}; ROIs: {res.roi_source}")
        mrml_logic.set_heatmap_overlay(scene, t1_node, res.heatmap_node, opacity=0.6, threshold_fraction=0.2)
        mrml_logic.render_overlay_figure(
            out / names[1], t1_node, heatmap_node=res.heatmap_node, segmentation_node=seg, opacity=0.6,
            threshold_fraction=0.2,
            title=f"Classify: Grad-CAM over the T1 (P = {res.probability:.2f}, {res.predicted_class})")
        slices_before = res.slices
        # coronal slice through the globus pallidus centroid (same slice before and after the edit)
        t1 = mrml.volume_from_node(t1_node)
        labels, _names, _ = mrml_logic.roi_labels_from_segmentation(seg, t1)
        gp_ras = mrml_logic._ras_view(labels)[0]
        coronal = int(np.round(np.argwhere(np.isin(gp_ras, [13, 14]))[:, 1].mean()))
        mrml_logic.render_overlay_figure(
            out / names[2], t1_node, heatmap_node=res.heatmap_node, segmentation_node=seg, opacity=0.6,
            threshold_fraction=0.2, plane="coronal", slice_index=coronal,
            title=f"Coronal, automatic ROIs: P = {res.probability:.2f}")

        # a user edit, as the Segment Editor makes it: erase the upper half of both globus pallidus segments
        erase_upper_half(seg, t1_node, ("globus_pallidus_left", "globus_pallidus_right"))
        t0 = time.perf_counter()
        res2 = mrml_logic.classify_volume_node(
            scene, t1_node, model, roi_segmentation_node=seg, heatmap_node=res.heatmap_node,
            summary_table_node=res.summary_table_node, slice_table_node=res.slice_table_node)
        print(f"Classify after the edit ({time.perf_counter() - t0:.1f} s, libraries loaded): "
              f"P(injured) = {res2.probability:.3f}; ROIs: {res2.roi_source}; "
              f"slice z before {[round(s['z_mm'], 1) for s in slices_before]} "
              f"after {[round(s['z_mm'], 1) for s in res2.slices]}")
        mrml_logic.render_overlay_figure(
            out / names[3], t1_node, heatmap_node=res2.heatmap_node, segmentation_node=seg, opacity=0.6,
            threshold_fraction=0.2, plane="coronal", slice_index=coronal,
            title=f"Coronal, upper half of both GP erased: P = {res2.probability:.2f}")

        fig, ax = plt.subplots(figsize=(5.6, 3.2))
        ax.plot([s["z_mm"] for s in slices_before], [s["probability"] for s in slices_before], "o-",
                label="automatic ROIs")
        ax.plot([s["z_mm"] for s in res2.slices], [s["probability"] for s in res2.slices], "s--",
                label="edited ROIs")
        ax.axhline(res.threshold, color="grey", lw=0.8, ls=":", label="model threshold")
        ax.set_xlabel("slice position z (mm, RAS)")
        ax.set_ylabel("slice P(injured)")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8)
        ax.set_title("Per-slice table (slice probabilities)", fontsize=10)
        fig.tight_layout()
        fig.savefig(out / names[4], dpi=120)
        plt.close(fig)
    print("wrote " + ", ".join(str(out / n) for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
