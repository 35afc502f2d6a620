"""NeonatalBrainLib.mrml on real slicer-core nodes and real files (headless MRML scene)."""
from __future__ import annotations

import json

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
nib = pytest.importorskip("nibabel")
nrrd = pytest.importorskip("nrrd")

from NeonatalBrainLib import centerline, imageio, mrml  # noqa: E402
from NeonatalBrainLib.imageio import InputError, Volume  # noqa: E402
from NeonatalBrainLib.outputs import OutputExistsError  # noqa: E402


def rotation(axis, degrees):
    """3x3 rotation about a unit axis (Rodrigues)."""
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    t = np.deg2rad(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def oblique_affine(spacing=(0.5, 0.7, 2.0), origin=(12.5, -30.25, 7.0), flip=(1, 1, 1)):
    aff = np.eye(4)
    aff[:3, :3] = rotation((1, 2, 3), 23.0) @ np.diag(np.multiply(spacing, flip))
    aff[:3, 3] = origin
    return aff


def node_matrix(node, getter="GetIJKToRASMatrix"):
    import vtk

    m = vtk.vtkMatrix4x4()
    getattr(node, getter)(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


@pytest.fixture
def labels_volume():
    lab = np.zeros((24, 20, 9), np.uint8)
    lab[2:9, 3:10, 1:4] = 13       # globus_pallidus_left
    lab[12:20, 3:10, 1:4] = 14     # globus_pallidus_right
    lab[5:15, 12:18, 4:8] = 15     # thalamus_left
    return Volume(lab, oblique_affine())


NAMES = {13: "globus_pallidus_left", 14: "globus_pallidus_right", 15: "thalamus_left"}


# ----------------------------------------------------------------------------- harness
def test_fixture_registers_logics_and_util_helpers(mrml_scene):
    scene = mrml_scene.scene
    assert scene.GetFirstNodeByName("default").IsA("vtkMRMLCrosshairNode")
    for module_name in ("Colors", "Volumes", "Segmentations", "Markups", "Tables", "SubjectHierarchy", "Data"):
        assert mrml_scene.app_logic.GetModuleLogic(module_name) is mrml_scene.logic(module_name)
        assert mrml_scene.logic(module_name).GetMRMLScene() is scene
    assert slicer.mrmlScene is scene
    assert slicer.modules.volumes.logic() is mrml_scene.volumes_logic
    assert scene.GetNodeByID("vtkMRMLColorTableNodeGrey") is not None
    node = slicer.util.addVolumeFromArray(np.arange(60, dtype=np.float32).reshape(3, 4, 5), name="probe")
    assert slicer.util.getNode("probe") is node
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    assert seg.GetSegmentation().AddEmptySegment("s1") == "s1"


def test_mrml_context_restores_slicer_globals():
    from fixtures_mrml import mrml_context

    before = {n: getattr(slicer, n, None) for n in ("mrmlScene", "modules")}
    with mrml_context() as ctx:
        assert slicer.mrmlScene is ctx.scene
    assert {n: getattr(slicer, n, None) for n in ("mrmlScene", "modules")} == before


# ----------------------------------------------------------------------------- volumes
@pytest.mark.parametrize("flip", [(1, 1, 1), (-1, -1, 1), (-1, 1, 1)], ids=["ras-like", "lps-like", "left-handed"])
def test_oblique_nifti_to_volume_node(mrml_scene, tmp_path, flip):
    aff = oblique_affine(flip=flip)
    data = np.random.default_rng(1).normal(100, 20, (16, 12, 7)).astype(np.float32)
    img = nib.Nifti1Image(data, aff)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    path = tmp_path / "oblique.nii.gz"
    nib.save(img, path)

    node = mrml.load_volume_node(mrml_scene.scene, path, name="T1")
    assert node.IsA("vtkMRMLScalarVolumeNode") and not node.IsA("vtkMRMLLabelMapVolumeNode")
    assert node.GetName() == "T1"
    assert node.GetDisplayNode() is not None and node.GetDisplayNode().GetColorNodeID()
    vol = mrml.volume_from_node(node)
    ref = nib.load(path)
    via_nibabel = Volume(np.asarray(ref.dataobj), ref.affine)
    via_imageio = imageio.load_volume(path)
    # the same image in world coordinates, whatever the voxel order
    for other in (via_nibabel, via_imageio):
        matched = mrml.match_voxel_order(vol, other)
        np.testing.assert_allclose(matched.affine, other.affine, atol=1e-4)
        np.testing.assert_array_equal(matched.array, other.array)
    if np.linalg.det(aff[:3, :3]) > 0:
        np.testing.assert_allclose(node.GetSpacing(), np.linalg.norm(aff[:3, :3], axis=0), atol=1e-5)
        np.testing.assert_allclose(node.GetOrigin(), aff[:3, 3], atol=1e-4)
        np.testing.assert_allclose(node_matrix(node), aff, atol=1e-4)
        np.testing.assert_array_equal(vol.array, via_nibabel.array)
    else:
        # Slicer's reader makes left-handed grids right-handed by reversing k (documented in mrml)
        assert np.linalg.det(vol.affine[:3, :3]) > 0
        np.testing.assert_array_equal(vol.array, via_nibabel.array[:, :, ::-1])


def test_match_voxel_order_rejects_other_grids():
    a = Volume(np.zeros((4, 5, 6)), oblique_affine())
    shifted = a.affine.copy()
    shifted[:3, 3] += 0.3
    with pytest.raises(InputError, match="offset"):
        mrml.match_voxel_order(a, Volume(np.zeros((4, 5, 6)), shifted))
    with pytest.raises(InputError, match="rotation"):
        mrml.match_voxel_order(a, Volume(np.zeros((4, 5, 6)), oblique_affine(spacing=(0.5, 0.5, 2.0))))
    perm = a.affine.copy()
    perm[:3, :3] = a.affine[:3, [2, 0, 1]]
    data = np.arange(120.0).reshape(4, 5, 6)
    moved = mrml.match_voxel_order(Volume(data, a.affine), Volume(np.zeros((6, 4, 5)), perm))
    np.testing.assert_array_equal(moved.array, data.transpose(2, 0, 1))


@pytest.mark.parametrize("k_sign", [1, -1], ids=["right-handed", "left-handed"])
@pytest.mark.parametrize("space", ["left-posterior-superior", "right-anterior-superior"])
def test_nrrd_space_to_volume_node(mrml_scene, tmp_path, space, k_sign):
    rot = rotation((0, 1, 1), -17.0)
    directions = rot @ np.diag([0.6, 0.6, 1.5 * k_sign])  # columns = i, j, k steps in the file's space
    origin = np.array([-20.0, 14.0, -3.5])
    data = (np.arange(10 * 11 * 6) % 7).reshape(10, 11, 6).astype(np.int16)
    path = tmp_path / "labels.nrrd"
    nrrd.write(str(path), data, {"space": space, "space directions": directions.T,
                                 "space origin": origin, "kinds": ["domain"] * 3})
    flip = np.diag([-1.0, -1.0, 1.0]) if space.startswith("left") else np.eye(3)
    expected = np.eye(4)
    expected[:3, :3] = flip @ directions
    expected[:3, 3] = flip @ origin

    node = mrml.load_volume_node(mrml_scene.scene, path, labelmap=True)
    assert node.IsA("vtkMRMLLabelMapVolumeNode")
    vol = mrml.volume_from_node(node)
    assert vol.array.dtype == np.int16
    matched = mrml.match_voxel_order(vol, Volume(data, expected))
    np.testing.assert_array_equal(matched.array, data)
    if k_sign > 0:
        np.testing.assert_allclose(vol.affine, expected, atol=1e-5)
        np.testing.assert_array_equal(vol.array, data)
    np.testing.assert_allclose(imageio.load_volume(path).affine, expected, atol=1e-5)


def test_volume_node_numpy_round_trip_and_update_in_place(mrml_scene):
    scene = mrml_scene.scene
    aff = oblique_affine(spacing=(0.8, 0.9, 1.1), flip=(-1, 1, -1))
    data = np.random.default_rng(2).random((9, 7, 5)).astype(np.float32)
    node = mrml.volume_node_from_volume(scene, Volume(data, aff), "swi")
    np.testing.assert_allclose(node_matrix(node), aff, atol=1e-12)
    # slicer.util's own accessor uses VTK's [k, j, i] order: an independent check of the voxel order
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), data.transpose(2, 1, 0))
    back = mrml.volume_from_node(node)
    assert back.array.dtype == np.float32
    np.testing.assert_array_equal(back.array, data)
    np.testing.assert_allclose(back.affine, aff, atol=1e-12)
    ijk = np.array([[3, 2, 4], [0, 0, 0], [8, 6, 1]])
    np.testing.assert_allclose(back.ijk_to_ras(ijk), (aff @ np.c_[ijk, np.ones(3)].T).T[:, :3])

    node_id = node.GetID()
    aff2 = oblique_affine(spacing=(1.0, 1.0, 1.0))
    data2 = np.zeros((4, 5, 6), np.int16)
    data2[1, 2, 3] = 7
    same = mrml.volume_node_from_volume(scene, Volume(data2, aff2), "swi", node=node)
    assert same.GetID() == node_id
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 1
    back2 = mrml.volume_from_node(same)
    np.testing.assert_array_equal(back2.array, data2)
    np.testing.assert_allclose(back2.affine, aff2, atol=1e-12)


