"""Shared core: volume I/O through affines, validation errors, centreline geometry, outputs, progress."""
from __future__ import annotations

import gzip
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from NeonatalBrainLib import centerline
from NeonatalBrainLib.imageio import (InputError, Volume, axis_codes, check_same_grid, load_volume,
                                      resample_to_grid, save_volume, validate_scalar_volume)
from NeonatalBrainLib.outputs import OutputExistsError, staged_output, unique_path
from NeonatalBrainLib.progress import OperationCancelled, Progress


def _oblique_affine(spacing=(0.5, 0.6, 2.0), angle_deg=17.0, origin=(12.0, -30.0, 7.5)):
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag(spacing)
    aff[:3, 3] = origin
    return aff


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".nii", ".mha"])
def test_volume_round_trip_keeps_array_and_affine(tmp_path, suffix):
    rng = np.random.default_rng(1)
    vol = Volume(rng.random((7, 5, 4)).astype(np.float32), _oblique_affine())
    path = save_volume(vol, tmp_path / f"v{suffix}")
    back = load_volume(path)
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-5)


def test_nifti_affine_agrees_with_nibabel_in_ras(tmp_path):
    """nibabel reports NIfTI affines in RAS: our reader (via SimpleITK, LPS) must agree."""
    data = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    aff = np.array([[-0.8, 0, 0, 40.0], [0, 0, 1.0, -20.0], [0, 0.9, 0, 3.0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(data, aff), tmp_path / "n.nii.gz")
    vol = load_volume(tmp_path / "n.nii.gz")
    np.testing.assert_allclose(vol.affine, aff, atol=1e-5)
    np.testing.assert_array_equal(vol.array, data)
    assert axis_codes(vol.affine) == "LSA"


def test_lps_storage_is_converted_to_ras(tmp_path):
    """A SimpleITK image with identity direction is LPS: voxel i increases towards the patient's left."""
    img = sitk.GetImageFromArray(np.zeros((2, 3, 4), np.float32))  # sitk array [k, j, i]
    img.SetOrigin((10.0, 20.0, 30.0))
    sitk.WriteImage(img, str(tmp_path / "lps.nrrd"))
    vol = load_volume(tmp_path / "lps.nrrd")
    assert vol.shape == (4, 3, 2)
    assert axis_codes(vol.affine) == "LPS"
    np.testing.assert_allclose(vol.ijk_to_ras([[0, 0, 0]]), [[-10.0, -20.0, 30.0]])
    np.testing.assert_allclose(vol.ras_to_ijk(vol.ijk_to_ras([[1.5, 2, 1]])), [[1.5, 2, 1]], atol=1e-9)


def test_same_bytes_when_written_twice(tmp_path):
    vol = Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4), _oblique_affine())
    a = save_volume(vol, tmp_path / "a.nii.gz").read_bytes()
    b = save_volume(vol, tmp_path / "b.nii.gz").read_bytes()
    assert a == b
    assert gzip.decompress(a)  # really gzip


@pytest.mark.parametrize("array, affine, message", [
    (np.zeros((4, 4)), np.eye(4), "expected a 3D image, got 2D"),
    (np.zeros((4, 4, 4, 2)), np.eye(4), "expected a 3D image, got 4D"),
    (np.zeros((4, 4, 4)), np.eye(4), "empty (all zero)"),
    (np.full((4, 4, 4), 3.0), np.eye(4), "constant"),
    (np.where(np.eye(4)[:, :, None] > 0, np.nan, 1.0) * np.ones((4, 4, 4)), np.eye(4), "NaN or Inf"),
    (np.random.default_rng(0).random((4, 4, 4)), np.diag([1.0, 0.0, 1.0, 1.0]), "spacing must be positive"),
])
def test_validation_names_the_problem(array, affine, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_scalar_volume(Volume(array, affine), "SWI")


def test_corrupt_and_missing_files_raise_input_error(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(InputError, match="cannot be read"):
        load_volume(bad, "SWI")
    with pytest.raises(InputError, match="file not found"):
        load_volume(tmp_path / "missing.nii.gz", "SWI")


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_truncated_nifti_is_refused_not_read_as_zeros(tmp_path, suffix):
    """SimpleITK reads a NIfTI-1 file cut short (an interrupted copy) without an error, the missing
    voxels as 0; the loader refuses it.  The complete file, and one whose gzip trailer does not give
    the size (a concatenated gzip stream), load unchanged."""
    import gzip

    array = (np.random.default_rng(3).random((20, 24, 16)) * 1000 + 1).astype(np.float32)
    full = save_volume(Volume(array, np.diag([0.5, 0.5, 2.0, 1.0])), tmp_path / f"full{suffix}")
    data = full.read_bytes()
    for fraction in (0.5, 0.99):
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(data[:int(len(data) * fraction)])
        with pytest.raises(InputError, match="truncated"):
            load_volume(cut, "SWI")
    assert np.array_equal(load_volume(full).array, array)
    if suffix == ".nii.gz":
        raw = gzip.decompress(data)
        two_members = tmp_path / "two_members.nii.gz"      # ISIZE then holds the second member's size only
        two_members.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
        assert np.array_equal(load_volume(two_members).array, array)
        two_members.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:-400]))
        with pytest.raises(InputError, match="truncated"):
            load_volume(two_members, "SWI")


