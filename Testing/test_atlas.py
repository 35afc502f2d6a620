"""Atlas folders: built-in atlas, user atlas round trip, checksums, validation errors."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from NeonatalBrainLib import anatomy
from NeonatalBrainLib.imageio import InputError, Volume, load_volume, save_volume
from NeonatalClassifyLib.atlas import (BUILTIN_ATLASES, REQUIRED_LABEL_NAMES, atlas_checksum, find_builtin_atlas,
                                       load_atlas, write_atlas)


@pytest.fixture(scope="module")
def builtin():
    return load_atlas("neonatal-phantom")


def test_builtin_atlas_is_small_synthetic_and_complete(builtin):
    folder = find_builtin_atlas("neonatal-phantom")
    total = sum(p.stat().st_size for p in folder.iterdir())
    assert total < 2_000_000
    readme = (folder / "README.md").read_text().lower()
    assert "synthetic" in readme and "build_atlas.py" in readme
    assert "neonatal-phantom" in BUILTIN_ATLASES
    assert builtin.name == "neonatal-phantom"
    assert len(builtin.subjects) >= 1
    names = set(builtin.label_table.values())
    assert set(REQUIRED_LABEL_NAMES) <= names
    for t1, lab in builtin.subjects:
        assert t1.same_grid(lab)
        assert np.all(np.isclose(t1.spacing_mm, 1.0))
        present = set(np.unique(lab.array).tolist())
        assert {anatomy.LABEL_VALUES[n] for n in REQUIRED_LABEL_NAMES} <= present
        # left structures of the atlas lie at smaller x (RAS) than right ones
        for s in anatomy.DEEP_GREY_STRUCTURES:
            xl = lab.ijk_to_ras(np.argwhere(lab.array == anatomy.LABEL_VALUES[f"{s}_left"]))[:, 0].mean()
            xr = lab.ijk_to_ras(np.argwhere(lab.array == anatomy.LABEL_VALUES[f"{s}_right"]))[:, 0].mean()
            assert xl < xr


def test_checksum_is_sha256_of_files_and_detects_changes(builtin, tmp_path):
    assert len(builtin.checksum) == 64 and int(builtin.checksum, 16) >= 0
    assert atlas_checksum(builtin) == builtin.checksum
    copy = tmp_path / "copy"
    shutil.copytree(find_builtin_atlas("neonatal-phantom"), copy)
    assert load_atlas(copy).checksum == builtin.checksum  # content, not location
    # change one voxel of the labels -> different checksum
    sid, t1_rel, lab_rel = (copy / "atlas.csv").read_text().splitlines()[1].split(",")
    lab = load_volume(copy / lab_rel)
    arr = lab.array.copy()
    arr[0, 0, 0] = 3
    (copy / lab_rel).unlink()
    save_volume(lab.with_array(arr), copy / lab_rel)
    assert load_atlas(copy).checksum != builtin.checksum


def _small_subject(shift_vox=0, values=None):
    """A 24^3 labelled toy subject holding all eight ROIs (for validation tests)."""
    values = values or {n: anatomy.LABEL_VALUES[n] for n in REQUIRED_LABEL_NAMES}
    lab = np.zeros((24, 24, 24), np.uint8)
    for n, (name, v) in enumerate(values.items()):
        x0 = 2 + 10 * ("right" in name)
        lab[x0:x0 + 8, 2 + 5 * (n // 2):5 + 5 * (n // 2), 8 + shift_vox:16 + shift_vox] = v
    t1 = (lab > 0) * 500.0 + 100.0
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    aff[:3, 3] = -12
    return Volume(t1.astype(np.float32), aff), Volume(lab, aff)


def test_user_atlas_round_trip_with_custom_label_values(tmp_path):
    # a user atlas with its own label values (100+): mapped by name
    values = {n: 100 + i for i, n in enumerate(REQUIRED_LABEL_NAMES)}
    table = {v: n for n, v in values.items()}
    table[200] = "white_matter"
    s1 = _small_subject(0, values)
    s2 = _small_subject(2, values)
    folder = write_atlas(tmp_path / "mine", [("a", *s1), ("b", *s2)], table)
    atlas = load_atlas(folder)
    assert atlas.name == "mine" and atlas.subject_ids == ["a", "b"]
    assert atlas.label_table == table
    assert atlas.roi_values() == values
    for (t1, lab), (t1o, labo) in zip(atlas.subjects, (s1, s2)):
        np.testing.assert_array_equal(lab.array, labo.array)
        np.testing.assert_allclose(lab.affine, labo.affine)
    # refuses to overwrite
    with pytest.raises(FileExistsError):
        write_atlas(folder, [("a", *s1)], table)


def _write_folder(tmp_path, rows, table="value,name\n", name="bad"):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "atlas.csv").write_text(rows)
    if table is not None:
        (folder / "labels.csv").write_text(table)
    return folder


def _good_table():
    return "value,name\n" + "".join(f"{anatomy.LABEL_VALUES[n]},{n}\n" for n in REQUIRED_LABEL_NAMES)


def test_bad_atlas_folders_raise_clear_errors(tmp_path):
    with pytest.raises(InputError, match="no such folder and not a built-in atlas"):
        load_atlas(tmp_path / "nowhere")
    with pytest.raises(InputError, match="not a built-in atlas"):
        load_atlas("dhcp-40w")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="atlas.csv not found"):
        load_atlas(empty)
    f = _write_folder(tmp_path, "subject,image\nx,y\n", name="cols")
    with pytest.raises(InputError, match="missing column"):
        load_atlas(f)
    f = _write_folder(tmp_path, "subject_id,t1,labels\ns1,t1.nii.gz,lab.nii.gz\n", _good_table(), name="nofile")
    with pytest.raises(InputError, match=r"t1 file .*t1.nii.gz not found"):
        load_atlas(f)

    t1, lab = _small_subject()
    f = _write_folder(tmp_path, "subject_id,t1,labels\ns1,t1.nii.gz,lab.nii.gz\n", None, name="notable")
    save_volume(t1, f / "t1.nii.gz")
    save_volume(lab, f / "lab.nii.gz")
    with pytest.raises(InputError, match="labels.csv not found"):
        load_atlas(f)
    (f / "labels.csv").write_text(_good_table().replace("globus_pallidus_left", "gp_l"))
    with pytest.raises(InputError, match="lacks required name.*globus_pallidus_left"):
        load_atlas(f)
    (f / "labels.csv").write_text(_good_table())
    assert load_atlas(f).subject_ids == ["s1"]

    # labels on another grid than their T1
    moved = Volume(lab.array, lab.affine @ np.diag([1.0, 1.0, 1.5, 1.0]))
    (f / "lab.nii.gz").unlink()
    save_volume(moved, f / "lab.nii.gz")
    with pytest.raises(InputError, match="labels is on another grid than .*T1"):
        load_atlas(f)

    # an ROI listed in the table but absent from the labelmap
    arr = lab.array.copy()
    arr[arr == anatomy.LABEL_VALUES["thalamus_right"]] = 0
    (f / "lab.nii.gz").unlink()
    save_volume(lab.with_array(arr), f / "lab.nii.gz")
    with pytest.raises(InputError, match="no voxels carry thalamus_right"):
        load_atlas(f)


def test_atlas_search_path_env(tmp_path, monkeypatch):
    src = find_builtin_atlas("neonatal-phantom")
    shutil.copytree(src, tmp_path / "neonatal-phantom")
    monkeypatch.setenv("NEONATALBRAIN_ATLAS_PATH", str(tmp_path))
    assert find_builtin_atlas("neonatal-phantom") == tmp_path / "neonatal-phantom"
    assert Path(src) != tmp_path / "neonatal-phantom"
