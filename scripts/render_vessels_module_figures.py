"""Render the pictures of docs/vessels-module.md from the module's own MRML nodes (headless).

Runs the NeonatalVessels module logic on slicer-core exactly as the Apply button does
(phantom SWI volume node in -> segmentation, curves, tables, minIP nodes out), then
draws what the user sees from those nodes:

* ``vessels_module_slices.png``: an axial SWI slice, the minIP slab node, and the minIP
  with the segmentation node's labelmap (segment colours) and the curve nodes' points
  projected onto it;
* ``vessels_module_3d.png``: the segmentation's closed-surface representation and the
  centreline curves, rendered with VTK offscreen (matplotlib 3D lines if VTK cannot
  open an offscreen window);
* ``vessels_module_tables.png``: the summary and the first rows of the vessel table nodes;
* ``vessels_module_edit.png``: one DMV erased in the segmentation, then "Recompute
  metrics": before/after overlay and the counts of the v1 and v2 summary tables.

Usage: ``python scripts/render_vessels_module_figures.py [--out docs/images] [--phantom DIR]``
(``--phantom``: an existing phantom folder; default: generate term_3t seed 0 in a temp folder).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "Testing"))  # make_mrml_context: the headless scene of the test suite


def _scene():
    import slicer
    from fixtures_mrml import make_mrml_context

    ctx = make_mrml_context()
    slicer.mrmlScene, slicer.modules = ctx.scene, ctx.modules
    return ctx


def _segment_rgba(seg_node, reference):
    """(labels [i, j, k], value -> RGB) of a segmentation node on ``reference``'s grid."""
    from NeonatalBrainLib import mrml as nbmrml

    labels, names = nbmrml.labels_from_segmentation_node(seg_node, reference)
    segmentation = seg_node.GetSegmentation()
    colors = {v: segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(n)).GetColor()
              for v, n in names.items()}
    return np.asarray(labels.array), colors


def _axial_index(volume, z_mm: float) -> tuple[int, int]:
    """(axis, index) of the voxel axis closest to S-I and the slice nearest ``z_mm``."""
    direction = volume.direction
    axis = int(np.argmax(np.abs(direction[2])))
    centre = (np.array(volume.shape) - 1) / 2.0
    zs = []
    for k in range(volume.shape[axis]):
        ijk = centre.copy()
        ijk[axis] = k
        zs.append(volume.ijk_to_ras(ijk)[0, 2])
    return axis, int(np.argmin(np.abs(np.array(zs) - z_mm)))


def _slice(array, axis, index):
    """2D slice displayed radiologically: patient's right on the image left, anterior up."""
    return np.take(array, index, axis=axis)


def _display(img2d, volume, axis):
    """Orient a slice so that image columns run R->L (radiological) and rows A->P."""
    axes = [a for a in range(3) if a != axis]
    d = volume.direction
    # which remaining axis is closest to x (R-L)?
    x_axis = max(axes, key=lambda a: abs(d[0, a]))
    y_axis = [a for a in axes if a != x_axis][0]
    out = img2d if axes.index(x_axis) == 1 else img2d.T  # rows = y axis, cols = x axis
    if d[0, x_axis] > 0:   # +i goes to patient's right: radiological has right on the left
        out = out[:, ::-1]
    if d[1, y_axis] > 0:   # +j goes anterior: anterior up
        out = out[::-1, :]
    return out, x_axis, y_axis


def _to_display_coords(points_ras, volume, axis, x_axis, y_axis):
    ijk = volume.ras_to_ijk(points_ras)
    d = volume.direction
    shape = volume.shape
    col = ijk[:, x_axis]
    row = ijk[:, y_axis]
    if d[0, x_axis] > 0:
        col = shape[x_axis] - 1 - col
    if d[1, y_axis] > 0:
        row = shape[y_axis] - 1 - row
    return col, row, ijk[:, axis]