def test_zero_padding_box_crop_and_uncrop():
    """Only whole planes of zeros at the faces are padding; a crop keeps every voxel's RAS position
    and the uncrop puts it back."""
    from NeonatalBrainLib.imageio import crop_volume, uncrop_array, zero_padding_box

    rng = np.random.default_rng(4)
    array = np.zeros((12, 10, 8), np.float32)
    array[2:9, 0:10, 3:7] = rng.random((7, 10, 4)) + 0.5
    array[4, 5, 5] = 0.0                                    # a zero inside: stays
    box = zero_padding_box(array)
    assert box == (slice(2, 9), slice(0, 10), slice(3, 7))
    affine = np.array([[0.0, -0.5, 0.0, 10.0], [0.6, 0.0, 0.0, -20.0], [0.0, 0.0, 2.0, 5.0], [0, 0, 0, 1]])
    vol = Volume(array, affine)
    cropped = crop_volume(vol, box)
    assert cropped.shape == (7, 10, 4) and zero_padding_box(cropped.array) is None
    assert np.allclose(cropped.ijk_to_ras([[0, 0, 0], [6, 9, 3]]), vol.ijk_to_ras([[2, 0, 3], [8, 9, 6]]))
    assert np.array_equal(uncrop_array(cropped.array, box, vol.shape), array)
    assert zero_padding_box(np.ones((3, 3, 3))) is None and zero_padding_box(np.zeros((3, 3, 3))) is None
    slanted = np.triu(np.ones((6, 6)))[:, :, None] * np.ones((6, 6, 4))    # a zero wedge, no zero plane
    assert zero_padding_box(slanted) is None


def test_sheared_nifti_is_refused_naming_the_shear(tmp_path):
    import nibabel as nib

    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    affine[0, 1] = 0.05     # the first axis leans on the second: not a rotation times spacings
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((6, 7, 8)).astype(np.float32), affine),
             tmp_path / "sheared.nii.gz")
    with pytest.raises(InputError, match="axes are not orthogonal"):
        load_volume(tmp_path / "sheared.nii.gz", "SWI")


def test_grid_mismatch_is_reported():
    a = Volume(np.zeros((4, 4, 4)), np.eye(4))
    with pytest.raises(InputError, match="shape"):
        check_same_grid(a, Volume(np.zeros((4, 4, 5)), np.eye(4)), "SWI", "brain mask")
    shifted = np.eye(4)
    shifted[0, 3] = 1.0
    with pytest.raises(InputError, match="affines differ"):
        check_same_grid(a, Volume(np.zeros((4, 4, 4)), shifted), "SWI", "brain mask")


def test_resample_to_grid_through_world_coordinates():
    """A volume and its voxel-flipped copy (affine adjusted) resample to the same values."""
    rng = np.random.default_rng(2)
    data = rng.random((6, 7, 8)).astype(np.float32)
    vol = Volume(data, _oblique_affine((1.0, 1.0, 1.0), 0.0))
    flip = vol.affine.copy()
    flip[:3, 0] *= -1
    flip[:3, 3] = vol.ijk_to_ras([[5, 0, 0]])[0]
    flipped = Volume(data[::-1].copy(), flip)
    back = resample_to_grid(flipped, vol, interpolation="nearest")
    np.testing.assert_allclose(back.array, data, atol=1e-6)


