"""Deep grey-matter ROIs by atlas registration, checked against the phantom's own labels.

The built-in atlas is made from phantom seeds 9001+; every phantom here has another
seed, preset, orientation or intensity scaling.
"""
from __future__ import annotations

import csv

import numpy as np
import pytest

from NeonatalBrainLib import anatomy
from NeonatalBrainLib.imageio import InputError, Volume, load_volume, resample_to_grid, save_volume
from NeonatalBrainLib.progress import OperationCancelled, Progress
from NeonatalClassifyLib.atlas import load_atlas, write_atlas
from NeonatalClassifyLib.roi import ROI_NAMES, dice_per_roi, segment_deep_grey

L = anatomy.LABEL_VALUES


def _check_dice(result, truth: np.ndarray, gp_min=0.8, mean_min=0.85, each_min=0.75):
    d = dice_per_roi(result.labels.array, truth)
    assert set(d) == set(anatomy.DEEP_GREY_ROIS)
    assert min(d["globus_pallidus_left"], d["globus_pallidus_right"]) >= gp_min, d
    assert np.mean(list(d.values())) >= mean_min, d
    assert min(d.values()) >= each_min, d
    return d


@pytest.fixture(scope="module")
def term(phantom_t1_only):
    return phantom_t1_only.t1, phantom_t1_only.labels


@pytest.fixture(scope="module")
def term_result(term):
    fractions = []
    res = segment_deep_grey(term[0], progress=lambda f, stage: fractions.append(f))
    res.progress_seen = fractions
    return res


def test_dice_against_phantom_labels_and_output_grid(term, term_result):
    t1, truth = term
    res = term_result
    _check_dice(res, truth.array)
    assert res.labels.shape == t1.shape
    np.testing.assert_array_equal(res.labels.affine, t1.affine)
    assert np.issubdtype(res.labels.array.dtype, np.integer)
    assert set(np.unique(res.labels.array)) == {0, *ROI_NAMES}
    assert res.names == {L[n]: n for n in anatomy.DEEP_GREY_ROIS}
    assert res.atlas_name == "neonatal-phantom"
    assert res.atlas_checksum == load_atlas("neonatal-phantom").checksum
    assert res.timings["total_s"] > 0


def test_left_labels_lie_at_negative_x_of_the_midline(term, term_result):
    t1, truth = term
    brain = np.isin(truth.array, list(range(1, 21)))
    midline_x = t1.ijk_to_ras(np.argwhere(brain))[:, 0].mean()
    for s in anatomy.DEEP_GREY_STRUCTURES:
        xl = t1.ijk_to_ras(np.argwhere(term_result.mask(f"{s}_left")))[:, 0]
        xr = t1.ijk_to_ras(np.argwhere(term_result.mask(f"{s}_right")))[:, 0]
        assert np.all(xl < midline_x) and np.all(xr > midline_x), s


def _reorient(vol: Volume, perm, flips) -> Volume:
    """Same image, other voxel order: axes permuted then flipped (affine adjusted)."""
    a = np.transpose(vol.array, perm)
    aff = vol.affine.copy()
    aff[:3, :3] = vol.affine[:3, :3][:, perm]
    for ax in flips:
        aff[:3, 3] = aff[:3, 3] + aff[:3, ax] * (a.shape[ax] - 1)
        aff[:3, ax] = -aff[:3, ax]
        a = np.flip(a, ax)
    return Volume(np.ascontiguousarray(a), aff)


def _rotation(deg_x, deg_z):
    ax, az = np.deg2rad([deg_x, deg_z])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ rx


def test_lps_oblique_anisotropic_rescaled_input(term):
    t1, truth = term
    # oblique, anisotropic grid (0.8 x 0.8 x 1.6 mm) rotated 15 / 12 degrees about the head centre
    centre = t1.ijk_to_ras((np.array(t1.shape) - 1) / 2)[0]
    m = _rotation(15, 12) @ np.diag([0.8, 0.8, 1.6])
    shape = (150, 175, 72)
    aff = np.eye(4)
    aff[:3, :3] = m
    aff[:3, 3] = centre - m @ ((np.array(shape) - 1) / 2)
    grid = Volume(np.zeros(shape, np.uint8), aff)
    t1o = resample_to_grid(t1, grid, interpolation="linear")
    labo = resample_to_grid(truth, grid, interpolation="nearest")
    # LPS-like voxel order, scanner scaling and offset
    t1o = _reorient(t1o, (1, 0, 2), (0, 1))
    labo = _reorient(labo, (1, 0, 2), (0, 1))
    t1o = t1o.with_array(t1o.array * 0.0137 + 42.0)
    res = segment_deep_grey(t1o)
    assert res.labels.same_grid(t1o)
    _check_dice(res, labo.array)


def test_injured_brain_still_registers(injured_phantom_dir):
    t1 = load_volume(injured_phantom_dir / "t1.nii.gz")
    truth = load_volume(injured_phantom_dir / "labels.nii.gz")
    # the lesion is real: GP brighter than putamen in this phantom
    gp = t1.array[np.isin(truth.array, [L["globus_pallidus_left"], L["globus_pallidus_right"]])].mean()
    put = t1.array[np.isin(truth.array, [L["putamen_left"], L["putamen_right"]])].mean()
    assert gp > 1.15 * put
    _check_dice(segment_deep_grey(t1), truth.array)