def overlay_rgb(gray2d, labels2d, colors, alpha=0.75):
    lo, hi = np.percentile(gray2d, 1), np.percentile(gray2d, 99.5)
    g = np.clip((gray2d - lo) / (hi - lo + 1e-9), 0, 1)
    rgb = np.repeat(g[..., None], 3, axis=2)
    for value, color in colors.items():
        m = labels2d == value
        rgb[m] = (1 - alpha) * rgb[m] + alpha * np.asarray(color)
    return rgb


def render_slices(outputs, out_png, slab_mm):
    import matplotlib.pyplot as plt

    from NeonatalBrainLib import mrml as nbmrml

    swi = nbmrml.volume_from_node(outputs.input_node)
    minip = nbmrml.volume_from_node(outputs.minip)
    labels, colors = _segment_rgba(outputs.segmentation, swi)
    ids = nbmrml.volume_from_node(outputs.vessel_ids)
    # slice through the DMVs: the S-I level with most DMV voxels
    dmv_ids = [r["vessel_id"] for r in nbmrml.rows_from_table_node(outputs.vessel_table) if r["region"] == "dmv"]
    zs = swi.ijk_to_ras(np.argwhere(np.isin(np.asarray(ids.array), dmv_ids)))[:, 2]
    z_mm = float(np.median(zs)) if len(zs) else float(swi.ijk_to_ras((np.array(swi.shape) - 1) / 2)[0, 2])
    axis, index = _axial_index(swi, z_mm)
    s_swi, x_axis, y_axis = _display(_slice(np.asarray(swi.array), axis, index), swi, axis)
    s_min, _, _ = _display(_slice(np.asarray(minip.array), axis, index), swi, axis)
    # the slab's labels: the projection of the segmentation over the minIP slab thickness
    spacing = swi.spacing_mm[axis]
    half = max(0, int(round(slab_mm / spacing / 2)))
    lo, hi = max(0, index - half), min(swi.shape[axis], index + half + 1)
    slab = np.take(labels, range(lo, hi), axis=axis)
    slab_labels = np.max(slab, axis=axis)
    s_lab, _, _ = _display(slab_labels, swi, axis)

    fig, axes = plt.subplots(1, 3, figsize=(15, 6.4), dpi=110)
    for ax in axes:
        ax.set_axis_off()
    axes[0].imshow(s_swi, cmap="gray")
    axes[0].set_title(f"SWI input, axial slice (z = {z_mm:.0f} mm)")
    axes[1].imshow(s_min, cmap="gray")
    axes[1].set_title(f"'{outputs.minip.GetName()}' ({slab_mm:g} mm slab)")
    display = outputs.segmentation.GetDisplayNode()
    segmentation = outputs.segmentation.GetSegmentation()
    names = {v: segmentation.GetNthSegment(i).GetName() for i, v in enumerate(sorted(colors))}
    filled = {v: c for v, c in colors.items() if display.GetSegmentVisibility2DFill(names[v])}
    axes[2].imshow(overlay_rgb(s_min, s_lab, filled))
    for v, c in colors.items():  # outline-only segments (as Slicer draws them)
        if v not in filled and (s_lab == v).any():
            axes[2].contour((s_lab == v).astype(float), levels=[0.5], colors=[c], linewidths=0.6)
    for vid, node in outputs.curves.items():
        if not node.GetDisplayNode().GetVisibility():
            continue  # hidden in Slicer too ("other" veins)
        pts = nbmrml.points_from_curve_node(node)
        col, row, depth = _to_display_coords(pts, swi, axis, x_axis, y_axis)
        keep = (depth >= lo - 0.5) & (depth <= hi - 0.5)
        if keep.sum() >= 2:
            axes[2].plot(col[keep], row[keep], "-", color="white", lw=0.6, alpha=0.9)
    axes[2].set_title("minIP + segmentation (other veins: outline) + curves (white)")
    handles = []
    import matplotlib.patches as mpatches
    for value, color in sorted(colors.items()):
        handles.append(mpatches.Patch(color=color, label=outputs.segmentation.GetSegmentation().GetNthSegment(
            sorted(colors).index(value)).GetName()))
    fig.legend(handles=handles, loc="lower center", fontsize=8, ncol=min(6, len(handles)), framealpha=0.9)
    for ax in axes:
        ax.text(0.02, 0.5, "R", transform=ax.transAxes, color="yellow", fontsize=11, va="center")
        ax.text(0.96, 0.5, "L", transform=ax.transAxes, color="yellow", fontsize=11, va="center")
    fig.tight_layout(rect=(0, 0.07, 1, 0.97))
    fig.savefig(out_png)
    plt.close(fig)
    return z_mm