def test_volume_from_node_applies_linear_parent_transform(mrml_scene):
    import vtk

    scene = mrml_scene.scene
    node = mrml.volume_node_from_volume(scene, Volume(np.ones((3, 3, 3), np.float32), np.eye(4)), "v")
    tnode = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 5.0)
    tnode.SetMatrixTransformToParent(shift)
    node.SetAndObserveTransformNodeID(tnode.GetID())
    np.testing.assert_allclose(mrml.volume_from_node(node).affine[:3, 3], [5.0, 0.0, 0.0])


def test_bad_volume_inputs_raise_input_error(mrml_scene, tmp_path):
    with pytest.raises(InputError, match="not found"):
        mrml.load_volume_node(mrml_scene.scene, tmp_path / "missing.nii.gz")
    corrupt = tmp_path / "corrupt.nrrd"
    corrupt.write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 4 4 4\nencoding: raw\n\n\x00\x01")
    with pytest.raises(InputError, match="corrupt.nrrd"):
        mrml.load_volume_node(mrml_scene.scene, corrupt)
    table = mrml_scene.scene.AddNewNodeByClass("vtkMRMLTableNode", "tbl")
    with pytest.raises(InputError, match="tbl"):
        mrml.volume_from_node(table)
    with pytest.raises(InputError, match="integers"):
        mrml.volume_node_from_volume(mrml_scene.scene, Volume(np.full((2, 2, 2), 0.5), np.eye(4)), "x",
                                     labelmap=True)