def test_centreline_geometry_on_analytic_curves():
    t = np.linspace(0, np.pi, 2000)
    radius = 8.0
    arc = np.stack([radius * np.cos(t), radius * np.sin(t), np.zeros_like(t)], axis=1)
    d = centerline.describe(arc)
    assert d["length_mm"] == pytest.approx(np.pi * radius, rel=1e-4)
    assert d["tortuosity"] == pytest.approx(np.pi / 2, rel=1e-4)
    assert d["curvature_per_mm"] == pytest.approx(1 / radius, rel=2e-3)
    line = np.stack([np.linspace(0, 10, 5), np.zeros(5), np.zeros(5)], axis=1)
    assert centerline.tortuosity(line) == pytest.approx(1.0)
    assert centerline.mean_curvature_per_mm(line) == pytest.approx(0.0, abs=1e-9)
    helix_t = np.linspace(0, 4 * np.pi, 4000)
    helix = np.stack([3 * np.cos(helix_t), 3 * np.sin(helix_t), helix_t], axis=1)
    assert centerline.mean_curvature_per_mm(helix) == pytest.approx(3 / (9 + 1), rel=2e-3)


def test_shape_smoothing_removes_voxel_wiggle_but_keeps_real_tortuosity():
    # a straight 20 mm vein traced with a +-0.15 mm zig-zag every 0.6 mm (voxel staircase)
    x = np.arange(0, 20.01, 0.3)
    wiggle = np.stack([x, 0.15 * (-1.0) ** np.arange(len(x)), np.zeros_like(x)], axis=1)
    assert centerline.describe(wiggle)["tortuosity"] > 1.05
    smoothed = centerline.describe(wiggle, smoothing_mm=1.0)
    assert smoothed["tortuosity"] < 1.003
    assert smoothed["length_mm"] == pytest.approx(centerline.arc_length_mm(wiggle))   # length: of the line given
    # a half circle of radius 8 mm: the smoothing shrinks a bend's arc by ~sigma^2 / (2 R^2)
    # (0.8 %): tortuosity pi / 2 within 1 %, curvature 1/8 within 2 %
    t = np.linspace(0, np.pi, 400)
    arc = np.stack([8 * np.cos(t), 8 * np.sin(t), np.zeros_like(t)], axis=1)
    d = centerline.describe(arc, smoothing_mm=1.0)
    assert d["tortuosity"] == pytest.approx(np.pi / 2, rel=1e-2)
    assert d["tortuosity"] < np.pi / 2
    assert d["curvature_per_mm"] == pytest.approx(1 / 8, rel=2e-2)


def test_resample_polyline_spacing_and_end_points():
    pts = np.array([[0, 0, 0], [3, 0, 0], [3, 4, 0]], float)
    r = centerline.resample_polyline(pts, 0.25)
    steps = np.linalg.norm(np.diff(r, axis=0), axis=1)
    assert steps.max() <= 0.25 + 1e-9
    np.testing.assert_allclose(r[[0, -1]], pts[[0, -1]])
    assert centerline.arc_length_mm(r) == pytest.approx(7.0, rel=1e-3)


def test_staged_output_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staged_output(out) as stage:
            (stage / "summary.json").write_text("{}")
            raise RuntimeError("boom")
    assert list(out.iterdir()) == []
    with staged_output(out) as stage:
        (stage / "summary.json").write_text("{}")
    assert [p.name for p in out.iterdir()] == ["summary.json"]
    with pytest.raises(OutputExistsError, match="not empty"):
        with staged_output(out):
            pass
    assert unique_path(out / "summary.json").name == "summary-2.json"


def test_progress_maps_sub_ranges_and_cancels():
    seen = []
    progress = Progress(lambda f, s: seen.append((round(f, 3), s)))
    sub = progress.sub(0.5, 1.0)
    sub.update(0.5, "half of second half")
    assert seen == [(0.75, "half of second half")]
    event = threading.Event()
    cancellable = Progress(cancel_event=event)
    event.set()
    with pytest.raises(OperationCancelled):
        cancellable.sub(0, 0.1).update(0.2, "stage")