def render_3d(outputs, out_png, curves: bool = True):
    """Closed surfaces of the segments + curves, VTK offscreen; matplotlib fallback."""
    import slicer

    seg = outputs.segmentation
    segmentation = seg.GetSegmentation()
    closed = slicer.vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName()
    try:
        import vtk
        from vtk.util import numpy_support

        window = vtk.vtkRenderWindow()
        window.SetOffScreenRendering(1)
        window.SetSize(1000, 800)
        renderer = vtk.vtkRenderer()
        renderer.SetBackground(0.08, 0.08, 0.12)
        window.AddRenderer(renderer)
        for i in range(segmentation.GetNumberOfSegments()):
            segment = segmentation.GetNthSegment(i)
            if not seg.GetDisplayNode().GetSegmentVisibility3D(segmentation.GetNthSegmentID(i)):
                continue  # hidden in Slicer's 3D view too
            poly = vtk.vtkPolyData()
            seg.GetClosedSurfaceRepresentation(segmentation.GetNthSegmentID(i), poly)
            if poly.GetNumberOfPoints() == 0:
                continue
            mapper = vtk.vtkPolyDataMapper()
            mapper.SetInputData(poly)
            actor = vtk.vtkActor()
            actor.SetMapper(mapper)
            actor.GetProperty().SetColor(*segment.GetColor())
            actor.GetProperty().SetSpecular(0.3)
            renderer.AddActor(actor)
        from NeonatalBrainLib import mrml as nbmrml

        for node in (outputs.curves.values() if curves else ()):
            if not node.GetDisplayNode().GetVisibility():
                continue
            pts = nbmrml.points_from_curve_node(node)
            line = vtk.vtkPolyData()
            vpts = vtk.vtkPoints()
            vpts.SetData(numpy_support.numpy_to_vtk(np.ascontiguousarray(pts), deep=1))
            line.SetPoints(vpts)
            cells = vtk.vtkCellArray()
            cells.InsertNextCell(len(pts))
            for n in range(len(pts)):
                cells.InsertCellPoint(n)
            line.SetLines(cells)
            mapper = vtk.vtkPolyDataMapper()
            mapper.SetInputData(line)
            actor = vtk.vtkActor()
            actor.SetMapper(mapper)
            display = node.GetDisplayNode()
            actor.GetProperty().SetColor(*(display.GetSelectedColor() if display is not None else (1, 1, 1)))
            actor.GetProperty().SetLineWidth(2.0)
            renderer.AddActor(actor)
        camera = renderer.GetActiveCamera()
        camera.SetPosition(0, 0, -1)     # from the feet, like an axial slice: patient's right on the left
        camera.SetFocalPoint(0, 0, 0)
        camera.SetViewUp(0, 1, 0)        # anterior up
        renderer.ResetCamera()
        camera.Elevation(-30)            # tilted to show depth
        camera.Zoom(1.4)
        window.Render()
        grab = vtk.vtkWindowToImageFilter()
        grab.SetInput(window)
        grab.Update()
        image = grab.GetOutput()
        if image.GetDimensions()[0] < 10:
            raise RuntimeError("offscreen rendering gave an empty image")
        nx, ny, _ = image.GetDimensions()
        rgb = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(ny, nx, -1)[::-1, :, :3]
        if rgb.std() < 1:
            raise RuntimeError("offscreen rendering gave a blank image")
        import matplotlib.pyplot as plt

        plt.imsave(out_png, rgb)
        return "vtk"
    except Exception as exc:  # noqa: BLE001 - fall back to a matplotlib drawing of the same nodes
        print(f"VTK offscreen rendering unavailable ({exc}); drawing the curves with matplotlib")
        import matplotlib.pyplot as plt

        from NeonatalBrainLib import mrml as nbmrml

        fig = plt.figure(figsize=(8, 7), dpi=110)
        ax = fig.add_subplot(projection="3d")
        for node in outputs.curves.values():
            pts = nbmrml.points_from_curve_node(node)
            ax.plot(pts[:, 0], pts[:, 1], pts[:, 2], color=node.GetDisplayNode().GetSelectedColor(), lw=1)
        ax.set_xlabel("x (mm, R+)")
        ax.set_ylabel("y (mm, A+)")
        ax.set_zlabel("z (mm, S+)")
        fig.savefig(out_png)
        plt.close(fig)
        return "matplotlib"