# ----------------------------------------------------------------------------- segmentations
def test_labels_to_segmentation_and_back(mrml_scene, labels_volume):
    scene = mrml_scene.scene
    colors = {13: (1.0, 0.0, 0.0), "thalamus_left": (0.0, 0.0, 1.0)}
    seg = mrml.segmentation_node_from_labels(scene, labels_volume, NAMES, colors, name="deep grey")
    segmentation = seg.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    assert ids == list(NAMES.values())
    assert [segmentation.GetSegment(i).GetName() for i in ids] == ids
    np.testing.assert_allclose(segmentation.GetSegment("globus_pallidus_left").GetColor(), (1, 0, 0))
    np.testing.assert_allclose(segmentation.GetSegment("thalamus_left").GetColor(), (0, 0, 1))
    from NeonatalBrainLib import anatomy

    np.testing.assert_allclose(segmentation.GetSegment("globus_pallidus_right").GetColor(),
                               anatomy.color_of("globus_pallidus_right"), atol=1e-6)

    # slicer.util reads one segment on a reference node: independent of the adapter's export
    ref_node = mrml.volume_node_from_volume(scene, labels_volume, "ref", labelmap=True)
    gp_left = slicer.util.arrayFromSegmentBinaryLabelmap(seg, "globus_pallidus_left", ref_node)
    np.testing.assert_array_equal(gp_left.transpose(2, 1, 0) > 0, labels_volume.array == 13)

    back, table = mrml.labels_from_segmentation_node(seg, labels_volume)
    assert table == NAMES
    np.testing.assert_array_equal(back.array, labels_volume.array)
    np.testing.assert_allclose(back.affine, labels_volume.affine)

    # values stay attached to names when a segment is removed
    segmentation.RemoveSegment("globus_pallidus_right")
    back2, table2 = mrml.labels_from_segmentation_node(seg, labels_volume)
    assert table2 == {13: "globus_pallidus_left", 15: "thalamus_left"}
    expected = labels_volume.array.copy()
    expected[expected == 14] = 0
    np.testing.assert_array_equal(back2.array, expected)