def test_threaded_filters_equal_scipy_bit_for_bit():
    from scipy import ndimage

    from NeonatalBrainLib import filters

    x = np.random.default_rng(0).random((70, 90, 64)).astype(np.float32)   # above MIN_VOXELS: threaded
    assert x.size >= filters.MIN_VOXELS
    for sigma, mode, truncate in (((2.0, 1.0, 0.5), "nearest", 4.0), ((0.0, 1.3, 0.7), "reflect", 3.0)):
        ref = ndimage.gaussian_filter(x, sigma, mode=mode, truncate=truncate)
        for threads in (1, 2, 3):
            assert np.array_equal(filters.gaussian_filter(x, sigma, mode=mode, truncate=truncate, threads=threads), ref)
    out = np.empty_like(x)
    filters.gaussian_filter(x, 1.0, output=out)
    assert np.array_equal(out, ndimage.gaussian_filter(x, 1.0, mode="nearest"))
    size = (7, 5, 3)
    assert np.array_equal(filters.maximum_filter(x, size, threads=2), ndimage.maximum_filter(x, size, mode="nearest"))
    assert np.array_equal(filters.minimum_filter(x, (1, 1, 9), threads=2),
                          ndimage.minimum_filter(x, (1, 1, 9), mode="nearest"))
    assert np.array_equal(filters.minimum_filter(x, 1), x)          # no pass: a copy


def test_compiled_gaussian_passes_equal_scipy_bit_for_bit():
    """The numba passes along axes 0 and 1 (in place or not, on strided slabs, kernels longer
    than the axis) give scipy's float32 numbers exactly; other inputs go to scipy."""
    from scipy import ndimage

    from NeonatalBrainLib import filters

    assert filters._compiled_passes_ok()
    rng = np.random.default_rng(3)
    x = rng.random((23, 17, 12)).astype(np.float32) * 100
    for sigma in (0.4, 1.0, 2.7, 9.0):
        w = filters.gaussian_weights(sigma)
        assert np.array_equal(w, w[::-1]) and abs(w.sum() - 1.0) < 1e-12
        for mode in ("nearest", "reflect"):
            for axis, fn in ((0, filters._correlate_axis0), (1, filters._correlate_axis1)):
                ref = ndimage.gaussian_filter1d(x, sigma, axis=axis, mode=mode)
                out = np.empty_like(x)
                fn(x, out, w, mode == "reflect")
                assert np.array_equal(out, ref)
                inplace = x.copy()
                fn(inplace, inplace, w, mode == "reflect")
                assert np.array_equal(inplace, ref)
                slab = x[:, 3:11, :]                 # a strided view, as the threads get
                out = np.empty_like(slab)
                fn(slab, out, w, mode == "reflect")
                assert np.array_equal(out, ndimage.gaussian_filter1d(slab, sigma, axis=axis, mode=mode))
    # float64 images, 2-D images and other modes take scipy's passes
    for img, mode in ((x.astype(np.float64), "nearest"), (x[0], "reflect"), (x, "mirror")):
        assert np.array_equal(filters.gaussian_filter(img, 1.5, mode=mode), ndimage.gaussian_filter(img, 1.5, mode=mode))


def test_compiled_min_max_passes_equal_scipy():
    """The numba minimum / maximum passes (every axis, in place or not, windows longer than the
    axis, ties) give scipy's values; a slab holding a NaN is left to scipy."""
    from scipy import ndimage

    from NeonatalBrainLib import filters

    rng = np.random.default_rng(6)
    x = (rng.random((13, 11, 9)) * 6).round().astype(np.float32)
    for n in (2, 3, 5, 8, 30):
        for axis, fn in enumerate(filters._EXTREMUM_PASSES):
            for minimum, ref_fn in ((True, ndimage.minimum_filter1d), (False, ndimage.maximum_filter1d)):
                ref = ref_fn(x, n, axis=axis, mode="nearest")
                out = np.empty_like(x)
                assert fn(x, out, n, minimum) and np.array_equal(out, ref)
                inplace = x.copy()
                assert fn(inplace, inplace, n, minimum) and np.array_equal(inplace, ref)
    y = x.copy()
    y[4, 5, 6] = np.nan
    assert not filters._extremum_axis0(y, np.empty_like(y), 3, True)
    for f, g in ((filters.minimum_filter, ndimage.minimum_filter), (filters.maximum_filter, ndimage.maximum_filter)):
        assert np.array_equal(f(y, (3, 4, 2)), g(y, (3, 4, 2), mode="nearest"), equal_nan=True)
        assert np.array_equal(f(x, (9, 1, 4)), g(x, (9, 1, 4), mode="nearest"))


