"""NeonatalClassify at the Logic/MRML level on real slicer-core nodes (no Qt).

Scenario on the injured phantom's ``t1.nii.gz``: T1 volume node in (through the
MRML adapter) -> ``extract_rois`` (segmentation node with the eight named,
coloured, coded segments) -> ``classify_volume_node`` with the demo model
(heatmap volume node on exactly the T1 grid, summary and per-slice tables in a
subject-hierarchy folder) -> the probability equals the engine's
``classify_t1`` on the same file -> an edited ROI segmentation is what the
engine receives -> export refuses to overwrite.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")

from NeonatalBrainLib import anatomy, imageio, mrml  # noqa: E402
from NeonatalBrainLib.imageio import InputError  # noqa: E402
from NeonatalBrainLib.outputs import OutputExistsError  # noqa: E402
from NeonatalClassifyLib import mrml_logic  # noqa: E402


def node_matrix(node) -> np.ndarray:
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def erase_upper_half(seg_node, t1_node, segment_ids) -> int:
    """Erase each segment above its median RAS z, as a Segment Editor eraser would; returns voxels erased."""
    t1 = mrml.volume_from_node(t1_node)
    erased = 0
    for sid in segment_ids:
        kji = slicer.util.arrayFromSegmentBinaryLabelmap(seg_node, sid, t1_node)
        ijk = np.argwhere(kji.transpose(2, 1, 0) > 0)
        z = t1.ijk_to_ras(ijk)[:, 2]
        for i, j, k in ijk[z > np.median(z)]:
            kji[k, j, i] = 0
            erased += 1
        slicer.util.updateSegmentBinaryLabelmapFromArray(kji, seg_node, sid, t1_node)
    return erased


@pytest.fixture(scope="module")
def scenario(injured_phantom_dir):
    """One scene for the module: T1 node, extracted ROIs and a classification with the demo model."""
    from fixtures_mrml import mrml_context

    with mrml_context() as ctx:
        scene = ctx.scene
        t1_path = injured_phantom_dir / "t1.nii.gz"
        t1_node = mrml.load_volume_node(scene, t1_path, "neonate_T1")
        stages = []
        seg = mrml_logic.extract_rois(scene, t1_node, progress=lambda f, s: stages.append((f, s)))
        outputs = mrml_logic.classify_volume_node(scene, t1_node, mrml_logic.DEMO_MODEL_ID,
                                                  roi_segmentation_node=seg)
        yield {"ctx": ctx, "scene": scene, "t1_path": t1_path, "t1_node": t1_node, "seg": seg,
               "outputs": outputs, "stages": stages}


def test_rois_segmentation_has_eight_coded_segments(scenario):
    seg = scenario["seg"]
    segmentation = seg.GetSegmentation()
    segments = {segmentation.GetNthSegment(i).GetName(): segmentation.GetNthSegment(i)
                for i in range(segmentation.GetNumberOfSegments())}
    assert set(segments) == set(anatomy.DEEP_GREY_ROIS)
    t1 = mrml.volume_from_node(scenario["t1_node"])
    labels, names, edited = mrml_logic.roi_labels_from_segmentation(seg, t1)
    assert not edited  # as extracted
    assert labels.same_grid(t1)
    spacing = t1.spacing_mm
    for name, segment in segments.items():
        assert segment.GetColor() == pytest.approx(anatomy.color_of(name), abs=1e-6)
        entry = segment.GetTerminology()
        side = "Left" if name.endswith("_left") else "Right"
        assert f"~SCT^{mrml_logic.STRUCTURE_CODES[anatomy.structure_of(name)][0]}^" in entry
        assert f"^{side}~" in entry
        mask = labels.array == anatomy.LABEL_VALUES[name]
        volume_mm3 = mask.sum() * float(np.prod(spacing))
        assert volume_mm3 > 50.0, f"{name}: only {volume_mm3:.0f} mm3"
        # left structures lie at smaller RAS x than their right partners
        if name.endswith("_left"):
            right = labels.array == anatomy.LABEL_VALUES[name.replace("_left", "_right")]
            x_left = t1.ijk_to_ras(np.argwhere(mask))[:, 0].mean()
            x_right = t1.ijk_to_ras(np.argwhere(right))[:, 0].mean()
            assert x_left < x_right
    # Segment Editor works on the T1 grid: the reference geometry is the T1's (extent and image-to-world)
    geometry = seg.GetSegmentation().GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
    reference = slicer.vtkOrientedImageData()
    assert slicer.vtkSegmentationConverter.DeserializeImageGeometry(geometry, reference, False)
    assert reference.GetDimensions() == scenario["t1_node"].GetImageData().GetDimensions()
    import vtk

    m = vtk.vtkMatrix4x4()
    reference.GetImageToWorldMatrix(m)
    np.testing.assert_allclose([[m.GetElement(r, c) for c in range(4)] for r in range(4)],
                               node_matrix(scenario["t1_node"]), atol=1e-6)
    assert scenario["stages"] and scenario["stages"][-1][0] == pytest.approx(1.0)


def test_rois_agree_with_the_phantom_truth(scenario, injured_phantom_dir):
    """The extracted GP segments overlap the phantom's true GP (Dice >= 0.6: a sanity bound, not the engine's target)."""
    truth = imageio.load_volume(injured_phantom_dir / "labels.nii.gz").array
    t1 = mrml.volume_from_node(scenario["t1_node"])
    labels, _names, _ = mrml_logic.roi_labels_from_segmentation(scenario["seg"], t1)
    for name in ("globus_pallidus_left", "globus_pallidus_right"):
        v = anatomy.LABEL_VALUES[name]
        a, b = labels.array == v, truth == v
        dice = 2 * (a & b).sum() / (a.sum() + b.sum())
        assert dice >= 0.6, f"{name}: Dice {dice:.2f}"


def test_heatmap_node_on_t1_grid(scenario):
    out = scenario["outputs"]
    t1_node, heat_node = scenario["t1_node"], out.heatmap_node
    assert heat_node.IsA("vtkMRMLScalarVolumeNode") and not heat_node.IsA("vtkMRMLLabelMapVolumeNode")
    assert heat_node.GetImageData().GetDimensions() == t1_node.GetImageData().GetDimensions()
    np.testing.assert_allclose(node_matrix(heat_node), node_matrix(t1_node), atol=1e-9)
    heat = slicer.util.arrayFromVolume(heat_node)
    assert np.all(np.isfinite(heat)) and heat.min() >= 0.0 and heat.max() > 0.0
    # non-zero only on the classified slices, which cut through the ROIs
    t1 = mrml.volume_from_node(t1_node)
    heat_v = mrml.volume_from_node(heat_node)
    k_axis = int(np.argmax(np.abs(t1.direction[2, :])))  # voxel axis closest to superior
    hot_planes = np.unique(np.argwhere(heat_v.array > 0)[:, k_axis])
    slice_k = {int(r["k_index"]) for r in mrml.rows_from_table_node(out.slice_table_node)}
    assert set(hot_planes.tolist()) <= {k + d for k in slice_k for d in (-1, 0, 1)}
    # display: warm colour table, lowest values hidden
    display = heat_node.GetDisplayNode()
    assert display.GetColorNode().GetName() == mrml_logic.HEATMAP_COLOR_NAME
    lut = display.GetColorNode().GetLookupTable()
    low, high = lut.GetTableValue(0), lut.GetTableValue(255)
    assert low[0] > low[2] and high[0] >= high[2] and high[1] > low[1]  # red-dominant, brightening to yellow
    assert display.GetApplyThreshold() == 1
    assert display.GetLowerThreshold() > 0.0


def test_overlay_opacity_and_threshold(scenario):
    scene, out = scenario["scene"], scenario["outputs"]
    composite = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")  # stands in for a slice view
    try:
        heat_max = float(slicer.util.arrayFromVolume(out.heatmap_node).max())
        info = mrml_logic.set_heatmap_overlay(scene, scenario["t1_node"], out.heatmap_node, opacity=0.35,
                                              threshold_fraction=0.4)
        assert info["views"] >= 1
        assert composite.GetBackgroundVolumeID() == scenario["t1_node"].GetID()
        assert composite.GetForegroundVolumeID() == out.heatmap_node.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(0.35)
        display = out.heatmap_node.GetDisplayNode()
        assert display.GetLowerThreshold() == pytest.approx(0.4 * heat_max, rel=1e-6)
        assert display.GetWindowLevelMin() == pytest.approx(0.4 * heat_max, rel=1e-6)
        assert display.GetWindowLevelMax() == pytest.approx(heat_max, rel=1e-6)
    finally:
        scene.RemoveNode(composite)


def test_result_tables_and_subject_hierarchy(scenario):
    out, scene = scenario["outputs"], scenario["scene"]
    summary = mrml.rows_from_table_node(out.summary_table_node)
    assert len(summary) == 1
    row = summary[0]
    assert row["probability"] == pytest.approx(out.probability)
    assert 0.0 <= out.probability <= 1.0
    assert row["predicted_label"] == int(out.probability >= out.threshold)
    assert row["predicted_class"] == ("injured" if row["predicted_label"] else "control")
    assert row["threshold"] == pytest.approx(out.threshold)
    slices = mrml.rows_from_table_node(out.slice_table_node)
    assert len(slices) == row["n_slices"] >= 1
    probs = np.array([s["probability"] for s in slices])
    assert np.all((probs >= 0) & (probs <= 1))
    assert float(probs.mean()) == pytest.approx(out.probability, abs=1e-9)  # documented aggregation: mean
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    folder = out.folder_item
    assert "neonate_T1" in sh.GetItemName(folder)
    for node in (out.heatmap_node, out.summary_table_node, out.slice_table_node, scenario["seg"]):
        assert sh.GetItemParent(sh.GetItemByDataNode(node)) == folder


def test_probability_equals_engine_on_same_file(scenario):
    """The module's result is the engine's classify_t1 on the same file.

    With the same ROIs: identical probability, threshold, prediction and heatmap.  End to
    end (the engine segments the file itself, as ``neonatal-brain classify`` does): the
    same up to the atlas registration's run-to-run jitter (multi-threaded metric sums
    move a few boundary voxels), bounded here by 0.02 in probability.
    """
    from NeonatalClassifyLib import inference

    out = scenario["outputs"]
    t1 = imageio.load_volume(scenario["t1_path"])
    model_dir = mrml_logic.resolve_model(mrml_logic.DEMO_MODEL_ID)
    same_rois = inference.classify_t1(t1, model_dir, rois=out.roi_labels)
    assert out.probability == pytest.approx(same_rois.probability, abs=1e-9)
    assert out.threshold == pytest.approx(same_rois.threshold)
    assert out.predicted_label == same_rois.predicted_label
    np.testing.assert_allclose(mrml.volume_from_node(out.heatmap_node).array, same_rois.gradcam.array, atol=1e-6)

    end_to_end = inference.classify_t1(t1, model_dir)
    assert out.probability == pytest.approx(end_to_end.probability, abs=0.02)
    assert out.threshold == pytest.approx(end_to_end.threshold)


def test_edited_roi_is_what_the_engine_receives(scenario):
    """Erase the upper half of both GP segments: the engine gets exactly the edited labels."""
    scene, t1_node = scenario["scene"], scenario["t1_node"]
    t1 = mrml.volume_from_node(t1_node)
    labels, names, _ = mrml_logic.roi_labels_from_segmentation(scenario["seg"], t1)
    seg = mrml_logic.roi_segmentation_from_labels(scene, t1_node, labels, names)  # a fresh copy to edit
    gp = ("globus_pallidus_left", "globus_pallidus_right")
    erased = erase_upper_half(seg, t1_node, gp)
    assert erased > 20
    expected = labels.array.copy()
    for name in gp:
        v = anatomy.LABEL_VALUES[name]
        ijk = np.argwhere(expected == v)
        z = t1.ijk_to_ras(ijk)[:, 2]
        expected[tuple(ijk[z > np.median(z)].T)] = 0

    before = scenario["outputs"]
    after = mrml_logic.classify_volume_node(scene, t1_node, mrml_logic.DEMO_MODEL_ID, roi_segmentation_node=seg)
    assert after.roi_source == "edited segmentation"
    assert before.roi_source == "segmentation"
    assert mrml.rows_from_table_node(after.summary_table_node)[0]["roi_source"] == "edited segmentation"
    np.testing.assert_array_equal(after.roi_labels.array, expected)
    # slices follow the GP: with its upper half gone they move down
    z_before = np.array([s["z_mm"] for s in before.slices])
    z_after = np.array([s["z_mm"] for s in after.slices])
    assert z_after.mean() < z_before.mean() - 0.5
    assert after.probability != pytest.approx(before.probability, abs=1e-9)
    # the per-slice table was rebuilt from the edited ROIs
    assert [r["z_mm"] for r in mrml.rows_from_table_node(after.slice_table_node)] == pytest.approx(z_after.tolist())


def test_segmentation_without_rois_is_rejected(scenario):
    scene = scenario["scene"]
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "unrelated")
    seg.GetSegmentation().AddEmptySegment("tumour")
    with pytest.raises(InputError, match="none of the segments"):
        mrml_logic.classify_volume_node(scene, scenario["t1_node"], mrml_logic.DEMO_MODEL_ID,
                                        roi_segmentation_node=seg)
    with pytest.raises(InputError, match="not in the local catalogue"):
        mrml_logic.classify_volume_node(scene, scenario["t1_node"], "no-such-model",
                                        roi_segmentation_node=scenario["seg"])


def test_export_writes_files_and_refuses_overwrite(scenario, tmp_path):
    out = scenario["outputs"]
    kwargs = dict(t1_node=scenario["t1_node"], heatmap_node=out.heatmap_node,
                  roi_segmentation_node=scenario["seg"], summary_table_node=out.summary_table_node,
                  slice_table_node=out.slice_table_node)
    written = mrml_logic.export_results(tmp_path, **kwargs)
    names = {p.name for p in written}
    assert {"result.json", "result.csv", "slices.csv", "gradcam.nii.gz", "roi_segmentation.seg.nrrd",
            "roi_labels.nii.gz", "roi_labels.csv", "overlay_rois.png", "overlay_gradcam.png"} == names
    doc = json.loads((tmp_path / "result.json").read_text())
    assert doc["probability"] == pytest.approx(out.probability)
    assert len(doc["slices"]) == len(out.slices)
    heat = imageio.load_volume(tmp_path / "gradcam.nii.gz")
    t1 = imageio.load_volume(scenario["t1_path"])
    assert heat.same_grid(t1)
    rois = imageio.load_volume(tmp_path / "roi_labels.nii.gz")
    assert rois.same_grid(t1) and set(np.unique(rois.array)) - {0} == set(anatomy.LABEL_VALUES[n]
                                                                            for n in anatomy.DEEP_GREY_ROIS)
    assert (tmp_path / "overlay_gradcam.png").stat().st_size > 5000

    stamp = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    (tmp_path / "result.json").write_text("user's own file")
    with pytest.raises(OutputExistsError, match="result.json"):
        mrml_logic.export_results(tmp_path, **kwargs)
    assert (tmp_path / "result.json").read_text() == "user's own file"
    assert {p.name for p in tmp_path.iterdir() if not p.name.startswith(".")} == set(stamp)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".staging")]
    # with explicit permission (the GUI asks first) the files are replaced
    mrml_logic.export_results(tmp_path, overwrite=True, figures=False, **kwargs)
    assert json.loads((tmp_path / "result.json").read_text())["probability"] == pytest.approx(out.probability)