def test_segmentation_rejects_unnamed_values(mrml_scene, labels_volume):
    with pytest.raises(InputError, match=r"\[15\]"):
        mrml.segmentation_node_from_labels(mrml_scene.scene, labels_volume, {13: "a", 14: "b"})


def test_segmentation_seg_nrrd_round_trip(mrml_scene, labels_volume, tmp_path):
    scene = mrml_scene.scene
    seg = mrml.segmentation_node_from_labels(scene, labels_volume, NAMES, name="rois")
    path = mrml.save_segmentation(seg, tmp_path / "rois.seg.nrrd")
    header = nrrd.read_header(str(path))
    assert header["Segment0_Name"] == "globus_pallidus_left" and header["Segment0_LabelValue"] == "13"
    with pytest.raises(OutputExistsError):
        mrml.save_segmentation(seg, path)

    loaded = mrml.load_segmentation(scene, path)
    s = loaded.GetSegmentation()
    assert [s.GetNthSegmentID(i) for i in range(s.GetNumberOfSegments())] == list(NAMES.values())
    for sid in NAMES.values():
        np.testing.assert_allclose(s.GetSegment(sid).GetColor(),
                                   seg.GetSegmentation().GetSegment(sid).GetColor(), atol=1e-3)
    back, table = mrml.labels_from_segmentation_node(loaded, labels_volume)
    assert table == NAMES
    np.testing.assert_array_equal(back.array, labels_volume.array)


# ----------------------------------------------------------------------------- tables
def test_rows_table_csv_round_trip(mrml_scene, tmp_path):
    pd = pytest.importorskip("pandas")
    rows = [
        {"vessel_id": 1, "region": "dmv", "width_mm": 0.62, "curvature_per_mm": 0.031},
        {"vessel_id": 2, "region": "thalamic", "width_mm": 1.25, "curvature_per_mm": float("nan")},
        {"vessel_id": 3, "region": "dmv", "width_mm": 0.4, "curvature_per_mm": 0.1},
    ]
    node = mrml.table_node_from_rows(mrml_scene.scene, rows, "vessels")
    assert node.GetNumberOfRows() == 3 and node.GetNumberOfColumns() == 4
    assert node.GetColumnUnitLabel("width_mm") == "mm"
    assert node.GetColumnUnitLabel("curvature_per_mm") == "1/mm"
    back = mrml.rows_from_table_node(node)
    assert [r["vessel_id"] for r in back] == [1, 2, 3]
    assert isinstance(back[0]["vessel_id"], int) and isinstance(back[0]["width_mm"], float)
    assert np.isnan(back[1]["curvature_per_mm"])
    assert back[2]["region"] == "dmv"

    csv_path = mrml.save_table_csv(node, tmp_path / "vessels.csv")
    assert (tmp_path / "vessels.schema.csv").is_file()
    df = pd.read_csv(csv_path)
    assert list(df.columns) == ["vessel_id", "region", "width_mm", "curvature_per_mm"]
    assert df["vessel_id"].dtype.kind == "i" and df["width_mm"].dtype.kind == "f"
    np.testing.assert_allclose(df["width_mm"], [0.62, 1.25, 0.4])
    with pytest.raises(OutputExistsError):
        mrml.save_table_csv(node, csv_path)
    user_schema = tmp_path / "other.schema.csv"
    user_schema.write_text("user's own file")
    with pytest.raises(OutputExistsError, match="other.schema.csv"):
        mrml.save_table_csv(node, tmp_path / "other.csv")
    assert user_schema.read_text() == "user's own file" and not (tmp_path / "other.csv").exists()

    # a DataFrame in, updating the same node
    same = mrml.table_node_from_rows(mrml_scene.scene, df, "vessels", node=node)
    assert same is node
    assert [r["width_mm"] for r in mrml.rows_from_table_node(node)] == pytest.approx([0.62, 1.25, 0.4])

    # Slicer's own reader takes the CSV back with the schema's types
    reread = mrml_scene.scene.AddNewNodeByClass("vtkMRMLTableNode")
    storage = slicer.vtkMRMLTableStorageNode()
    storage.SetFileName(str(csv_path))
    assert storage.ReadData(reread)
    again = mrml.rows_from_table_node(reread)
    assert [r["vessel_id"] for r in again] == [1, 2, 3]
    assert again[0]["width_mm"] == pytest.approx(0.62)