def render_tables(outputs, out_png, n_rows=14):
    import matplotlib.pyplot as plt

    from NeonatalBrainLib import mrml as nbmrml
    from NeonatalVesselsLib import mrml_logic as ml

    summary = ml.summary_from_table(outputs.summary_table)
    rows = nbmrml.rows_from_table_node(outputs.vessel_table)
    fig, axes = plt.subplots(2, 1, figsize=(11, 8.2), dpi=110, gridspec_kw={"height_ratios": [1, 1.6]})
    for ax in axes:
        ax.set_axis_off()

    def fmt(v):
        if v is None:
            return "n/a"
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    keys = [k for k in summary if k in ml.SUMMARY_COLUMN_DESCRIPTIONS]
    t = axes[0].table(cellText=[[k, fmt(summary[k])] for k in keys], colLabels=["metric", "value"],
                      loc="center", cellLoc="left", colWidths=[0.45, 0.2])
    t.auto_set_font_size(False)
    t.set_fontsize(8.5)
    axes[0].set_title(f"'{outputs.summary_table.GetName()}' (shown transposed in the module panel)", fontsize=10)
    cols = ["vessel_id", "region", "side", "length_mm", "width_mm", "tortuosity", "curvature_per_mm"]
    order = {r: n for n, r in enumerate(("dmv", "thalamic", "anterior_caudate", "internal_cerebral", "other"))}
    shown = sorted(rows, key=lambda r: (order.get(r["region"], 9), r["vessel_id"]))[:n_rows]
    t2 = axes[1].table(cellText=[[fmt(r[c]) for c in cols] for r in shown], colLabels=cols,
                       loc="center", cellLoc="center")
    t2.auto_set_font_size(False)
    t2.set_fontsize(8.5)
    axes[1].set_title(f"'{outputs.vessel_table.GetName()}' sorted by region: {min(n_rows, len(rows))} of {len(rows)} "
                      "rows\n(click a column header to sort, a row to centre the slice views on that vein)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)


def render_edit(scene, outputs, out_png):
    """Erase one DMV in its segment, recompute, draw before/after around it."""
    import matplotlib.pyplot as plt
    import slicer

    from NeonatalBrainLib import mrml as nbmrml
    from NeonatalVesselsLib import mrml_logic as ml

    swi = nbmrml.volume_from_node(outputs.input_node)
    minip = np.asarray(nbmrml.volume_from_node(outputs.minip).array)
    before_summary = ml.summary_from_table(outputs.summary_table)
    vid = ml.first_vessel_id(outputs, region="dmv", isolated=True)
    centre = ml.vessel_center_ras(outputs, vid)
    labels_before, colors = _segment_rgba(outputs.segmentation, swi)
    segment_id = ml.segment_id_of_vessel(outputs, vid)
    array = slicer.util.arrayFromSegmentBinaryLabelmap(outputs.segmentation, segment_id, outputs.input_node)
    array[ml.vessel_mask_kji(outputs, vid)] = 0
    slicer.util.updateSegmentBinaryLabelmapFromArray(array, outputs.segmentation, segment_id, outputs.input_node)
    vessel_name = outputs.curves[vid].GetName()
    outputs = ml.recompute_from_segmentation(scene, outputs, outputs.segmentation)
    after_summary = ml.summary_from_table(outputs.summary_table)
    labels_after, _ = _segment_rgba(outputs.segmentation, swi)

    axis, index = _axial_index(swi, float(centre[2]))
    half = max(1, int(round(8.0 / swi.spacing_mm[axis] / 2)))
    lo, hi = max(0, index - half), min(swi.shape[axis], index + half + 1)
    panels = []
    for labels in (labels_before, labels_after):
        lab = np.max(np.take(labels, range(lo, hi), axis=axis), axis=axis)
        img, x_axis, y_axis = _display(_slice(minip, axis, index), swi, axis)
        lab, _, _ = _display(lab, swi, axis)
        panels.append(overlay_rgb(img, lab, colors))
    col, row, _ = _to_display_coords(centre[None, :], swi, axis, x_axis, y_axis)
    r = int(round(25 / swi.spacing_mm[x_axis]))
    c0, r0 = int(col[0]), int(row[0])
    fig, axes = plt.subplots(1, 2, figsize=(11, 6.0), dpi=110)
    titles = [f"before: {before_summary['dmv_count']} DMVs ({before_summary['dmv_count_left']} L, "
              f"{before_summary['dmv_count_right']} R)",
              f"after erasing '{vessel_name}' + Recompute:\n{after_summary['dmv_count']} DMVs "
              f"({after_summary['dmv_count_left']} L, {after_summary['dmv_count_right']} R), "
              f"table '{outputs.vessel_table.GetName()}'"]
    for ax, panel, title in zip(axes, panels, titles):
        ax.imshow(panel[max(0, r0 - r):r0 + r, max(0, c0 - r):c0 + r])
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
        ax.plot([min(r, c0)], [min(r, r0)], "+", color="yellow", ms=14, mew=1.5)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return before_summary, after_summary, vessel_name


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "images"))
    parser.add_argument("--phantom", default=None, help="existing phantom folder (default: generate one)")
    args = parser.parse_args(argv)

    from NeonatalBrainLib import mrml as nbmrml
    from NeonatalVesselsLib import mrml_logic as ml
    from NeonatalVesselsLib import sampledata

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    phantom = Path(args.phantom) if args.phantom else Path(tempfile.mkdtemp(prefix="vessels-figs-")) / "phantom"
    paths = sampledata.ensure_phantom(phantom)
    ctx = _scene()
    swi_node = nbmrml.load_volume_node(ctx.scene, paths["swi"], name="swi")
    params = ml.vessel_params()
    stages = []
    outputs = ml.analyze_volume_node(ctx.scene, swi_node, params=params, progress=lambda f, s: stages.append(s))
    print(ml.summary_text(outputs))
    z = render_slices(outputs, out / "vessels_module_slices.png", params.minip_slab_mm)
    how = render_3d(outputs, out / "vessels_module_3d.png")
    render_tables(outputs, out / "vessels_module_tables.png")
    before, after, name = render_edit(ctx.scene, outputs, out / "vessels_module_edit.png")
    truth = sampledata.truth_dmv_counts(paths["vessels_json"])
    print(f"slices at z = {z:.1f} mm; 3D by {how}; erased {name}: {before['dmv_count']} -> {after['dmv_count']} DMVs; "
          f"truth {truth}")
    print(f"figures in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