def test_reorient_to_canonical_keeps_every_voxel_in_its_ras_place():
    from NeonatalBrainLib.imageio import Volume, from_canonical_order, reorient_to_canonical

    rng = np.random.default_rng(5)
    arr = rng.random((5, 6, 7)).astype(np.float32)
    # an LPS-like, axis-permuted, slightly oblique grid
    rot = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    c, s_ = np.cos(0.1), np.sin(0.1)
    rot = rot @ np.array([[c, -s_, 0], [s_, c, 0], [0, 0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rot * [0.5, 0.6, 2.0]
    affine[:3, 3] = [10.0, -20.0, 5.0]
    vol = Volume(arr, affine)
    canon, (perm, flip) = reorient_to_canonical(vol)
    assert (perm, flip) != ((0, 1, 2), (False, False, False))
    d = canon.affine[:3, :3] / np.linalg.norm(canon.affine[:3, :3], axis=0)
    assert np.all(np.diag(d) > 0.9)                        # axes now run R, A, S
    ijk = np.argwhere(np.ones(arr.shape, bool))
    ras = vol.ijk_to_ras(ijk)
    # the canonical voxel holding each RAS point has the same value
    cijk = np.rint(np.c_[ras, np.ones(len(ras))] @ np.linalg.inv(canon.affine).T)[:, :3].astype(int)
    assert np.array_equal(canon.array[tuple(cijk.T)], arr[tuple(ijk.T)])
    assert np.array_equal(from_canonical_order(canon.array, perm, flip), arr)


def test_radiological_axial_view_puts_each_side_of_the_patient_where_a_radiologist_expects_it():
    """A marker at the patient's left, anterior, superior corner appears in the top slice's upper
    right (anterior up, the patient's right on the picture's left), whatever the storage order."""
    from NeonatalBrainLib.imageio import Volume, radiological_axial_view, ras_view, reorient_to_canonical

    grids = {   # voxel-axis storage: RAS; LPS; sagittal (A, S, R) with the S axis running inferior
        "RAS": ((6, 7, 8), np.diag([0.5, 0.6, 2.0, 1.0])),
        "LPS": ((6, 7, 8), np.diag([-0.5, -0.6, 2.0, 1.0])),
        "ASR": ((7, 8, 6), np.array([[0, 0, 0.5, 0], [0.6, 0, 0, 0], [0, -2.0, 0, 0], [0, 0, 0, 1.0]])),
    }
    for name, (shape, affine) in grids.items():
        vol = Volume(np.zeros(shape, np.float32), affine)
        ijk = np.argwhere(np.ones(shape, bool))
        ras = vol.ijk_to_ras(ijk)
        vol.array[tuple(ijk[np.argmax(-ras[:, 0] + ras[:, 1] + ras[:, 2])])] = 1.0   # left, anterior, superior
        view, spacing = radiological_axial_view(vol.array, affine)
        assert np.shares_memory(view, vol.array), name       # a view, not a copy
        k, row, col = np.argwhere(view == 1.0)[0]
        assert k == view.shape[0] - 1, name                  # the most superior slice
        assert row == 0, name                                # top row: anterior
        assert col == view.shape[2] - 1, name                # right of the picture: the patient's left
        canon, _ = reorient_to_canonical(vol)
        assert np.allclose(spacing, np.linalg.norm(canon.affine[:3, :3], axis=0)[[2, 1, 0]]), name
        assert np.array_equal(ras_view(vol.array, affine)[0], canon.array), name


def test_nifti2_files_are_read_through_nibabel_with_the_same_grid(tmp_path):
    """NIfTI-2 (SimpleITK cannot read it): the same array and RAS affine as the NIfTI-1 file."""
    data = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    aff = np.array([[-0.8, 0, 0, 40.0], [0, 0, 1.0, -20.0], [0, 0.9, 0, 3.0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(data, aff), tmp_path / "one.nii.gz")
    nib.save(nib.Nifti2Image(data[..., None], aff), tmp_path / "two.nii")       # a trailing axis of 1
    one, two = load_volume(tmp_path / "one.nii.gz"), load_volume(tmp_path / "two.nii")
    np.testing.assert_array_equal(two.array, one.array)
    np.testing.assert_allclose(two.affine, one.affine, atol=1e-5)
    broken = tmp_path / "broken.nii"
    broken.write_bytes((tmp_path / "two.nii").read_bytes()[:600])                 # header, half the data
    with pytest.raises(InputError, match="cannot be read"):
        load_volume(broken, "SWI")


def test_real_files_shipped_in_wheels_are_refused_with_the_problem_named(tmp_path):
    """Real scanner files: nibabel's NIfTI-2 and 4-D test images, pydicom's single MR slice."""
    import pydicom.data

    from NeonatalBrainLib.cli import main

    data = Path(nib.__file__).parent / "tests" / "data"
    cases = [(data / "example_nifti2.nii.gz", "expected a 3D image, got 4D"),
             (data / "example4d.nii.gz", "expected a 3D image, got 4D"),
             (Path(pydicom.data.get_testdata_file("MR_small.dcm")), "a single slice")]
    for path, message in cases:
        if not path.exists():
            pytest.skip(f"{path.name} is not in this install of its package")
        with pytest.raises(InputError, match=message):
            validate_scalar_volume(load_volume(path, "SWI"), "SWI")
        out = tmp_path / path.name.replace(".", "_")
        assert main(["vessels", str(path), "--out", str(out)]) == 2
        assert not out.exists() or not any(out.iterdir())


def test_real_dicom_folders_from_pydicom_are_read_or_refused_by_name():
    """pydicom's DICOMDIR test folders: a 7-slice MR series is read; a CT series is refused by its
    modality; a folder holding three series is refused."""
    import pydicom.data

    root = Path(pydicom.data.get_testdata_file("MR_small.dcm")).parent / "dicomdirtests"
    if not root.is_dir():
        pytest.skip("pydicom's dicomdirtests folder is not in this install")
    folder = root / "98892003" / "MR700"
    mr = load_volume(folder, "SWI")
    assert mr.shape == (16, 16, 7) and np.all(mr.spacing_mm > 0)
    # the first slice along the slice normal, as pydicom reads it: position (LPS -> RAS) and pixels
    slices = [pydicom.dcmread(f) for f in sorted(folder.iterdir())]
    iop = np.array(slices[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    first = min(slices, key=lambda d: float(normal @ np.array(d.ImagePositionPatient, float)))
    np.testing.assert_allclose(mr.ijk_to_ras([[0, 0, 0]])[0],
                               np.array(first.ImagePositionPatient, float) * [-1, -1, 1], atol=1e-4)
    np.testing.assert_array_equal(np.asarray(mr.array)[:, :, 0], first.pixel_array.T)
    with pytest.raises(InputError, match="DICOM modality CT, not MR"):
        load_volume(root / "77654033" / "CT2", "SWI")
    with pytest.raises(InputError, match="holds 3 DICOM series"):
        load_volume(root / "98892003" / "MR2", "SWI")


def test_numba_kernels_copy_arrays_element_by_element():
    """In a numba kernel an array-to-array slice assignment (``a[:] = b``, ``a[:m] = b``) compiles
    numba's shape-mismatch error path, string formatting included (about 1.7 s per signature, on
    the first run with an empty cache: round 23 took 40-42 s down to 30-31 s by writing such
    copies as loops).  Filling a slice with a number is fine.  (A whole-row copy ``a[i] = b[j]`` of
    2-D arrays does the same, but its target has no slice: this static check cannot see it.)"""
    import ast

    repo = Path(__file__).resolve().parents[1]
    sources = [p for d in ("NeonatalBrainLib", "NeonatalVessels/NeonatalVesselsLib", "NeonatalClassify/NeonatalClassifyLib")
               for p in sorted((repo / d).glob("*.py"))]
    found, kernels = [], 0
    for path in sources:
        for fn in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(fn, ast.FunctionDef) and any("jit" in ast.unparse(d) for d in fn.decorator_list)):
                continue
            kernels += 1
            for node in ast.walk(fn):
                if isinstance(node, ast.Assign) and not isinstance(node.value, (ast.Constant, ast.UnaryOp)):
                    for target in node.targets:
                        if isinstance(target, ast.Subscript) and any(isinstance(s, ast.Slice) for s in ast.walk(target.slice)):
                            found.append(f"{path.name}:{node.lineno} {fn.name}: {ast.unparse(node)}")
    assert kernels > 30
    assert not found, "slice copies in numba kernels:\n" + "\n".join(found)