# ----------------------------------------------------------------------------- curves
def helix(n=80):
    t = np.linspace(0, 3 * np.pi, n)
    return np.c_[4 * np.cos(t) - 20.0, 4 * np.sin(t) + 5.0, 1.5 * t - 10.0]


def test_curve_node_length_matches_centerline(mrml_scene, tmp_path):
    pts = helix()
    node = mrml.curve_node_from_points(mrml_scene.scene, pts, "dmv_1", color=(0, 0.75, 1))
    assert node.GetNumberOfControlPoints() == len(pts)
    np.testing.assert_allclose(mrml.points_from_curve_node(node), pts, atol=1e-4)
    assert node.GetCurveLengthWorld() == pytest.approx(centerline.arc_length_mm(pts), rel=1e-5)

    path = mrml.save_markups(node, tmp_path / "dmv_1.mrk.json")
    data = json.loads(path.read_text())
    markup = data["markups"][0]
    assert markup["type"] == "Curve" and markup["coordinateSystem"] in ("LPS", "RAS")
    first = np.array(markup["controlPoints"][0]["position"])
    expect = pts[0] * ([-1, -1, 1] if markup["coordinateSystem"] == "LPS" else 1)
    np.testing.assert_allclose(first, expect, atol=1e-4)
    with pytest.raises(OutputExistsError):
        mrml.save_markups(node, path)

    loaded = mrml.load_markups(mrml_scene.scene, path)
    assert loaded.IsA("vtkMRMLMarkupsCurveNode")
    np.testing.assert_allclose(mrml.points_from_curve_node(loaded), pts, atol=1e-4)
    assert loaded.GetCurveLengthWorld() == pytest.approx(centerline.arc_length_mm(pts), rel=1e-5)


def test_bad_curve_points(mrml_scene):
    with pytest.raises(InputError, match="dmv"):
        mrml.curve_node_from_points(mrml_scene.scene, np.zeros((5, 2)), "dmv")


# ----------------------------------------------------------------------------- subject hierarchy
def test_subject_hierarchy_folders(mrml_scene):
    scene = mrml_scene.scene
    sh = scene.GetSubjectHierarchyNode()
    top = mrml.subject_hierarchy_folder(scene, "NeonatalVessels")
    assert top and mrml.subject_hierarchy_folder(scene, "NeonatalVessels") == top
    sub = mrml.subject_hierarchy_folder(scene, "curves", parent=top)
    assert sh.GetItemParent(sub) == top and sh.GetItemName(sub) == "curves"
    node = mrml.curve_node_from_points(scene, helix(10), "c")
    item = mrml.place_in_folder(scene, node, sub)
    assert sh.GetItemParent(item) == sub and sh.GetItemDataNode(item) is node
    assert mrml.place_in_folder(scene, node, top) == item and sh.GetItemParent(item) == top


