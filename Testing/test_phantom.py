"""The digital neonatal phantom: file contract, truth, anatomy orientation, determinism."""
from __future__ import annotations

import json

import numpy as np
import pytest

from NeonatalBrainLib import centerline
from NeonatalBrainLib.anatomy import LABELS, LABEL_VALUES, read_label_table
from NeonatalBrainLib.imageio import InputError, load_volume, sha256_file
from NeonatalBrainLib.outputs import OutputExistsError

CONTRACT = {
    "t1.nii.gz": np.float32, "labels.nii.gz": np.uint8, "brain_mask.nii.gz": np.uint8,
    "swi.nii.gz": np.float32, "swi_labels.nii.gz": np.uint8, "swi_brain_mask.nii.gz": np.uint8,
    "swi_ventricles.nii.gz": np.uint8, "vessel_labels.nii.gz": np.uint16,
}
SUMMARY_KEYS = {"dmv_count", "dmv_count_left", "dmv_count_right", "dmv_width_mm", "dmv_tortuosity",
                "dmv_curvature_per_mm", "thalamic_vein_width_mm_left", "thalamic_vein_width_mm_right",
                "anterior_caudate_vein_width_mm_left", "anterior_caudate_vein_width_mm_right"}


def _segment_distances(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Distance (mm) of each point to a polyline, to within 0.001 mm (densified to 0.02 mm)."""
    from scipy.spatial import cKDTree

    dense = centerline.resample_polyline(line, 0.02)
    return cKDTree(dense).query(points)[0]


@pytest.fixture(scope="module")
def vessels_json(phantom_dir):
    return json.loads((phantom_dir / "vessels.json").read_text())


def test_files_follow_the_contract(phantom_dir):
    names = sorted(p.name for p in phantom_dir.iterdir())
    assert names == sorted(list(CONTRACT) + ["vessels.json", "labels.csv", "subject.json"])
    vols = {name: load_volume(phantom_dir / name) for name in CONTRACT}
    for name, dtype in CONTRACT.items():
        assert vols[name].array.dtype == dtype, name
    for name in ("labels.nii.gz", "brain_mask.nii.gz"):
        assert vols[name].same_grid(vols["t1.nii.gz"])
    for name in ("swi_labels.nii.gz", "swi_brain_mask.nii.gz", "swi_ventricles.nii.gz", "vessel_labels.nii.gz"):
        assert vols[name].same_grid(vols["swi.nii.gz"])
    assert np.allclose(vols["swi.nii.gz"].spacing_mm, [0.5, 0.5, 2.0])
    assert np.allclose(vols["t1.nii.gz"].spacing_mm, [0.9, 0.9, 0.9])
    assert read_label_table(phantom_dir / "labels.csv") == LABELS
    present = set(np.unique(vols["labels.nii.gz"].array)) - {0}
    assert present == set(LABELS)
    assert set(np.unique(vols["brain_mask.nii.gz"].array)) == {0, 1}
    subject = json.loads((phantom_dir / "subject.json").read_text())
    assert subject["seed"] == 0 and subject["preset"] == "term_3t"
    assert subject["grids"]["swi"]["shape"] == list(vols["swi.nii.gz"].shape)


def test_term_brain_size_is_neonatal(phantom):
    """Cerebrum (cortex + WM + deep GM + ventricles) ~ 9.5 x 11.5 x 8 cm at term."""
    lab = phantom.labels
    pose = np.array(phantom.subject["brain_to_ras"])
    cerebral = [v for k, v in LABEL_VALUES.items() if k not in ("extracerebral_csf", "brainstem", "cerebellum")]
    ijk = np.argwhere(np.isin(lab.array, cerebral))
    brain_frame = (lab.ijk_to_ras(ijk) - pose[:3, 3]) @ pose[:3, :3]
    extent = brain_frame.max(0) - brain_frame.min(0)
    assert np.all(np.abs(extent - [95, 115, 80]) < [8, 9, 10]), extent
    vol_ml = ijk.shape[0] * np.prod(lab.spacing_mm) / 1000
    assert 250 < vol_ml < 500, vol_ml


def test_left_is_the_patients_left(phantom_dir):
    """Structures named _left lie at smaller RAS x (file read back through SimpleITK's LPS)."""
    import SimpleITK as sitk

    for name in ("labels.nii.gz", "swi_labels.nii.gz"):
        vol = load_volume(phantom_dir / name)
        for structure in ("caudate", "putamen", "globus_pallidus", "thalamus", "plic", "lateral_ventricle",
                          "white_matter", "cortical_gm"):
            cx = {}
            for side in ("left", "right"):
                ijk = np.argwhere(vol.array == LABEL_VALUES[f"{structure}_{side}"])
                cx[side] = vol.ijk_to_ras(ijk)[:, 0].mean()
            assert cx["left"] < cx["right"] - 5, (name, structure, cx)
        # independent check through SimpleITK (LPS): the left hemisphere has larger L coordinate
        img = sitk.ReadImage(str(phantom_dir / name))
        arr = sitk.GetArrayFromImage(img)  # [k, j, i]
        left = np.argwhere(arr == LABEL_VALUES["white_matter_left"])[:, ::-1]
        right = np.argwhere(arr == LABEL_VALUES["white_matter_right"])[:, ::-1]
        lx = np.mean([img.TransformIndexToPhysicalPoint([int(c) for c in p])[0] for p in left[::500]])
        rx = np.mean([img.TransformIndexToPhysicalPoint([int(c) for c in p])[0] for p in right[::500]])
        assert lx > rx  # LPS: +x = patient's left


def test_vessel_json_geometry_is_consistent(vessels_json):
    vessels = vessels_json["vessels"]
    regions = {v["region"] for v in vessels}
    assert {"dmv", "thalamic", "anterior_caudate", "internal_cerebral"} <= regions
    for v in vessels:
        pts = np.asarray(v["centerline_ras_mm"])
        assert centerline.segment_lengths_mm(pts).max() <= 0.25 + 1e-3
        assert v["length_mm"] == pytest.approx(centerline.arc_length_mm(pts), rel=1e-4, abs=1e-3)
        assert v["tortuosity"] == pytest.approx(centerline.tortuosity(pts), rel=1e-4, abs=1e-4)
        assert v["curvature_per_mm"] == pytest.approx(centerline.mean_curvature_per_mm(pts), rel=1e-3, abs=1e-4)
        assert v["side"] in ("left", "right", "midline")
    dmv = [v for v in vessels if v["region"] == "dmv"]
    assert all(0.4 <= v["diameter_mm"] <= 1.6 for v in dmv)
    assert all(1.0 <= v["tortuosity"] < 1.3 for v in dmv)
    n_left = sum(v["side"] == "left" for v in dmv)
    n_right = sum(v["side"] == "right" for v in dmv)
    assert 20 <= n_left <= 40 and 20 <= n_right <= 40
    s = vessels_json["summary"]
    assert set(s) >= SUMMARY_KEYS
    assert s["dmv_count"] == len(dmv) and s["dmv_count_left"] == n_left
    assert s["dmv_width_mm"] == pytest.approx(np.mean([v["diameter_mm"] for v in dmv]), rel=1e-4)
    thal = [v["diameter_mm"] for v in vessels if v["region"] == "thalamic" and v["side"] == "left"]
    assert s["thalamic_vein_width_mm_left"] == pytest.approx(np.mean(thal), rel=1e-4)


def test_dmvs_start_at_the_ventricle_on_their_side(phantom_dir, vessels_json):
    vent = load_volume(phantom_dir / "swi_labels.nii.gz")
    for side in ("left", "right"):
        ijk = np.argwhere(vent.array == LABEL_VALUES[f"lateral_ventricle_{side}"])
        vpts = vent.ijk_to_ras(ijk)
        from scipy.spatial import cKDTree

        tree = cKDTree(vpts)
        for v in vessels_json["vessels"]:
            if v["region"] != "dmv" or v["side"] != side:
                continue
            pts = np.asarray(v["centerline_ras_mm"])
            d_start, _ = tree.query(pts[0])
            d_end, _ = tree.query(pts[-1])
            assert d_start < 3.0 and d_end > 5.0, (v["vessel_id"], d_start, d_end)


def test_dmvs_do_not_touch(vessels_json):
    from scipy.spatial import cKDTree

    dmv = [v for v in vessels_json["vessels"] if v["region"] == "dmv"]
    trees = [cKDTree(np.asarray(v["centerline_ras_mm"])) for v in dmv]
    for a in range(len(dmv)):
        for b in range(a + 1, len(dmv)):
            d = trees[a].sparse_distance_matrix(trees[b], 4.0, output_type="ndarray")
            if len(d):
                gap = d["v"].min() - (dmv[a]["diameter_mm"] + dmv[b]["diameter_mm"]) / 2
                assert gap > 0.5, (dmv[a]["vessel_id"], dmv[b]["vessel_id"], gap)


def test_vessel_labels_agree_with_the_analytic_tubes(phantom_dir, vessels_json):
    """Independent Monte-Carlo volume fractions from the JSON centrelines decide the labels."""
    lab = load_volume(phantom_dir / "vessel_labels.nii.gz")
    rng = np.random.default_rng(1)
    half_diag = 0.5 * np.linalg.norm(lab.spacing_mm)
    checked = 0
    vessels = vessels_json["vessels"]
    labelled = [v for v in vessels if v["n_voxels"] > 0]
    assert sum(v["region"] == "dmv" for v in labelled) >= 15
    for v in vessels[:: max(1, len(vessels) // 14)] + [v for v in vessels if v["region"] != "dmv"]:
        line = np.asarray(v["centerline_ras_mm"])
        r = v["diameter_mm"] / 2
        ijk_line = lab.ras_to_ijk(line)
        lo = np.maximum(np.floor(ijk_line.min(0)) - 4, 0).astype(int)
        hi = np.minimum(np.ceil(ijk_line.max(0)) + 5, lab.shape).astype(int)
        grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3)
        d_centre = _segment_distances(lab.ijk_to_ras(grid), line)
        near = grid[d_centre < r + half_diag]
        far = grid[(d_centre > r + half_diag + 0.05) & (d_centre < r + half_diag + 3)]
        ids_far = lab.array[tuple(far.T)]
        assert not np.any(ids_far == v["vessel_id"]), v["vessel_id"]
        assert np.count_nonzero(lab.array == v["vessel_id"]) == v["n_voxels"]
        sample = near[rng.permutation(len(near))[:40]]
        for vox in sample:
            sub = lab.ijk_to_ras(vox + rng.uniform(-0.5, 0.5, (800, 3)))
            frac = float(np.mean(_segment_distances(sub, line) <= r))
            got = lab.array[tuple(vox)]
            if frac > 0.62:
                assert got != 0, (v["vessel_id"], vox, frac)
                if got != v["vessel_id"]:  # a junction: another vessel covers the voxel as well
                    assert v["region"] != "dmv"
            elif frac < 0.38:
                assert got != v["vessel_id"], (v["vessel_id"], vox, frac)
            checked += 1
    assert checked > 150


def test_swi_contrast(phantom):
    swi, lab, ves = phantom.swi.array, phantom.swi_labels.array, phantom.vessel_labels.array
    csf = np.median(swi[np.isin(lab, [5, 6]) & (ves == 0)])
    wm = np.median(swi[np.isin(lab, [3, 4]) & (ves == 0)])
    gm = np.median(swi[np.isin(lab, [1, 2]) & (ves == 0)])
    vein = np.median(swi[ves > 0])
    assert csf > wm > gm > 2 * vein


def test_t1_contrast(phantom):
    t1, lab = phantom.t1.array, phantom.labels.array
    med = {name: np.median(t1[np.isin(lab, [LABEL_VALUES[f"{name}_left"], LABEL_VALUES[f"{name}_right"]])])
           for name in ("cortical_gm", "white_matter", "plic", "thalamus", "lateral_ventricle")}
    assert med["plic"] > med["thalamus"] > med["white_matter"] > med["lateral_ventricle"]
    assert med["cortical_gm"] > med["white_matter"]


def test_generation_is_deterministic(phantom_dir, tmp_path):
    from NeonatalBrainLib.phantom import write_phantom

    again = write_phantom(tmp_path / "again", seed=0, preset="term_3t")
    for f in sorted(phantom_dir.iterdir()):
        assert sha256_file(f) == sha256_file(again / f.name), f.name


def test_files_open_with_slicer_storage_nodes(phantom_dir):
    slicer = pytest.importorskip("slicer")
    vtk = pytest.importorskip("vtk")
    from vtk.util.numpy_support import vtk_to_numpy
    scene = slicer.vtkMRMLScene()
    t1 = load_volume(phantom_dir / "t1.nii.gz")
    for name, node_class in (("t1.nii.gz", "vtkMRMLScalarVolumeNode"),
                             ("vessel_labels.nii.gz", "vtkMRMLLabelMapVolumeNode"),
                             ("swi.nii.gz", "vtkMRMLScalarVolumeNode")):
        node = scene.AddNewNodeByClass(node_class)
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        scene.AddNode(storage)
        storage.SetFileName(str(phantom_dir / name))
        assert storage.ReadData(node), name
        ref = load_volume(phantom_dir / name)
        m = vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(m)
        ijk_to_ras = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
        # Slicer may store a left-handed grid with one axis flipped: compare world positions.
        arr = vtk_to_numpy(node.GetImageData().GetPointData().GetScalars()).reshape(
            node.GetImageData().GetDimensions()[::-1]).transpose(2, 1, 0)
        assert sorted(arr.shape) == sorted(ref.shape)
        corners_slicer = np.array([[0, 0, 0], np.array(arr.shape) - 1]) @ ijk_to_ras[:3, :3].T + ijk_to_ras[:3, 3]
        corners_ref = ref.ijk_to_ras(np.array([[0, 0, 0], np.array(ref.shape) - 1]))
        assert np.allclose(np.sort(corners_slicer, 0), np.sort(corners_ref, 0), atol=1e-3), name
        if arr.dtype.kind in "ui":
            ijk = np.argwhere(arr > 0)
            centroid = (ijk @ ijk_to_ras[:3, :3].T + ijk_to_ras[:3, 3]).mean(0)
            assert np.allclose(centroid, ref.ijk_to_ras(np.argwhere(ref.array > 0)).mean(0), atol=1e-3), name
        else:
            assert np.isclose(float(arr.mean()), float(ref.array.mean()), rtol=1e-5), name
    assert t1.array.dtype == np.float32


def test_output_folder_must_be_new_or_empty(phantom_dir, tmp_path):
    from NeonatalBrainLib.cli import main
    from NeonatalBrainLib.phantom import write_phantom

    with pytest.raises(OutputExistsError):
        write_phantom(phantom_dir, seed=1, modalities=("t1",))
    assert main(["phantom", "--out", str(phantom_dir), "--modalities", "t1"]) == 2
    with pytest.raises(InputError):
        write_phantom(tmp_path / "x", preset="no_such_preset")
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())