def test_cli_on_other_preset_low_snr_oblique(tmp_path):
    from NeonatalBrainLib.cli import main
    from NeonatalBrainLib.phantom import generate_phantom

    ph = generate_phantom(seed=7, preset="oblique_low_snr", modalities=("t1",))
    save_volume(ph.t1, tmp_path / "t1.nii.gz")
    out = tmp_path / "roi"
    assert main(["roi", str(tmp_path / "t1.nii.gz"), "--out", str(out), "--quiet"]) == 0
    labels = load_volume(out / "roi_labels.nii.gz")
    assert labels.same_grid(ph.t1, atol_mm=1e-3)
    with open(out / "roi_labels.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["value", "name"]
    table = {int(v): n for v, n in rows[1:]}
    assert set(anatomy.DEEP_GREY_ROIS) <= set(table.values())
    assert all(L[n] == v for v, n in table.items())
    d = dice_per_roi(labels.array, ph.labels.array)
    assert min(d["globus_pallidus_left"], d["globus_pallidus_right"]) >= 0.75, d
    assert np.mean(list(d.values())) >= 0.8, d
    # a second run into the same folder is refused (exit 2), nothing overwritten
    before = (out / "roi_labels.nii.gz").stat().st_mtime_ns
    assert main(["roi", str(tmp_path / "t1.nii.gz"), "--out", str(out), "--quiet"]) == 2
    assert (out / "roi_labels.nii.gz").stat().st_mtime_ns == before


def test_multi_atlas_folder_with_two_subjects(tmp_path, term):
    t1, truth = term
    base = load_atlas("neonatal-phantom")
    a_t1, a_lab = base.subjects[0]
    # second atlas subject: the first one seen through a 6 % larger, shifted grid
    aff = a_t1.affine.copy()
    aff[:3, :3] *= 1.06
    aff[:3, 3] += np.array([2.0, -3.0, 1.0])
    # the user atlas uses its own label values (project value + 100): mapped by name
    lab_u = np.where(a_lab.array > 0, a_lab.array.astype(np.int32) + 100, 0).astype(np.uint8)
    table_u = {v + 100: n for v, n in base.label_table.items()}
    s1 = (a_t1, a_lab.with_array(lab_u))
    s2 = (Volume(a_t1.array, aff), Volume(lab_u, aff))
    folder = write_atlas(tmp_path / "two", [("one", *s1), ("two", *s2)], table_u)
    atlas = load_atlas(folder)
    res = segment_deep_grey(t1, folder)
    assert len(res.metric_values) == 2
    assert res.atlas_name == "two" and res.atlas_checksum == atlas.checksum
    assert res.atlas_checksum != base.checksum
    assert set(np.unique(res.labels.array)) == {0, *ROI_NAMES}  # project values, not 109..116
    _check_dice(res, truth.array, mean_min=0.8)


def test_bad_inputs(tmp_path, term):
    t1, _ = term
    with pytest.raises(InputError, match="3D"):
        segment_deep_grey(Volume(np.ones((20, 20), np.float32), np.eye(4)))
    with pytest.raises(InputError, match="constant"):
        segment_deep_grey(t1.with_array(np.full(t1.shape, 5.0, np.float32)))
    with pytest.raises(InputError, match="not a built-in atlas"):
        segment_deep_grey(t1, "no-such-atlas")
    noise = np.random.default_rng(1).random((30, 30, 30)).astype(np.float32)
    with pytest.raises(InputError, match="implausible for a neonatal head"):
        segment_deep_grey(Volume(noise, np.eye(4)))
    with pytest.raises(InputError, match="field of view .* implausible"):  # voxel size in cm
        segment_deep_grey(Volume(t1.array, t1.affine @ np.diag([10.0, 10.0, 10.0, 1.0])))
    with pytest.raises(InputError, match="head found .* implausible"):  # voxel size 0.3 x
        segment_deep_grey(Volume(t1.array, t1.affine @ np.diag([0.3, 0.3, 0.3, 1.0])))
    # a 4D file through the CLI: exit status 2, no output written
    import SimpleITK as sitk

    from NeonatalBrainLib.cli import main

    img = sitk.GetImageFromArray(np.random.default_rng(0).random((3, 8, 9, 10)).astype(np.float32))
    sitk.WriteImage(img, str(tmp_path / "four_d.nii.gz"))
    assert main(["roi", str(tmp_path / "four_d.nii.gz"), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert not (tmp_path / "o" / "roi_labels.nii.gz").exists()


def test_progress_reported_and_cancellation(term, term_result):
    f = term_result.progress_seen
    assert len(f) >= 4 and f[-1] == 1.0 and all(b >= a for a, b in zip(f, f[1:]))
    prog = Progress()
    prog.cancel()
    with pytest.raises(OperationCancelled):
        segment_deep_grey(term[0], progress=prog)