# ----------------------------------------------------------------------------- updates in place, fallbacks
def test_segmentation_reference_geometry_and_update_in_place(mrml_scene, labels_volume):
    scene = mrml_scene.scene
    fine_affine = labels_volume.affine.copy()
    fine_affine[:3, :3] /= 2
    fine = Volume(np.zeros(tuple(2 * s for s in labels_volume.shape), np.uint8), fine_affine)
    ref_node = mrml.volume_node_from_volume(scene, fine, "fine reference")
    seg = mrml.segmentation_node_from_labels(scene, labels_volume, NAMES, reference_volume_node=ref_node)
    geometry = seg.GetSegmentation().GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
    values = [float(v) for v in geometry.split(";") if v]
    np.testing.assert_allclose(np.reshape(values[:16], (4, 4)), fine_affine, atol=1e-6)
    assert values[16:] == [0, fine.shape[0] - 1, 0, fine.shape[1] - 1, 0, fine.shape[2] - 1]

    # export onto the finer grid: each coarse voxel becomes 2 x 2 x 2 fine voxels
    on_fine, _ = mrml.labels_from_segmentation_node(seg, fine)
    for value in NAMES:
        assert (on_fine.array == value).sum() == 8 * (labels_volume.array == value).sum()

    only_thalamus = labels_volume.with_array(np.where(labels_volume.array == 15, 15, 0).astype(np.uint8))
    same = mrml.segmentation_node_from_labels(scene, only_thalamus, {15: "thalamus_left"}, node=seg)
    assert same is seg and seg.GetSegmentation().GetNumberOfSegments() == 1
    back, table = mrml.labels_from_segmentation_node(seg, labels_volume)
    assert table == {15: "thalamus_left"}
    np.testing.assert_array_equal(back.array, only_thalamus.array)


def test_curve_update_in_place_keeps_node(mrml_scene):
    pts = helix(40)
    node = mrml.curve_node_from_points(mrml_scene.scene, pts, "v1")
    assert node.GetLocked()
    shorter = pts[::4] + 1.0
    same = mrml.curve_node_from_points(mrml_scene.scene, shorter, "v1", node=node)
    assert same is node and node.GetNumberOfControlPoints() == len(shorter)
    assert node.GetCurveLengthWorld() == pytest.approx(centerline.arc_length_mm(shorter), rel=1e-5)


def test_load_volume_node_without_volumes_logic(tmp_path):
    """A bare scene (no application logic) reads through a storage node, still in RAS."""
    aff = oblique_affine(flip=(-1, 1, 1))
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    path = tmp_path / "bare.nii.gz"
    nib.save(nib.Nifti1Image(data, aff), path)
    scene = slicer.vtkMRMLScene()
    node = mrml.load_volume_node(scene, path, name="bare")
    assert node.GetStorageNode() is not None and node.GetName() == "bare"
    vol = mrml.match_voxel_order(mrml.volume_from_node(node), Volume(data, aff))
    np.testing.assert_array_equal(vol.array, data)


def test_values_survive_segment_editing(mrml_scene, labels_volume):
    """Editing a segment moves it to its own layer with LabelValue 1; the export still gives its value."""
    scene = mrml_scene.scene
    seg = mrml.segmentation_node_from_labels(scene, labels_volume, NAMES)
    ref = mrml.volume_node_from_volume(scene, labels_volume, "ref", labelmap=True)
    edited = np.zeros(labels_volume.shape, np.uint8)
    edited[16:22, 12:18, 5:8] = 1  # clear of the other segments
    slicer.util.updateSegmentBinaryLabelmapFromArray(edited.transpose(2, 1, 0), seg, "globus_pallidus_left", ref)
    segment = seg.GetSegmentation().GetSegment("globus_pallidus_left")
    assert segment.GetLabelValue() != 13  # Slicer renumbered it in its new layer
    back, table = mrml.labels_from_segmentation_node(seg, labels_volume)
    assert table == NAMES
    assert ((back.array == 13) == (edited == 1)).all()
    expected_14 = labels_volume.array == 14
    np.testing.assert_array_equal(back.array == 14, expected_14)
