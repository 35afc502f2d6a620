"""End-to-end tests of the vessel engine on the phantom (term_3t seed 0) and on bad input."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from NeonatalBrainLib.imageio import InputError, Volume, load_volume, save_volume
from NeonatalVesselsLib import SUMMARY_KEYS, measure_vessel_mask, run_vessel_analysis, write_outputs
from NeonatalVesselsLib.evaluation import evaluate, load_truth


@pytest.fixture(scope="module")
def analysis(phantom_dir):
    swi = load_volume(phantom_dir / "swi.nii.gz")
    return run_vessel_analysis(swi)


@pytest.fixture(scope="module")
def out_dir(analysis, phantom_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("vessels") / "out"
    write_outputs(analysis, out, input_path=phantom_dir / "swi.nii.gz")
    return out


def test_output_contract(out_dir, phantom_dir):
    summary = json.loads((out_dir / "summary.json").read_text())
    assert set(SUMMARY_KEYS) <= set(summary)
    for k in SUMMARY_KEYS:
        assert summary[k] is None or isinstance(summary[k], (int, float))
    assert len(summary["provenance"]["input_sha256"]) == 64
    vessels = pd.read_csv(out_dir / "vessels.csv")
    assert list(vessels.columns[:7]) == ["vessel_id", "region", "side", "length_mm", "width_mm", "tortuosity",
                                         "curvature_per_mm"]
    assert vessels["vessel_id"].is_unique and (vessels["vessel_id"] > 0).all()
    assert set(vessels["region"]) <= {"dmv", "thalamic", "anterior_caudate", "internal_cerebral", "other"}
    assert set(vessels["side"]) <= {"left", "right", "midline"}
    dmv = vessels[vessels["region"] == "dmv"]
    assert np.isfinite(dmv[["length_mm", "width_mm", "tortuosity"]].to_numpy()).all()
    assert (dmv["tortuosity"] >= 1).all()
    assert summary["dmv_count"] == len(dmv)
    assert summary["warnings"] == [] and summary["dmv_detectability_index"] >= 2.3
    cl = pd.read_csv(out_dir / "centerlines.csv")
    assert list(cl.columns) == ["vessel_id", "x", "y", "z"]
    assert set(cl["vessel_id"]) <= set(vessels["vessel_id"])
    steps = [np.linalg.norm(np.diff(g[["x", "y", "z"]].to_numpy(), axis=0), axis=1) for _, g in cl.groupby("vessel_id")]
    assert max(s.max() for s in steps if len(s)) <= 0.5 + 1e-6
    labels = load_volume(out_dir / "vessel_labels.nii.gz")
    swi = load_volume(phantom_dir / "swi.nii.gz")
    assert labels.shape == swi.shape and np.allclose(labels.affine, swi.affine, atol=1e-4)
    assert set(np.unique(labels.array)) - {0} <= set(vessels["vessel_id"])
    for name in ("vessels.seg.nrrd", "centerlines.mrk.json", "minip.nii.gz", "report.html"):
        assert (out_dir / name).stat().st_size > 0
    assert not any(p.name.startswith(".staging") for p in out_dir.iterdir())


def test_every_output_column_and_key_is_defined_in_the_report(out_dir):
    # one table of definitions (with units) serves the report and the Slicer tables; it covers
    # exactly the columns of vessels.csv and the keys of summary.json
    import html

    from NeonatalVesselsLib import mrml_logic
    from NeonatalVesselsLib.definitions import SUMMARY_KEY_DEFINITIONS, VESSEL_COLUMN_DEFINITIONS
    from NeonatalVesselsLib.pipeline import VESSEL_COLUMNS

    assert list(VESSEL_COLUMN_DEFINITIONS) == list(pd.read_csv(out_dir / "vessels.csv").columns) == list(VESSEL_COLUMNS)
    summary = json.loads((out_dir / "summary.json").read_text())
    assert set(SUMMARY_KEYS) <= set(SUMMARY_KEY_DEFINITIONS) == set(summary) - {"provenance"}
    assert mrml_logic.VESSEL_COLUMN_DESCRIPTIONS is VESSEL_COLUMN_DEFINITIONS
    for key, text in {**SUMMARY_KEY_DEFINITIONS, **VESSEL_COLUMN_DEFINITIONS}.items():
        if key.endswith("_mm") or key.endswith("_per_mm"):
            assert "(mm" in text or "(1/mm)" in text, key      # the unit is stated
    report = (out_dir / "report.html").read_text()
    for key, text in {**SUMMARY_KEY_DEFINITIONS, **VESSEL_COLUMN_DEFINITIONS}.items():
        assert f"<td>{key}</td><td>{html.escape(text)}</td>" in report, key


def test_write_outputs_failure_leaves_nothing(analysis, tmp_path, monkeypatch):
    # the minIP is written on a thread: a failure beside it, or in it, must still leave an empty folder
    import time

    from NeonatalVesselsLib import report

    real_save = report.save_volume

    def slow_save(volume, path):
        time.sleep(0.3)        # still writing when the main thread fails
        return real_save(volume, path)

    def broken_pictures(analysis, folder):
        raise RuntimeError("no display")

    monkeypatch.setattr(report, "save_volume", slow_save)
    monkeypatch.setattr(report, "_overlay_pngs", broken_pictures)
    out = tmp_path / "a"
    with pytest.raises(RuntimeError, match="no display"):
        write_outputs(analysis, out)
    time.sleep(0.5)
    assert list(out.iterdir()) == []

    def broken_minip(volume, path):
        if path.name == "minip.nii.gz":
            raise OSError("disk full")
        return real_save(volume, path)

    monkeypatch.undo()
    monkeypatch.setattr(report, "save_volume", broken_minip)
    out = tmp_path / "b"
    with pytest.raises(OSError, match="disk full"):
        write_outputs(analysis, out)
    assert list(out.iterdir()) == []


def test_wide_pieces_over_the_caudate_head_are_not_anterior_caudate_veins():
    # term_3t seed 2: a 1.9 mm wide wall piece in front of the foramen (true anterior caudate
    # veins 0.8 mm) passed as the right anterior caudate vein before the 1.5 mm limit
    from NeonatalBrainLib.phantom import generate_phantom
    from NeonatalVesselsLib.pipeline import VesselParams

    ph = generate_phantom(seed=2, preset="term_3t", modalities=("swi",))
    truth = {v["region"] for v in ph.vessels}
    assert "anterior_caudate" in truth
    # (the rule judges the fitted diameter; with faint_fit_relative_contrast = 0 that is also the
    # width reported, which the loose run shows; the loose run fits the anterior caudate pieces
    # without leaving the ventricle out, as before the wall fit was theirs too, and without the
    # flank rule, which also refuses such pieces)
    loose = run_vessel_analysis(ph.swi, params=VesselParams(max_anterior_caudate_width_mm=9.0,
                                                            faint_fit_relative_contrast=0.0,
                                                            wall_fit_regions=("thalamic",),
                                                            min_wall_vein_flank_contrast=0.0))
    acv = loose.vessels[loose.vessels["region"] == "anterior_caudate"]
    assert (acv["width_mm"] > 1.5).any()
    default = run_vessel_analysis(ph.swi)
    acv = default.vessels[default.vessels["region"] == "anterior_caudate"]
    assert (acv["width_mm"] <= 1.5).all()
    for side in ("left", "right"):
        w = default.summary[f"anterior_caudate_vein_width_mm_{side}"]
        assert w is None or w <= 1.5


def test_wall_veins_are_darker_than_both_flanks():
    # isotropic seed 3: without the flank rule an 11 mm line along the left caudate head that lies
    # on no vein (flank contrast 0.01) was an anterior caudate vein and pulled the left width to
    # 0.84 mm; with it, every thalamic / anterior caudate piece lies on a true wall vein, and both
    # anterior caudate veins are measured (with the plain fit, before the wall fit was theirs, the
    # left one was not)
    from scipy.spatial import cKDTree

    from NeonatalBrainLib.phantom import generate_phantom
    from NeonatalVesselsLib.pipeline import VesselParams

    ph = generate_phantom(seed=3, preset="isotropic", modalities=("swi",))
    any_vein = cKDTree(np.vstack([np.asarray(v["centerline_ras_mm"]) for v in ph.vessels]))
    wall_vein = cKDTree(np.vstack([np.asarray(v["centerline_ras_mm"]) for v in ph.vessels
                                   if v["region"] in ("thalamic", "anterior_caudate")]))

    def on(tree, points):
        return float(np.mean(tree.query(points)[0] <= 1.0))

    def wall_pieces(a):
        rows = a.vessels[a.vessels["region"].isin(["thalamic", "anterior_caudate"])]
        return [a.centerlines[int(v)] for v in rows["vessel_id"]]

    off = run_vessel_analysis(ph.swi, params=VesselParams(min_wall_vein_flank_contrast=0.0))
    assert any(on(any_vein, p) < 0.5 for p in wall_pieces(off))
    default = run_vessel_analysis(ph.swi)
    pieces = wall_pieces(default)
    assert len(pieces) >= 4 and all(on(wall_vein, p) >= 0.5 for p in pieces)
    for side in ("left", "right"):
        assert default.summary[f"anterior_caudate_vein_width_mm_{side}"] is not None
    assert default.summary["anterior_caudate_vein_width_mm_left"] != off.summary["anterior_caudate_vein_width_mm_left"]


def test_numbers_against_phantom_truth(analysis, phantom_dir):
    truth = load_truth(phantom_dir)
    res = evaluate(analysis.vessels, analysis.centerlines, truth)
    # detection: most true DMVs found, most reported DMVs real (targets in docs/vessels.md)
    # (measured on this phantom: sensitivity 0.94, PPV 0.94, width MAE 0.065 mm, tortuosity MAE 0.023;
    # PPV 0.97 without the tracking of short pieces (VesselParams.track_max_mm = 0), 0.90 without the
    # contrast rule for resolved DMV fits, VesselParams.min_dmv_relative_contrast)
    assert res["sensitivity"] >= 0.85, res
    assert res["ppv"] >= 0.93, res
    # the issue's measurement targets, met on this phantom (held-out numbers: benchmarks/README.md)
    assert res["tortuosity_mae"] <= 0.03, res
    assert res["width_mae_mm"] <= 0.15, res
    # curvature within a fraction of its size (true DMV mean ~0.09/mm on the phantoms)
    assert res["curvature_mae_per_mm"] <= 0.07, res
    # DMVs are found on both sides, in proportion to the truth
    assert res["n_pred_left"] >= 0.5 * res["n_true_left"] and res["n_pred_right"] >= 0.5 * res["n_true_right"]


def test_skull_stripped_input_finds_the_same_dmvs(analysis, phantom_dir):
    # a skull-stripped SWI (zero outside the brain, extracerebral CSF removed: the brain surface
    # moves inwards by that CSF) must not lose DMVs to the depth rule, which measures the depth
    # to the nearer of brain surface and CSF (a rule on the brain-surface depth alone, 8 mm, lost
    # 0.08-0.14 of the sensitivity on two phantoms this way: benchmarks/README.md, round 10)
    from scipy import ndimage

    truth = load_truth(phantom_dir)
    swi = load_volume(phantom_dir / "swi.nii.gz")
    labels = np.asarray(load_volume(phantom_dir / "swi_labels.nii.gz").array)
    brain = ndimage.binary_fill_holes((labels > 0) & (labels != 8))      # 8: extracerebral CSF
    stripped = run_vessel_analysis(swi.with_array(np.where(brain, swi.array, 0).astype(np.float32)))
    full = evaluate(analysis.vessels, analysis.centerlines, truth)
    res = evaluate(stripped.vessels, stripped.centerlines, truth)
    assert np.asarray(stripped.brain_mask.array).sum() < 0.9 * np.asarray(analysis.brain_mask.array).sum()
    assert res["sensitivity"] >= max(0.90, full["sensitivity"] - 0.04), (res, full)
    assert res["ppv"] >= 0.90, res


def test_automatic_ventricles_match_phantom_and_exclude_surface_csf(analysis, phantom_dir):
    """Bright CSF joined to the surface (Sylvian fissure, posterior fossa) is not ventricle."""
    from scipy import ndimage

    auto = np.asarray(analysis.ventricles.array) > 0
    true = np.asarray(load_volume(phantom_dir / "swi_ventricles.nii.gz").array) > 0
    dice = 2 * (auto & true).sum() / (auto.sum() + true.sum())
    spacing = analysis.ventricles.spacing_mm
    near_true = ndimage.distance_transform_edt(~true, sampling=spacing) <= 2.0
    outside = float((auto & ~near_true).sum()) / max(1, auto.sum())
    print("ventricle dice", dice, "fraction > 2 mm outside", outside)
    assert dice >= 0.8
    assert outside <= 0.02


def test_other_csf_is_outside_the_ventricles_and_keeps_dmvs_off_the_sulci(phantom_dir):
    """csf_masks: bright CSF that is not ventricle lies in the CSF spaces outside the ventricles;
    the phantom's true DMVs keep a median distance >= 4 mm from it (the DMV rule's clearance)."""
    from scipy import ndimage

    from NeonatalVesselsLib import masks as mk
    from NeonatalVesselsLib.regions import RegionRules

    swi = load_volume(phantom_dir / "swi.nii.gz")
    labels = np.asarray(load_volume(phantom_dir / "swi_labels.nii.gz").array)
    brain = mk.brain_mask(swi.array, swi.spacing_mm)
    norm = mk.normalise_intensity(swi.array, brain, swi.spacing_mm)
    vent, other = mk.csf_masks(norm, brain, swi.spacing_mm)
    assert other.sum() > 1000 and not (vent & other).any()
    true_vent = np.isin(labels, [5, 6, 7])
    assert (other & true_vent).sum() <= 0.01 * other.sum()
    assert (other & (labels == 8)).sum() >= 0.5 * other.sum()      # extracerebral / sulcal CSF
    dist = ndimage.distance_transform_edt(~other, sampling=swi.spacing_mm)
    inv = np.linalg.inv(swi.affine)
    truth = load_truth(phantom_dir)
    clearance = RegionRules().dmv_csf_clearance_mm
    for v in truth["vessels"]:
        if v["region"] == "dmv":
            p = np.asarray(v["centerline_ras_mm"]) @ inv[:3, :3].T + inv[:3, 3]
            assert np.median(ndimage.map_coordinates(dist, p.T, order=1)) >= clearance


def test_wall_vein_widths_against_phantom_truth(analysis, phantom_dir):
    """Thalamic / anterior caudate widths (summary), where measured, near the phantom truth."""
    truth = json.loads((phantom_dir / "vessels.json").read_text())["summary"]
    errors = []
    for key in ("thalamic_vein_width_mm_left", "thalamic_vein_width_mm_right",
                "anterior_caudate_vein_width_mm_left", "anterior_caudate_vein_width_mm_right"):
        found = analysis.summary[key]
        if found is not None and truth.get(key) is not None:
            errors.append(abs(found - truth[key]))
    print("wall vein width errors", errors)
    assert errors, "no thalamic / anterior caudate vein width measured"
    assert max(errors) <= 1.2, errors


def _thalamic_vein_vs_truth(analysis, truth: dict, side: str) -> tuple[int, float, float, float]:
    """(number of thalamic vessels on ``side``, fraction of the true vein's points within
    max(1 mm, its diameter) of the longest one, fraction of its points within that of the
    true vein, its width minus the true diameter)."""
    from scipy.spatial import cKDTree

    v = analysis.vessels
    rows = v[(v["region"] == "thalamic") & (v["side"] == side)].sort_values("length_mm")
    true = next(t for t in truth["vessels"] if t["region"] == "thalamic" and t["side"] == side)
    tp = np.asarray(true["centerline_ras_mm"])
    tol = max(1.0, true["diameter_mm"])
    p = analysis.centerlines[int(rows["vessel_id"].iloc[-1])]
    covered = float(np.isfinite(cKDTree(p).query(tp, distance_upper_bound=tol)[0]).mean())
    on = float(np.isfinite(cKDTree(tp).query(p, distance_upper_bound=tol)[0]).mean())
    return len(rows), covered, on, float(rows["width_mm"].iloc[-1] - true["diameter_mm"])


def test_thalamostriate_vein_is_one_vessel_per_side_along_the_truth(analysis, phantom_dir):
    # the skeleton breaks the vein at every tributary; the pieces are joined along the wall
    truth = load_truth(phantom_dir)
    for side in ("left", "right"):
        n, covered, on, width_error = _thalamic_vein_vs_truth(analysis, truth, side)
        print(side, n, round(covered, 2), round(on, 2), round(width_error, 3))
        assert n == 1
        assert covered >= 0.8 and on >= 0.7
        assert abs(width_error) <= 0.15


def test_measure_edited_mask_erasing_one_dmv_lowers_count_by_one(analysis):
    swi = analysis.swi
    labels = analysis.vessel_labels.array
    base = measure_vessel_mask(swi, labels, brain_mask=analysis.brain_mask, ventricles=analysis.ventricles)
    dmv = base.vessels[base.vessels["region"] == "dmv"].sort_values("length_mm", ascending=False)
    assert len(dmv) >= 2
    vid = int(dmv["vessel_id"].iloc[0])     # erase the longest DMV (its label) by hand
    edited = base.vessel_labels.array.copy()
    edited[edited == vid] = 0
    after = measure_vessel_mask(swi, edited, brain_mask=analysis.brain_mask, ventricles=analysis.ventricles)
    assert after.summary["dmv_count"] == base.summary["dmv_count"] - 1


def test_remeasuring_with_the_previous_run_keeps_the_vessels_left_alone(analysis):
    from NeonatalVesselsLib import PreviousRun

    swi, labels = analysis.swi, analysis.vessel_labels.array
    masks = dict(brain_mask=analysis.brain_mask, ventricles=analysis.ventricles)
    previous = PreviousRun.from_analysis(analysis)
    keys = ("dmv_count", "dmv_count_left", "dmv_count_right", "dmv_width_mm", "dmv_tortuosity",
            "dmv_curvature_per_mm", "thalamic_vein_width_mm_left", "thalamic_vein_width_mm_right")
    same = measure_vessel_mask(swi, labels, previous=previous, **masks)
    for k in keys:
        assert same.summary[k] == pytest.approx(analysis.summary[k], abs=1e-9), k
    assert same.provenance["kept_from_previous_run"] == len(analysis.vessels)
    # every vessel kept: the DMV scorer's probabilities are that run's (a given mask is not judged)
    np.testing.assert_array_equal(same.vessels.set_index("vessel_id")["dmv_probability"],
                                  analysis.vessels.set_index("vessel_id").loc[same.vessels["vessel_id"], "dmv_probability"])
    assert analysis.vessels["dmv_probability"].notna().sum() >= (analysis.vessels["region"] == "dmv").sum() > 0
    assert analysis.provenance["kept_from_previous_run"] is None
    # traced anew through the labelmap's voxels, the tracked and joined veins are not found again
    # (labelled only where no other vessel was): the reason for keeping the previous run
    # (the count can come out equal: the DMVs the run's scorer refused count again in a given mask)
    anew = measure_vessel_mask(swi, labels, **masks)
    run_dmvs = set(analysis.vessels.loc[analysis.vessels["region"] == "dmv", "vessel_id"])
    assert run_dmvs - set(anew.vessels.loc[anew.vessels["region"] == "dmv", "vessel_id"])
    # erase one DMV: one fewer, the others as they were
    v = analysis.vessels
    vid = int(v[v["region"] == "dmv"].sort_values("length_mm")["vessel_id"].iloc[-1])
    edited = np.where(labels == vid, 0, labels)
    after = measure_vessel_mask(swi, edited, previous=previous, **masks)
    assert after.summary["dmv_count"] == analysis.summary["dmv_count"] - 1
    a, b = v.set_index("vessel_id"), after.vessels.set_index("vessel_id")
    kept = a.index[(a["region"] == "dmv") & (a.index != vid)]
    assert vid not in b.index and np.array_equal(b.loc[kept, "dmv_probability"], a.loc[kept, "dmv_probability"])
    assert anew.vessels["dmv_probability"].isna().all()
    assert (b.loc[kept, "region"] == "dmv").all()
    assert np.allclose(b.loc[kept, "length_mm"], a.loc[kept, "length_mm"], atol=1e-9)
    assert np.abs(b.loc[kept, "width_mm"] - a.loc[kept, "width_mm"]).max() < 0.01
    # trim a thalamostriate vein's end by hand (its voxels within 1.5 mm of its first 1 mm): it
    # keeps the rest of its centreline, so its length and width barely change (traced anew
    # through its voxels, which are in pieces, it lost most of its length)
    tid = int(v[v["region"] == "thalamic"]["vessel_id"].iloc[0])
    idx = np.argwhere(labels == tid)
    ras = analysis.swi.ijk_to_ras(idx)
    near_end = np.min(np.linalg.norm(ras[:, None] - analysis.centerlines[tid][None, :5], axis=2), axis=1) < 1.5
    trimmed = labels.copy()
    trimmed[tuple(idx[near_end].T)] = 0
    after = measure_vessel_mask(swi, trimmed, previous=previous, **masks).vessels.set_index("vessel_id")
    assert after.loc[tid, "region"] == "thalamic"
    assert a.loc[tid, "length_mm"] - 4.0 < after.loc[tid, "length_mm"] <= a.loc[tid, "length_mm"] + 0.5
    assert abs(after.loc[tid, "width_mm"] - a.loc[tid, "width_mm"]) < 0.15
    with pytest.raises(InputError, match="previous vessel labels"):
        measure_vessel_mask(swi, labels, previous=PreviousRun(labels[:-1], previous.centerlines, previous.regions),
                            **masks)


def test_edited_vessel_ids_keep_ids_drop_erased_and_number_painted():
    from NeonatalVesselsLib import edited_vessel_ids

    old = np.zeros((6, 6, 6), np.int32)
    old[1, 1:4, 1] = 7
    old[4, 1:4, 4] = 9
    edited = old > 0
    edited[4, 1, 4] = False                  # erased
    edited[1, 5, 5] = edited[5, 5, 0] = True  # two painted components
    new = edited_vessel_ids(old, edited)
    assert new.dtype == np.uint16
    assert (new[1, 1:4, 1] == 7).all() and new[4, 1, 4] == 0 and (new[4, 2:4, 4] == 9).all()
    assert sorted({int(new[1, 5, 5]), int(new[5, 5, 0])}) == [10, 11]


def test_a_given_mask_is_measured_as_drawn_without_tracking(analysis):
    # the automatic run grows short DMV pieces beyond the segmentation; a given (edited) binary
    # mask is measured as drawn: every centreline point lies on or next to a mask voxel
    from scipy import ndimage

    assert analysis.provenance["tracking"]["grown_dmvs"] > 0
    mask = np.asarray(analysis.vessel_labels.array) > 0
    drawn = measure_vessel_mask(analysis.swi, mask, brain_mask=analysis.brain_mask, ventricles=analysis.ventricles)
    assert drawn.provenance["tracking"] is None
    near = ndimage.binary_dilation(mask, iterations=2)
    inv = np.linalg.inv(analysis.swi.affine)
    for vid, pts in drawn.centerlines.items():
        ijk = np.rint(pts @ inv[:3, :3].T + inv[:3, 3]).astype(int)
        assert near[tuple(ijk.T)].all(), vid


def _flip_volume(vol: Volume, axes) -> Volume:
    """The same image stored with reversed voxel axes (e.g. RAS -> LAS): same world content."""
    arr = vol.array
    aff = vol.affine.copy()
    for ax in axes:
        arr = np.flip(arr, axis=ax)
        n = vol.shape[ax] - 1
        aff[:3, 3] = aff[:3, 3] + aff[:3, ax] * n
        aff[:3, ax] = -aff[:3, ax]
    return Volume(np.ascontiguousarray(arr), aff)


@pytest.fixture(scope="module")
def analysis_restored(analysis):
    """The phantom's analysis on the same image stored with two axes reversed (e.g. LAS -> RPS)
    and the axes permuted (slices first)."""
    flipped = _flip_volume(analysis.swi, (0, 1))
    return run_vessel_analysis(Volume(np.ascontiguousarray(flipped.array.transpose(2, 0, 1)),
                                      flipped.affine[:, [2, 0, 1, 3]]))


def test_orientation_invariance(analysis, analysis_restored):
    """Reversed and permuted voxel axes give the same vessels: the pipeline works in canonical order."""
    from NeonatalVesselsLib.pipeline import SUMMARY_KEYS

    other = analysis_restored
    for key in SUMMARY_KEYS:
        a, b = analysis.summary[key], other.summary[key]
        assert (a is None and b is None) or abs(a - b) <= 1e-6 * max(1.0, abs(a)), (key, a, b)
    # the labelmaps are on their own input grids: map the second back onto the first
    back = np.asarray(other.region_labels.array).transpose(1, 2, 0)[::-1, ::-1, :]
    assert np.array_equal(back, np.asarray(analysis.region_labels.array))
    # DMV centrelines in the same RAS places
    pa = np.vstack([analysis.centerlines[v] for v in analysis.vessels.query("region == 'dmv'")["vessel_id"]])
    pb = np.vstack([other.centerlines[v] for v in other.vessels.query("region == 'dmv'")["vessel_id"]])
    assert np.allclose(np.sort(pa, axis=0), np.sort(pb, axis=0), atol=1e-6)


def test_report_pictures_are_radiological_whatever_the_storage_order(analysis, analysis_restored):
    """The report's minIP slabs: the patient's left DMVs on the picture's right half, and the same
    pictures for the image stored in another voxel order (the view's own orientation, anterior up
    included: test_shared_core)."""
    from NeonatalVesselsLib.regions import region_value
    from NeonatalVesselsLib.report import overlay_slabs

    slabs = overlay_slabs(analysis)
    assert 1 <= len(slabs) <= 4 and all(s.dmv_voxels > 0 for s in slabs)
    assert np.all(np.diff([s.z_mm for s in slabs]) > 0)
    left, right = region_value("dmv", "left"), region_value("dmv", "right")
    for slab in slabs:
        cols = slab.regions.shape[1]
        lc = np.argwhere(slab.regions == left)[:, 1]
        rc = np.argwhere(slab.regions == right)[:, 1]
        if len(lc) and len(rc):
            assert np.median(lc) > cols / 2 > np.median(rc)
    other = overlay_slabs(analysis_restored)
    assert [s.z_mm for s in other] == pytest.approx([s.z_mm for s in slabs], abs=1e-4)
    for a, b in zip(slabs, other):
        assert np.array_equal(a.regions, b.regions) and np.allclose(a.minip, b.minip)


def test_report_pngs_show_the_slabs_in_square_millimetres_with_their_captions(analysis, out_dir):
    """The report's PNGs (Pillow): one per slab, the minIP in grey and the veins in their region
    colours, OVERLAY_WIDTH_PX wide and as high as the slab's extent in mm makes it, each under
    its caption in report.html."""
    import re

    from PIL import Image

    from NeonatalVesselsLib.report import OVERLAY_WIDTH_PX, overlay_caption, overlay_rgb, overlay_slabs

    slabs = overlay_slabs(analysis)
    report = (out_dir / "report.html").read_text()
    assert re.findall(r"<img src='(overlay_\d+\.png)'", report) == [f"overlay_{n + 1}.png" for n in range(len(slabs))]
    colour = {value: [round(255 * c) for c in rgb] for value, _name, rgb in analysis.region_table}
    for n, slab in enumerate(slabs):
        assert f"<figcaption style='font-size:12px'>{overlay_caption(slab)}</figcaption>" in report
        rgb = overlay_rgb(slab, analysis.region_table)
        for value in set(np.unique(slab.regions).tolist()) - {0}:
            assert (rgb[slab.regions == value] == colour[value]).all()
        tissue = rgb[slab.regions == 0]
        assert (tissue[:, 0] == tissue[:, 1]).all() and (tissue[:, 1] == tissue[:, 2]).all()
        assert tissue.min() == 0 and tissue.max() == 255       # windowed to the slab's range
        picture = np.asarray(Image.open(out_dir / f"overlay_{n + 1}.png").convert("RGB"))
        h, w = picture.shape[:2]
        aspect = slab.minip.shape[0] * slab.spacing_mm[0] / (slab.minip.shape[1] * slab.spacing_mm[1])
        assert w == OVERLAY_WIDTH_PX and abs(h - w * aspect) <= 1
        # nearest-neighbour enlargement of the slab's pixels; only the four letters differ
        rows = ((np.arange(h) + 0.5) * rgb.shape[0] / h).astype(int)
        cols = ((np.arange(w) + 0.5) * rgb.shape[1] / w).astype(int)
        assert np.any(picture != rgb[rows][:, cols], axis=2).mean() < 0.01


# ----------------------------------------------------------------------------- bad input
def _vol(arr, spacing=(0.5, 0.5, 2.0)):
    return Volume(arr, np.diag([*spacing, 1.0]))


@pytest.mark.parametrize("arr, spacing, match", [
    (np.ones((20, 20), np.float32), (0.5, 0.5, 2.0), "3D"),
    (np.ones((8, 8, 8, 2), np.float32), (0.5, 0.5, 2.0), "3D"),
    (np.zeros((20, 20, 10), np.float32), (0.5, 0.5, 2.0), "empty"),
    (np.full((20, 20, 10), 7.0, np.float32), (0.5, 0.5, 2.0), "constant"),
    (np.where(np.eye(20)[:, :, None] > 0, np.nan, 1.0).repeat(10, 2).astype(np.float32), (0.5, 0.5, 2.0), "NaN"),
    (np.random.default_rng(0).random((20, 20, 10)).astype(np.float32), (0.5, 0.0, 2.0), "spacing"),
])
def test_bad_images_raise_input_error(arr, spacing, match):
    aff = np.eye(4)
    aff[:3, :3] = np.diag(spacing)[: 3, : 3] if arr.ndim >= 3 else np.diag(spacing)
    with pytest.raises(InputError, match=match):
        run_vessel_analysis(Volume(arr, aff))


def test_a_phase_image_is_refused_by_its_sign_and_an_undershooting_resampled_magnitude_is_not(phantom):
    """SWI series come with a phase image beside the magnitude, easily given by mistake.  Wrapped
    phase (here the phantom's veins and a smooth field, wrapped to -4096..4095 as scanners store it)
    is negative on about half its voxels; it was refused as a T1 by its 'dark CSF'.  Now by its
    sign, with a message naming phase.  A z-scored magnitude likewise; the magnitude turned with a
    Lanczos resampling, whose undershoot at the scalp leaves a few per cent of voxels negative,
    passes the check (round 35)."""
    import SimpleITK as sitk
    from scipy import ndimage

    from NeonatalVesselsLib.pipeline import MAX_NEGATIVE_FRACTION, validate_swi

    swi = phantom.swi
    a = np.asarray(swi.array, np.float32)
    rng = np.random.default_rng(0)
    field = ndimage.gaussian_filter(rng.standard_normal(a.shape).astype(np.float32), 8) * 40
    head = a > 0.2 * np.median(a[a > 0])
    vein = head & (a < 0.6 * np.median(a[head]))
    phase = np.where(head, field + 0.8 * vein, rng.uniform(-np.pi, np.pi, a.shape).astype(np.float32))
    wrapped = (np.angle(np.exp(1j * phase)) / np.pi * 4096).astype(np.float32)
    with pytest.raises(InputError, match=r"% of the non-zero voxels are negative.*phase image"):
        run_vessel_analysis(swi.with_array(wrapped))
    with pytest.raises(InputError, match="negative.*z-scored"):
        validate_swi(swi.with_array((a - a[head].mean()) / a[head].std()))
    image = sitk.GetImageFromArray(np.transpose(a, (2, 1, 0)))
    image.SetSpacing([float(s) for s in swi.spacing_mm])
    turn = sitk.Euler3DTransform()
    turn.SetCenter(image.TransformContinuousIndexToPhysicalPoint([n / 2 for n in image.GetSize()]))
    turn.SetRotation(0.2, 0.15, 0.1)
    turned = np.transpose(sitk.GetArrayFromImage(
        sitk.Resample(image, image, turn, sitk.sitkLanczosWindowedSinc, 0.0, sitk.sitkFloat32)), (2, 1, 0))
    assert 0.005 < np.mean(turned[turned != 0] < 0) < MAX_NEGATIVE_FRACTION
    validate_swi(swi.with_array(turned))


def test_mask_on_other_grid_is_refused(analysis):
    with pytest.raises(InputError, match="another grid"):
        run_vessel_analysis(analysis.swi, brain_mask=np.ones((5, 5, 5), np.uint8))
    with pytest.raises(InputError, match="another grid"):
        measure_vessel_mask(analysis.swi, Volume(analysis.vessel_labels.array, analysis.swi.affine * 1.1))


def test_t1_instead_of_swi_is_refused(phantom):
    with pytest.raises(InputError, match="T1"):
        run_vessel_analysis(phantom.t1)


def test_an_swi_with_a_large_deep_haemorrhage_is_not_refused_as_a_t1(analysis, phantom):
    """A haemorrhage blooms dark on SWI: a 2.3 mL ellipsoid at 0.15 x the signal in the left lateral
    ventricle makes the large deep dark blobs of a T1's CSF, and before round 30 the SWI was
    refused as a T1 -- the clinical studies compare neonates with haemorrhage.  The veins tell
    them apart: the scan runs, finds its DMVs, warns about the dark region and records its volume;
    the phantom's T1 (no veins) is still refused."""
    from NeonatalVesselsLib.pipeline import DARK_REGION_WARNING_MM3, T1_DARK_BLOBS_MM3, t1_refusal

    swi = phantom.swi
    vent = np.argwhere(np.asarray(phantom.swi_ventricles.array) > 0)
    ras = vent @ swi.affine[:3, :3].T + swi.affine[:3, 3]
    centre = np.median(ras[ras[:, 0] < -5.0], axis=0)           # the patient's left lateral ventricle
    ijk = np.indices(swi.shape).reshape(3, -1).T
    q = ((((ijk @ swi.affine[:3, :3].T + swi.affine[:3, 3]) - centre) / (8.0, 12.0, 6.0)) ** 2).sum(1)
    weight = np.clip((1.2 - q) / 0.4, 0.0, 1.0).reshape(swi.shape)      # a soft edge
    bled = swi.with_array(np.asarray(swi.array, np.float32) * (1.0 - 0.85 * weight))
    result = run_vessel_analysis(bled)
    assert result.provenance["dark_deep_blobs_mm3"] > DARK_REGION_WARNING_MM3
    assert analysis.provenance["dark_deep_blobs_mm3"] == 0.0
    res = evaluate(result.vessels, result.centerlines, {"vessels": phantom.vessels})
    assert res["sensitivity"] >= 0.85 and res["ppv"] >= 0.9
    assert any("far darker than the tissue in large blobs" in w for w in result.summary["warnings"])
    # a given mask is measured as drawn, even with (almost) no DMV (its other veins only): no refusal
    labels = np.asarray(result.vessel_labels.array)
    dmv_ids = result.vessels.loc[result.vessels["region"] == "dmv", "vessel_id"].to_numpy()
    walls = result.vessel_labels.with_array(np.where(np.isin(labels, dmv_ids), 0, labels).astype(np.int32))
    measured = measure_vessel_mask(bled, walls)
    assert max(measured.summary["dmv_count_left"], measured.summary["dmv_count_right"]) < 3
    assert any("far darker than the tissue in large blobs" in w for w in measured.summary["warnings"])
    # the rule: dark blobs and fewer than 3 DMVs in each hemisphere
    with pytest.raises(InputError, match="no veins are visible"):
        t1_refusal(T1_DARK_BLOBS_MM3 + 1.0, (2, 1))
    t1_refusal(DARK_REGION_WARNING_MM3 + 1.0, (2, 3))
    t1_refusal(T1_DARK_BLOBS_MM3, (0, 0))
    with pytest.raises(InputError, match="T1-weighted"):
        run_vessel_analysis(phantom.t1)


def test_a_head_turned_in_the_scanner_is_read_in_its_own_frame(monkeypatch):
    """The term phantom (seed 3) with the head turned 30 degrees about S-I (yaw): the mid-sagittal
    plane is oblique, and with the midline taken as x = m of RAS the DMVs near the frontal and
    occipital horns fell within the midline rules (sensitivity 0.810, round 30).  The head's frame
    (``masks.head_frame``) finds the turn and the DMVs."""
    from scipy.spatial.transform import Rotation

    import NeonatalBrainLib.phantom.generator as generator

    def yaw_30(preset, rng):
        rng.uniform(-1, 1, 3)                       # the draws of the preset's own pose
        offset = rng.uniform(-1, 1, 3) * preset.head_offset_mm
        pose = np.eye(4)
        pose[:3, :3] = Rotation.from_euler("z", 30.0, degrees=True).as_matrix()
        pose[:3, 3] = offset
        return pose, np.array([0.0, 0.0, 30.0]), offset

    monkeypatch.setattr(generator, "_pose", yaw_30)
    turned = generator.generate_phantom(seed=3, preset="term_3t", modalities=("swi",))
    result = run_vessel_analysis(turned.swi)
    frame = result.provenance["head_frame"]
    assert frame["turned"] and abs(frame["yaw_deg"] - 30.0) <= 1.0 and abs(frame["roll_deg"]) <= 1.0
    res = evaluate(result.vessels, result.centerlines, {"vessels": turned.vessels})
    assert res["sensitivity"] >= 0.9 and res["ppv"] >= 0.95, res
    assert max(res["count_error_left"], res["count_error_right"]) <= 0.1


def test_a_term_t1_with_small_ventricles_is_refused():
    """The term phantom's T1 (seed 1): its small ventricles left deep blobs below 0.5 x the tissue
    signal of 100-300 mm^3, under the old rule's 800 mm^3 of >= 300 mm^3 blobs, and it ran as an SWI
    (0 DMVs).  Since the veins decide (round 30), blobs from 100 mm^3 totalling > 200 mm^3 refuse a
    scan without veins: 16 of 16 term 3 T T1s (seeds 0-3, as generated and on turned grids) instead
    of 1 (below 0.6 x the tissue signal since round 35: 1577 mm^3 on this one)."""
    from NeonatalBrainLib.phantom import generate_phantom
    from NeonatalVesselsLib.pipeline import T1_DARK_BLOBS_MM3

    t1 = generate_phantom(seed=1, preset="term_3t", modalities=("t1",)).t1
    with pytest.raises(InputError, match=r"deep CSF is dark \((\d+) mm\^3.*no veins are visible.*T1-weighted") as err:
        run_vessel_analysis(t1)
    assert float(err.value.args[0].split("(")[1].split(" mm")[0]) > T1_DARK_BLOBS_MM3


def test_a_term_1p5t_t1_whose_csf_is_not_below_half_the_tissue_is_refused(monkeypatch):
    """The term 1.5 T phantom's T1 (seed 1): its lower T1 contrast leaves the smoothed ventricles
    between 0.5 and 0.6 x the tissue signal, so below 0.5 (the level before round 35) it had no
    deep dark blob at all and ran as an SWI (0 DMVs).  Below :data:`T1_DARK_CSF_LEVEL` (0.6) its
    blobs hold several hundred mm^3 and it is refused; no SWI phantom of either generator has a
    deep blob below 0.7 (866 volumes, round 35)."""
    import NeonatalVesselsLib.pipeline as pl
    from NeonatalBrainLib.phantom import generate_phantom
    from NeonatalVesselsLib import masks as mk

    t1 = generate_phantom(seed=1, preset="term_1p5t", modalities=("t1",)).t1
    image = np.asarray(t1.array, np.float32)
    brain = mk.brain_mask(image, t1.spacing_mm)
    norm = mk.normalise_intensity(image, brain, t1.spacing_mm)
    depth = mk.brain_depth_mm(brain, t1.spacing_mm, open_faces=())
    dark_mm3 = pl.deep_dark_blobs_mm3(norm, brain, depth, t1.spacing_mm)
    assert pl.T1_DARK_CSF_LEVEL == 0.6 and dark_mm3 > pl.T1_DARK_BLOBS_MM3
    monkeypatch.setattr(pl, "T1_DARK_CSF_LEVEL", 0.5)
    assert pl.deep_dark_blobs_mm3(norm, brain, depth, t1.spacing_mm) == 0.0
    monkeypatch.undo()
    with pytest.raises(InputError, match="T1-weighted"):
        run_vessel_analysis(t1)


def test_a_t1_whose_ventricles_join_the_outer_csf_is_refused():
    """The preterm phantom's T1 (seed 0): its dark ventricles reach the dark outer CSF, so they are
    no 3-D hole of the brain mask, no voxel lay 15 mm deep and it ran as an SWI (0 DMVs).  Each
    axial slice encloses them: the T1 check fills the mask slice by slice when that adds >= 300
    mm^3, and refuses it.  (Of the 311 cached SWI phantoms of both generators, 11 have their mask
    filled that way, up to 630 mm^3 added, and none is refused: round 28.)"""
    from NeonatalBrainLib.phantom import generate_phantom
    from NeonatalVesselsLib import masks as mk
    from NeonatalVesselsLib.pipeline import SLICE_HOLES_MIN_MM3

    t1 = generate_phantom(seed=0, preset="preterm", modalities=("t1",)).t1
    image = np.asarray(t1.array, np.float32)
    brain = mk.brain_mask(image, t1.spacing_mm)
    assert mk.brain_depth_mm(brain, t1.spacing_mm).max() < 16.0          # no deep brain in 3-D
    added = (mk.fill_holes_in_slices(brain, axis=2) & ~brain).sum() * np.prod(t1.spacing_mm)
    assert added >= SLICE_HOLES_MIN_MM3
    with pytest.raises(InputError, match="T1"):
        run_vessel_analysis(t1)


def test_a_real_whole_head_t1_the_mni152_template_is_refused(tmp_path):
    """A real T1 (the MNI152 2009a template that ships inside nilearn's wheel, 1 mm, uint8,
    skull-stripped adult brain): refused as T1 by its dark deep CSF, by the library call and by
    the command, which writes nothing."""
    from importlib.resources import files
    from pathlib import Path

    from NeonatalBrainLib.cli import main

    path = Path(str(files("nilearn.datasets.data") / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"))
    t1 = load_volume(path)
    assert t1.shape == (197, 233, 189)
    with pytest.raises(InputError, match="T1-weighted.*deep CSF is dark|deep CSF is dark.*T1-weighted"):
        run_vessel_analysis(t1)
    out = tmp_path / "out"
    assert main(["vessels", str(path), "--out", str(out)]) == 2
    assert not out.exists() or not any(out.iterdir())


def _centre_crop(vol: Volume, mm) -> Volume:
    """The middle of ``vol``: ``mm`` (per voxel axis) around its centre voxel."""
    c = np.array(vol.shape) // 2
    half = np.round(np.asarray(mm, float) / 2 / vol.spacing_mm).astype(int)
    box = tuple(slice(max(0, int(ci - h)), int(ci + h)) for ci, h in zip(c, half))
    affine = vol.affine.copy()
    affine[:3, 3] = vol.affine[:3, :3] @ np.array([b.start for b in box]) + vol.affine[:3, 3]
    return Volume(np.ascontiguousarray(np.asarray(vol.array)[box]), affine)


def test_t1_cropped_inside_the_head_is_refused_but_a_cropped_swi_is_not(phantom):
    """No brain 15 mm deep: nibabel's real T1 crop (adult, 2 mm, around the ventricles) is
    refused; the phantom's SWI cut in-plane, or as a 30 mm slab with air around it, is analysed."""
    from pathlib import Path

    import nibabel

    real = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"
    with pytest.raises(InputError, match="T1"):
        run_vessel_analysis(load_volume(real))
    run_vessel_analysis(_centre_crop(phantom.swi, (60, 60, 40)))
    slab = [1000.0, 1000.0, 1000.0]
    slab[int(np.argmax(np.abs(phantom.swi.affine[2, :3])))] = 30.0     # the voxel axis nearest S-I
    run_vessel_analysis(_centre_crop(phantom.swi, slab))


def test_an_swi_cropped_inside_the_head_is_judged_at_the_cropped_dark_level(monkeypatch):
    """The preterm phantom's SWI (seed 3) cut to 60 x 60 x 40 mm around the array's centre: no brain
    15 mm below a surface, so the T1 check searches the array's middle, where this SWI holds 868
    mm^3 below 0.6 x its tissue signal (deep grey matter read without a brain outline) and none below
    :data:`CROPPED_DARK_CSF_LEVEL` (0.5).  It finds no DMV either way; judged at the whole-head level
    (0.6) it would be refused as a T1 (round 35), at the cropped level it runs."""
    import NeonatalVesselsLib.pipeline as pl
    from NeonatalBrainLib.phantom import generate_phantom

    crop = _centre_crop(generate_phantom(seed=3, preset="preterm", modalities=("swi",)).swi, (60, 60, 40))
    result = run_vessel_analysis(crop)
    assert result.provenance["dark_deep_blobs_mm3"] == 0.0
    assert pl.CROPPED_DARK_CSF_LEVEL == 0.5 < pl.T1_DARK_CSF_LEVEL
    monkeypatch.setattr(pl, "CROPPED_DARK_CSF_LEVEL", pl.T1_DARK_CSF_LEVEL)
    with pytest.raises(InputError, match="T1-weighted"):
        run_vessel_analysis(crop)


def _slab_of(vol: Volume, z_centre_mm: float, thickness_mm: float) -> Volume:
    """``benchmarks/eval_vessels_slabs.slab_of``: the slices along the voxel axis nearest S-I
    within ``thickness_mm`` / 2 of ``z_centre_mm`` (RAS)."""
    from benchmark_modules import benchmark_module

    return benchmark_module("eval_vessels_slabs").slab_of(vol, z_centre_mm, thickness_mm)


def _dmv_median_height_mm(phantom) -> float:
    """``benchmarks/eval_vessels_slabs.dmv_median_height_mm`` of the phantom's true DMVs."""
    from benchmark_modules import benchmark_module

    return benchmark_module("eval_vessels_slabs").dmv_median_height_mm(
        [v for v in phantom.vessels if v["region"] == "dmv"])


def test_a_slab_cutting_through_the_brain_finds_the_dmvs_inside_it(analysis, phantom, tmp_path):
    """A 30 mm slab from 5 mm below to 25 mm above the DMVs' median height cuts the lateral
    ventricles: with its faces taken as brain surface the ventricles were not deep enough to be
    ventricles and no DMV was found (0 of the 46 lying mostly inside it).  The ventricles are
    now judged on the depth below the brain surface inside the field of view, and so are the
    vessel rules since version 0.6.3: of the 27 DMVs inside reaching within 4 mm of a cut face,
    which the rules took for veins at the brain surface, 21 were found, now 24;
    the run says the counts cover only the imaged part; a whole-head image has no such faces."""
    from NeonatalVesselsLib.evaluation import match_vessels

    dmvs = [v for v in phantom.vessels if v["region"] == "dmv"]
    z = _dmv_median_height_mm(phantom)
    low, high = z - 5.0, z + 25.0
    save_volume(_slab_of(phantom.swi, (low + high) / 2, high - low), tmp_path / "slab.nii.gz")
    slab = run_vessel_analysis(load_volume(tmp_path / "slab.nii.gz"))
    assert slab.provenance["field_of_view_cuts_brain"] == ["inferior", "superior"]
    assert any("field of view cuts through the brain" in w for w in slab.summary["warnings"])
    assert analysis.provenance["field_of_view_cuts_brain"] == []
    assert not any("field of view" in w for w in analysis.summary["warnings"])
    inside = {v["vessel_id"] for v in dmvs
              if np.mean(np.abs(np.asarray(v["centerline_ras_mm"])[:, 2] - (low + high) / 2) < 14.0) >= 0.6}
    pred = {int(r.vessel_id): slab.centerlines[int(r.vessel_id)]
            for r in slab.vessels[slab.vessels["region"] == "dmv"].itertuples()}
    matches = match_vessels(pred, dmvs)
    found = {t for t, _ in matches.values() if t}
    assert len(inside) >= 40
    assert len(found & inside) >= 0.8 * len(inside), (len(found & inside), len(inside))    # 40 of 46
    assert sum(1 for t, _ in matches.values() if t) >= 0.85 * len(pred)                     # 40 of 44
    # the DMVs reaching near a cut face: no brain surface there (fails with the faces as surface)
    near = {v["vessel_id"] for v in dmvs if v["vessel_id"] in inside and (
        np.asarray(v["centerline_ras_mm"])[:, 2].min() < low + 4.0 or np.asarray(v["centerline_ras_mm"])[:, 2].max() > high - 4.0)}
    assert len(near) >= 25 and len(found & near) >= 0.84 * len(near), (len(found & near), len(near))
    # a batch's metrics row marks the scan, so a cohort analysis can leave it out
    from NeonatalVesselsLib.cli import analyse_case

    row = analyse_case("slab", str(tmp_path / "slab.nii.gz"), out_dir=str(tmp_path / "out"))
    assert row["field_of_view_whole_brain"] == 0 and row["dmv_count"] == slab.summary["dmv_count"]


def test_a_slab_padded_with_zeros_onto_a_larger_grid_is_analysed_as_the_slab(phantom, tmp_path):
    """The slab of the test above resampled onto the whole phantom grid (planes of 0 above and
    below it, as a registration leaves a scan's missing field of view) had its cuts taken for
    the brain's surface, 2.5 cm inside the grid: no DMV at all (0 of 46).  The planes of zeros
    are now outside the field of view: the run is that of the slab alone, its volumes back on
    the padded grid (0 outside the slab), ``provenance.imaged_box_ijk`` the slab's planes.  An
    edited labelmap is measured the same way; a voxel painted into the padding widens the box
    to hold it."""
    from benchmark_modules import benchmark_module
    from NeonatalBrainLib.imageio import zero_padding_box
    from NeonatalVesselsLib.pipeline import PreviousRun, estimate_scanner_psf

    z = _dmv_median_height_mm(phantom)
    slab = _slab_of(phantom.swi, z + 10.0, 30.0)
    padded = benchmark_module("eval_vessels_slabs").zero_padded(slab, phantom.swi).array
    axis = int(np.argmax(np.abs(phantom.swi.affine[2, :3])))
    start = int(round(np.linalg.solve(phantom.swi.affine[:3, :3], slab.affine[:3, 3] - phantom.swi.affine[:3, 3])[axis]))
    box = tuple(slice(start, start + slab.shape[axis]) if a == axis else slice(None) for a in range(3))
    assert zero_padding_box(padded)[axis] == box[axis]
    on_slab = run_vessel_analysis(slab)
    on_grid = run_vessel_analysis(Volume(padded, phantom.swi.affine))
    assert on_slab.summary["dmv_count"] >= 30
    assert {k: on_grid.summary[k] for k in SUMMARY_KEYS} == {k: on_slab.summary[k] for k in SUMMARY_KEYS}
    assert on_grid.vessels.equals(on_slab.vessels)
    assert on_grid.provenance["imaged_box_ijk"][axis] == [box[axis].start, box[axis].stop]
    assert on_slab.provenance["imaged_box_ijk"] is None
    assert on_grid.provenance["field_of_view_cuts_brain"] == on_slab.provenance["field_of_view_cuts_brain"] != []
    assert estimate_scanner_psf(Volume(padded, phantom.swi.affine)) == on_grid.provenance["psf"]   # a cohort's value
    for name in ("vessel_labels", "minip", "brain_mask", "ventricles", "region_labels"):
        out = np.asarray(getattr(on_grid, name).array)
        assert out.shape == phantom.swi.shape and np.allclose(getattr(on_grid, name).affine, phantom.swi.affine)
        assert np.array_equal(out[box], np.asarray(getattr(on_slab, name).array))
        assert np.count_nonzero(out) == np.count_nonzero(out[box])
    # an edited labelmap on the padded grid; then one voxel painted into the padding
    edited = np.asarray(on_grid.vessel_labels.array).copy()
    previous = PreviousRun.from_analysis(on_grid)
    remeasured = measure_vessel_mask(Volume(padded, phantom.swi.affine), edited, previous=previous)
    assert remeasured.provenance["imaged_box_ijk"][axis] == [box[axis].start, box[axis].stop]
    assert {k: remeasured.summary[k] for k in SUMMARY_KEYS} == {k: on_grid.summary[k] for k in SUMMARY_KEYS}
    stray = [n // 2 for n in edited.shape]
    stray[axis] = box[axis].stop + 2
    edited[tuple(stray)] = edited.max() + 1
    widened = measure_vessel_mask(Volume(padded, phantom.swi.affine), edited, previous=previous)
    assert widened.provenance["imaged_box_ijk"][axis] == [box[axis].start, box[axis].stop + 3]


def _slab_on_a_rotated_grid_finds_what_the_slab_finds(phantom, swi: Volume):
    """The 30 mm slab of ``swi`` (the phantom's SWI, or a version of it) centred 10 mm above the
    DMVs' median height, analysed on its own grid and resampled onto the phantom grid turned 12
    degrees about R-L: the rotated run finds its inferior cut, >= 0.85 of the DMVs the slab finds
    (>= 30), each run with PPV >= 0.9.  Returns (rotated run, slab run, rotated volume)."""
    from benchmark_modules import benchmark_module
    from NeonatalBrainLib.imageio import resample_to_grid
    from NeonatalVesselsLib.evaluation import match_vessels

    slabs = benchmark_module("eval_vessels_slabs")
    slab = slabs.slab_of(swi, _dmv_median_height_mm(phantom) + 10.0, 30.0)
    turned = resample_to_grid(slab, slabs.rotated_grid(phantom.swi, 12.0))
    turned = Volume(np.asarray(turned.array, np.float32), turned.affine)
    rotated, on_slab = run_vessel_analysis(turned), run_vessel_analysis(slab)
    assert "inferior (oblique)" in rotated.provenance["field_of_view_cuts_brain"]
    dmvs = [v for v in phantom.vessels if v["region"] == "dmv"]
    found = {}
    for name, a in (("rotated", rotated), ("slab", on_slab)):
        pred = {int(r.vessel_id): a.centerlines[int(r.vessel_id)] for r in a.vessels[a.vessels["region"] == "dmv"].itertuples()}
        matches = match_vessels(pred, dmvs)
        assert sum(1 for t, _ in matches.values() if t) >= 0.9 * len(pred)
        found[name] = {t for t, _ in matches.values() if t}
    assert len(found["slab"]) >= 30
    assert len(found["rotated"] & found["slab"]) >= 0.85 * len(found["slab"]), (len(found["rotated"]), len(found["slab"]))
    return rotated, on_slab, turned


def test_a_slab_resampled_onto_a_rotated_grid_finds_the_dmvs_inside_it(phantom):
    """The slab of the tests above resampled onto the phantom grid turned 12 degrees about R-L (as
    a registration onto another scan's oblique grid leaves it): the zeros beyond its slanted faces
    are no whole planes, so they stay in the analysis (the planes of zeros below them are cropped).  Taken for the brain surface, they left the
    cut ventricles too shallow to be ventricles and no DMV was found (0 of 0, round 27).  The
    slanted cuts are now found as planes (``masks.field_of_view_cut_planes``; in RAS the slab's
    axial planes) and the ventricles judged on the depth with the region beyond them open: the
    run finds about as many DMVs as on the slab itself, and says where the field of view cuts; its
    labelmap re-measured unedited gives the same summary."""
    rotated, _, turned = _slab_on_a_rotated_grid_finds_what_the_slab_finds(phantom, phantom.swi)
    assert any("cuts through the brain at its inferior (oblique)" in w for w in rotated.summary["warnings"])
    normals = [np.asarray(p["normal"]) for p in rotated.provenance["field_of_view_cut_planes_ras"]]
    assert any(n @ [0.0, 0.0, -1.0] > np.cos(np.deg2rad(2.0)) for n in normals)
    for side in ("left", "right"):
        assert rotated.summary[f"dmv_count_{side}"] >= 10
        assert not any("DMV(s) found in the patient's" in w for w in rotated.summary["warnings"])
    # its labelmap re-measured unedited (correction then recomputation) finds the same cuts and summary
    from NeonatalVesselsLib.pipeline import PreviousRun

    again = measure_vessel_mask(turned, np.asarray(rotated.vessel_labels.array), previous=PreviousRun.from_analysis(rotated))
    assert again.provenance["field_of_view_cut_planes_ras"] == rotated.provenance["field_of_view_cut_planes_ras"]
    assert {k: again.summary[k] for k in SUMMARY_KEYS} == {k: rotated.summary[k] for k in SUMMARY_KEYS}


def test_a_skull_stripped_slab_on_a_rotated_grid_finds_the_dmvs_inside_it(phantom):
    """The slab of the test above, skull-stripped first (the engine's brain mask dilated by one
    voxel, 0 outside), then resampled onto the grid turned 12 degrees: zeros lie beside the brain
    inside its slanted cut as well, which the rule against skull-stripped brains' flat sides
    refused, so the cut was taken for brain surface and no DMV was found (0.6.2).  A cut holding
    most of the brain's section is now a cut there too: about as many DMVs as the slab on its own
    grid."""
    from benchmark_modules import benchmark_module

    stripped = benchmark_module("eval_vessels_slabs").skull_stripped(phantom.swi)
    assert 0.3 < np.mean(np.asarray(stripped.array) == 0) < 0.9
    _, on_slab, _ = _slab_on_a_rotated_grid_finds_what_the_slab_finds(phantom, stripped)
    assert on_slab.provenance["field_of_view_cuts_brain"] == ["inferior", "superior"]


def test_exact_zeros_inside_the_brain_are_masked_data_not_a_dark_t1_csf(analysis, phantom):
    """A ball of 10 mm radius set to exactly 0 in the deep white matter (a lesion masked out, a hole
    a processing step left): its 4.2 ml of deep dark voxels made the T1 check refuse the SWI as a
    T1 (0.6.2).  Exact zeros inside the brain are masked data (``masks.zeros_inside_brain``): the
    run goes on, reports their volume and warns that veins there are not seen; a few zero voxels
    (a dark vein voxel stored as 0) are not such a region."""
    from NeonatalVesselsLib import masks as mk

    image = np.asarray(phantom.swi.array, np.float32)
    spacing = phantom.swi.spacing_mm
    brain = np.asarray(analysis.brain_mask.array) > 0
    centre = np.argwhere(brain & (np.asarray(analysis.ventricles.array) == 0)).mean(axis=0)
    ijk = np.indices(image.shape, dtype=np.float32)
    centre[1] += 30.0 / spacing[1]          # 30 mm anterior of the brain's centre: white matter
    ball = sum(((ijk[a] - centre[a]) * spacing[a]) ** 2 for a in range(3)) <= 10.0 ** 2
    assert brain[ball].all()
    holed = image.copy()
    holed[ball] = 0
    a = run_vessel_analysis(Volume(holed, phantom.swi.affine))
    volume = ball.sum() * np.prod(spacing)
    assert a.provenance["zeros_inside_brain_mm3"] == pytest.approx(volume, rel=0.01)
    assert any("inside the brain are exactly 0" in w for w in a.summary["warnings"])
    assert abs(a.summary["dmv_count"] - analysis.summary["dmv_count"]) <= 3
    assert analysis.provenance["zeros_inside_brain_mm3"] == 0.0
    assert not any("exactly 0" in w for w in analysis.summary["warnings"])
    few = image.copy()
    few[tuple(np.argwhere(ball)[::500].T)] = 0            # scattered single voxels
    assert not mk.zeros_inside_brain(few, brain, spacing).any()
    assert np.array_equal(mk.zeros_inside_brain(holed, brain, spacing), ball)


def test_a_scan_with_too_few_dmvs_in_a_hemisphere_warns(analysis, phantom):
    """A 20 mm slab 25 mm below the DMVs' median height holds almost none of them: the run says
    that its counts are unlikely to be right instead of reporting them silently; the whole
    phantom (>= 25 per hemisphere) does not warn."""
    a = run_vessel_analysis(_slab_of(phantom.swi, _dmv_median_height_mm(phantom) - 25.0, 20.0))
    few = [w for w in a.summary["warnings"] if "DMV(s) found in the patient's" in w]
    assert len(few) == sum(a.summary[f"dmv_count_{side}"] < 3 for side in ("left", "right")) >= 1
    assert min(analysis.summary["dmv_count_left"], analysis.summary["dmv_count_right"]) >= 25
    assert not any("DMV(s) found in the patient's" in w for w in analysis.summary["warnings"])


def test_slit_ventricles_are_found_and_their_dmvs_counted(monkeypatch):
    """Lateral ventricles of 0.3 x the term cross-section (0.86 mL with the third, 1-2 mm across) lose
    their brightness to the partial volume and the smoothing: the first look of ``csf_masks`` finds
    none, and without ventricles no DMV passes the rules (0 DMVs before round 30).  The second look,
    at a finer scale and keeping smaller pieces, finds most of them, and the DMVs with them."""
    from NeonatalBrainLib.phantom import PRESETS, generate_phantom, with_changes
    from NeonatalVesselsLib import masks as mk
    from NeonatalVesselsLib.pipeline import MIN_VENTRICLES_MM3

    slit = generate_phantom(seed=3, preset=with_changes(PRESETS["term_3t"], ventricle_scale=0.3), modalities=("swi",))
    true_mm3 = np.count_nonzero(slit.swi_ventricles.array) * float(np.prod(slit.swi.spacing_mm))
    result = run_vessel_analysis(slit.swi)
    res = evaluate(result.vessels, result.centerlines, {"vessels": slit.vessels})
    assert res["sensitivity"] >= 0.85 and res["ppv"] >= 0.9, res
    found = result.provenance["ventricles_mm3"]
    assert MIN_VENTRICLES_MM3 <= 0.6 * true_mm3 <= found <= true_mm3
    assert result.provenance["ventricles_mm3"] == pytest.approx(
        np.count_nonzero(result.ventricles.array) * float(np.prod(slit.swi.spacing_mm)), abs=0.1)
    assert not any("ventricles found hold only" in w for w in result.summary["warnings"])
    # the first look alone: no ventricle, no DMV, and the run says why
    first_look = mk.csf_masks
    monkeypatch.setattr(mk, "csf_masks", lambda *a, **k: first_look(*a, **k, small_ventricles_mm3=0.0))
    without = run_vessel_analysis(slit.swi)
    assert without.provenance["ventricles_mm3"] < 0.05 * true_mm3 and without.summary["dmv_count"] <= 2
    assert any("ventricles found hold only" in w for w in without.summary["warnings"])


def test_t1_slab_along_si_is_refused_when_its_ventricles_are_large_enough():
    """A 30 mm S-I slab of the preterm phantom's T1: its dark ventricles reach the cut faces, so
    they are no 3-D hole of the brain mask; each axial slice encloses them
    (``masks.fill_holes_in_slices``) and they lie deep below the surface inside the slab.  (Before
    round 18 it ran and reported 0 DMVs.)"""
    from NeonatalBrainLib.phantom import generate_phantom

    t1 = generate_phantom(seed=0, preset="preterm", modalities=("t1",)).t1
    slab = [1000.0, 1000.0, 1000.0]
    slab[int(np.argmax(np.abs(t1.affine[2, :3])))] = 30.0
    with pytest.raises(InputError, match="T1"):
        run_vessel_analysis(_centre_crop(t1, slab))


def test_t1_slab_on_a_rotated_grid_is_refused_with_its_slanted_cuts_open(monkeypatch):
    """A 30 mm S-I slab of the term phantom's T1 (seed 0) resampled onto a grid turned 12 degrees:
    its field of view ends in slanted planes of zeros, and with them taken as surface no brain lay
    15 mm deep (at most 15.4 mm), so it ran as an SWI (0 DMVs).  The T1 check now opens the voxels
    beyond those cuts (``deep_dark_blobs_mm3(open_mask=...)``, as the ventricle depth does) and
    refuses it (round 35)."""
    import NeonatalVesselsLib.pipeline as pl
    from NeonatalBrainLib.imageio import resample_to_grid
    from NeonatalBrainLib.phantom import generate_phantom
    from benchmark_modules import benchmark_module

    slabs = benchmark_module("eval_vessels_slabs")
    t1 = generate_phantom(seed=0, preset="term_3t", modalities=("t1",)).t1
    turned = resample_to_grid(slabs.slab_of(t1, 10.0, 30.0), slabs.rotated_grid(t1, 12.0))
    with pytest.raises(InputError, match="T1-weighted"):
        run_vessel_analysis(turned)
    measure = pl.deep_dark_blobs_mm3
    monkeypatch.setattr(pl, "deep_dark_blobs_mm3", lambda *a, open_mask=None, **k: measure(*a, **k))
    assert run_vessel_analysis(turned).provenance["dark_deep_blobs_mm3"] == 0.0


def test_cli_corrupt_file_and_no_partial_output(tmp_path, phantom_dir):
    from NeonatalBrainLib.cli import main

    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not an image at all")
    out = tmp_path / "out"
    assert main(["vessels", str(bad), "--out", str(out)]) == 2
    assert not out.exists() or not any(out.iterdir())
    # a mask on another grid: refused, nothing written
    other = Volume(np.ones((4, 4, 4), np.uint8), np.eye(4))
    save_volume(other, tmp_path / "mask.nii.gz")
    assert main(["vessels", str(phantom_dir / "swi.nii.gz"), "--out", str(out),
                 "--brain-mask", str(tmp_path / "mask.nii.gz")]) == 2
    assert not out.exists() or not any(out.iterdir())


def test_cli_measure_an_edited_seg_nrrd_with_and_without_the_previous_run(analysis, out_dir, phantom_dir, tmp_path):
    from NeonatalBrainLib.cli import main

    swi, seg = str(phantom_dir / "swi.nii.gz"), str(out_dir / "vessels.seg.nrrd")
    n = analysis.summary["dmv_count"]
    kept = tmp_path / "kept"
    kept.mkdir()
    assert main(["vessels-measure", swi, "--mask", seg, "--out", str(kept), "--previous", str(out_dir)]) == 0
    s = json.loads((kept / "summary.json").read_text())
    assert s["dmv_count"] == n      # the unedited segmentation measures as the run did
    assert s["dmv_width_mm"] == pytest.approx(analysis.summary["dmv_width_mm"], abs=1e-3)
    assert s["thalamic_vein_width_mm_left"] == pytest.approx(analysis.summary["thalamic_vein_width_mm_left"], abs=1e-3)
    # the kept vessels keep the run's DMV probabilities (read back from its vessels.csv)
    run = pd.read_csv(out_dir / "vessels.csv").set_index("vessel_id")
    again = pd.read_csv(kept / "vessels.csv").set_index("vessel_id")
    judged = run.index[run["dmv_probability"].notna()]
    assert len(judged) > 0 and np.array_equal(again.loc[judged, "dmv_probability"], run.loc[judged, "dmv_probability"])
    # without it the segments (regions and sides, not vessels) are one mask, split into vessels
    anew = tmp_path / "anew"
    anew.mkdir()
    assert main(["vessels-measure", swi, "--mask", seg, "--out", str(anew)]) == 0
    assert 0.8 * n <= json.loads((anew / "summary.json").read_text())["dmv_count"] <= n
    bad = tmp_path / "bad"
    bad.mkdir()
    assert main(["vessels-measure", swi, "--mask", seg, "--out", str(bad), "--previous", str(tmp_path)]) == 2
    assert not any(bad.iterdir())


def test_cli_params_file_sets_the_engine_and_a_summary_repeats_a_run(analysis, tmp_path, phantom_dir, capsys):
    # a scanner PSF wider than the voxel (interpolated reconstruction) is given as psf_extra_sigma_mm:
    # the width fit then attributes more of each vein's blur to the scanner, so veins read thinner
    from NeonatalBrainLib.cli import main

    swi = str(phantom_dir / "swi.nii.gz")
    (tmp_path / "psf.json").write_text(json.dumps({"psf_extra_sigma_mm": 0.25}))
    out = tmp_path / "psf"
    assert main(["vessels", swi, "--out", str(out), "--params", str(tmp_path / "psf.json")]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["provenance"]["parameters"]["psf_extra_sigma_mm"] == 0.25
    assert summary["provenance"]["psf"] == {"extra_sigma_mm": 0.25, "source": "given"}
    # by default it is estimated from the ventricle walls: none beyond the voxel on this phantom
    assert analysis.provenance["parameters"]["psf_extra_sigma_mm"] is None
    auto = analysis.provenance["psf"]
    assert auto["source"] == "ventricle walls" and auto["n_edges"] >= 50 and auto["extra_sigma_mm"] <= 0.1, auto
    assert summary["provenance"]["parameters"]["scales_mm"] == list(analysis.provenance["parameters"]["scales_mm"])
    fitted = pd.read_csv(out / "vessels.csv").query("region == 'dmv' and width_method == 'model_fit'")
    default = analysis.vessels.set_index("vessel_id")
    same = [v for v in fitted["vessel_id"] if v in default.index and default.loc[v, "width_method"] == "model_fit"]
    assert len(same) >= 10
    thinner = fitted.set_index("vessel_id").loc[same, "width_mm"] < default.loc[same, "width_mm"]
    assert thinner.mean() > 0.9, thinner.mean()
    # an earlier run's summary.json as --params repeats that run
    again = tmp_path / "again"
    assert main(["vessels", swi, "--out", str(again), "--params", str(out / "summary.json")]) == 0
    assert (again / "vessels.csv").read_text() == (out / "vessels.csv").read_text()
    # a mistyped setting or a broken file: exit status 2, the problem named, nothing written
    capsys.readouterr()
    (tmp_path / "typo.json").write_text(json.dumps({"psf_sigma_mm": 0.25}))
    (tmp_path / "broken.json").write_text("{psf_extra_sigma_mm: 0.25")
    (tmp_path / "negative.json").write_text(json.dumps({"psf_extra_sigma_mm": -0.1}))
    for name, message in (("typo.json", "did you mean psf_extra_sigma_mm"), ("broken.json", "not a readable JSON"),
                          ("missing.json", "not found"), ("negative.json", "psf_extra_sigma_mm: a sigma in mm, >= 0")):
        bad_out = tmp_path / f"out-{name}"
        assert main(["vessels", swi, "--out", str(bad_out), "--params", str(tmp_path / name)]) == 2
        assert message in capsys.readouterr().err
        assert not bad_out.exists() or not any(bad_out.iterdir())


def test_cli_batch_records_its_params_and_resumes_only_with_them(tmp_path, phantom_dir, capsys):
    from NeonatalBrainLib.cli import main

    cases = tmp_path / "cases.csv"
    cases.write_text(f"case_id,swi\nterm,{phantom_dir / 'swi.nii.gz'}\n")
    (tmp_path / "p.json").write_text(json.dumps({"psf_extra_sigma_mm": 0.25}))
    out = tmp_path / "batch"
    assert main(["vessels-batch", str(cases), "--out", str(out), "--params", str(tmp_path / "p.json")]) == 0
    recorded = json.loads((out / "batch_settings.json").read_text())
    assert recorded["parameters"]["psf_extra_sigma_mm"] == 0.25
    case_summary = json.loads((out / "term" / "summary.json").read_text())
    assert case_summary["provenance"]["parameters"] == recorded["parameters"]
    rows = (out / "metrics.csv").read_text()
    assert pd.read_csv(out / "metrics.csv")["field_of_view_whole_brain"].tolist() == [1]
    # resuming with the defaults would mix two settings in one metrics.csv: refused, nothing changed
    capsys.readouterr()
    assert main(["vessels-batch", str(cases), "--out", str(out)]) == 2
    assert "other settings (different: parameters.psf_extra_sigma_mm)" in capsys.readouterr().err
    assert (out / "metrics.csv").read_text() == rows
    assert main(["vessels-batch", str(cases), "--out", str(out), "--params", str(tmp_path / "p.json")]) == 0
    assert "0 cases done, 1 already done" in capsys.readouterr().out
    assert (out / "metrics.csv").read_text() == rows


def test_noisy_scan_is_flagged_by_the_detectability_index(phantom, tmp_path):
    # the phantom with noise raised ~3x (complex Gaussian, magnitude): the index (vein contrast /
    # noise SD x 0.6 mm / slice) falls below 2.3 and summary.json, the report and the CLI say so
    from NeonatalBrainLib.cli import main
    from NeonatalVesselsLib.pipeline import MIN_DMV_DETECTABILITY, detectability

    arr = np.asarray(phantom.swi.array, np.float32)
    tissue = float(np.median(arr[arr > np.percentile(arr, 60)]))
    rng = np.random.default_rng(1)
    noisy = np.abs(arr + rng.normal(0, 0.14 * tissue, arr.shape) + 1j * rng.normal(0, 0.14 * tissue, arr.shape))
    save_volume(phantom.swi.with_array(noisy.astype(np.float32)), tmp_path / "noisy.nii.gz")
    out = tmp_path / "out"
    assert main(["vessels", str(tmp_path / "noisy.nii.gz"), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    det = summary["provenance"]["detectability"]
    assert det["index"] == summary["dmv_detectability_index"] < MIN_DMV_DETECTABILITY
    assert det["index"] == pytest.approx(det["vein_contrast"] / det["noise_sd"] * 0.6 / det["largest_voxel_mm"], abs=0.02)
    assert len(summary["warnings"]) == 1 and "detectability index" in summary["warnings"][0]
    assert "Warning:</b> DMV detectability index" in (out / "report.html").read_text()
    # not judged without resolved veins
    assert detectability(0.6, 2, 0.05, (0.5, 0.5, 2.0))["index"] is None


def test_faint_veins_near_the_threshold_are_flagged_above_the_detectability_index(analysis):
    # the preterm phantom with fainter veins (lumen 0.4 instead of 0.08: vein contrast 0.46 instead of
    # 0.89) at the same noise finds 0.39 of its DMVs, but its index (3.3) is above 2.3: most DMVs it
    # finds are barely darker than the darkness threshold, and the run says so
    from NeonatalBrainLib.phantom import PRESETS, generate_phantom, with_changes
    from NeonatalVesselsLib.pipeline import (MAX_NEAR_THRESHOLD_FRACTION, MIN_DMV_DETECTABILITY, detection_warnings,
                                             near_threshold_fraction)

    faint = generate_phantom(seed=3, preset=with_changes(PRESETS["preterm"], swi_vein_signal=0.4), modalities=("swi",))
    result = run_vessel_analysis(faint.swi)
    det = result.summary["provenance"]["detectability"]
    res = evaluate(result.vessels, result.centerlines, {"vessels": faint.vessels})
    assert res["sensitivity"] < 0.6
    assert det["index"] > MIN_DMV_DETECTABILITY
    assert det["dmvs"] == result.summary["dmv_count"] >= 5
    assert det["dmv_near_threshold_fraction"] >= MAX_NEAR_THRESHOLD_FRACTION
    assert len(result.summary["warnings"]) == 1 and "barely darker" in result.summary["warnings"][0]
    # the test phantom (veins as dark as the preset makes them): no warning
    usual = analysis.summary["provenance"]["detectability"]
    assert usual["dmv_near_threshold_fraction"] < 0.1 and analysis.summary["warnings"] == []
    # the fraction and its warning
    assert near_threshold_fraction(np.array([0.1, 0.14, 0.16, 0.5]), 0.1) == 0.5    # < 1.5 x 0.1: two of four
    assert near_threshold_fraction(np.array([]), 0.1) is None
    below = {**usual, "dmvs": 4, "dmv_near_threshold_fraction": 0.9}
    assert detection_warnings(below) == []      # too few DMVs to judge


def test_cli_batch_cohort_point_spread(phantom, tmp_path, capsys, monkeypatch):
    # two scans of one protocol whose images are blurred beyond the voxel: --psf cohort estimates the
    # point-spread of each, runs every case with their median and keeps that value when resuming
    from scipy import ndimage

    from NeonatalBrainLib.cli import main
    from NeonatalVesselsLib import cli as vcli
    from NeonatalVesselsLib.pipeline import estimate_scanner_psf

    swi = phantom.swi
    sigma_vox = [0.25 / s if s < 1.0 else 0.0 for s in swi.spacing_mm]
    rows = ["case_id,swi"]
    estimates = []
    for n in (1, 2):
        arr = np.asarray(swi.array, np.float32)
        arr = ndimage.gaussian_filter(arr, sigma_vox) + np.random.default_rng(n).normal(0, 5.0, arr.shape)
        vol = swi.with_array(np.abs(arr).astype(np.float32))
        save_volume(vol, tmp_path / f"swi{n}.nii.gz")
        rows.append(f"c{n},{tmp_path / f'swi{n}.nii.gz'}")
        estimates.append(estimate_scanner_psf(vol)["extra_sigma_mm"])
    assert min(estimates) > 0.05, estimates
    (tmp_path / "cases.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "batch"
    assert main(["vessels-batch", str(tmp_path / "cases.csv"), "--out", str(out), "--psf", "cohort"]) == 0
    cohort = json.loads((out / "batch_settings.json").read_text())["cohort_psf"]
    assert cohort["n_cases"] == 2 and cohort["per_case"] == pytest.approx({"c1": estimates[0], "c2": estimates[1]})
    assert cohort["extra_sigma_mm"] == pytest.approx(float(np.median(estimates)), abs=1e-4)
    for case in ("c1", "c2"):
        psf = json.loads((out / case / "summary.json").read_text())["provenance"]["psf"]
        assert psf == {"extra_sigma_mm": cohort["extra_sigma_mm"], "source": "given"}
    # resuming keeps the recorded value (no second estimate); per-scan estimates would mix settings
    monkeypatch.setattr(vcli, "cohort_psf", lambda *a, **k: pytest.fail("estimated again on resume"))
    capsys.readouterr()
    assert main(["vessels-batch", str(tmp_path / "cases.csv"), "--out", str(out), "--psf", "cohort"]) == 0
    assert "0 cases done, 2 already done" in capsys.readouterr().out
    assert main(["vessels-batch", str(tmp_path / "cases.csv"), "--out", str(out)]) == 2
    assert "other settings" in capsys.readouterr().err


def test_an_interpolated_scan_is_judged_on_its_acquired_noise():
    """A 1.5 T scan reconstructed on a 1.5x finer grid in-plane (k-space zero-filled, as scanners'
    interpolation options do): neighbour differences read the noise x0.77 and the 0.5 mm smoothing
    of the local contrast seems to average 2.25x more samples than it does, so the noise gates
    fell to half and noise passed as veins (107 DMVs instead of 61, PPV 0.65).  The noise's
    correlation gives the acquired grid; the gates are those of the scan as acquired.  The same
    scan with overlapping slices: the slice decisions follow the acquired thickness."""
    from NeonatalBrainLib.phantom import generate_phantom, zero_filled

    ph = generate_phantom(seed=3, preset="term_1p5t", modalities=("swi",))
    truth = {"vessels": ph.vessels}
    fine = zero_filled(ph.swi, 1.5)
    assert np.allclose(fine.spacing_mm, [0.4, 0.4, 2.0])
    a = run_vessel_analysis(fine)
    prov = a.summary["provenance"]
    assert np.allclose(prov["noise_interpolation_factors"], [1.5, 1.5, 1.0], atol=0.1)
    true_dmvs = sum(v["region"] == "dmv" for v in ph.vessels)
    r = evaluate(a.vessels, a.centerlines, truth)
    assert r["ppv"] >= 0.9 and r["sensitivity"] >= 0.85, r
    assert abs(a.summary["dmv_count"] - true_dmvs) <= 0.1 * true_dmvs
    assert abs(prov["noise_sd"] - run_vessel_analysis(ph.swi).summary["provenance"]["noise_sd"]) < 0.01
    # overlapping slices (2 mm reconstructed every 1 mm): the slice decisions and the width model
    # take the acquired thickness (before: DMV widths 0.38 mm off, PPV 0.90)
    thin = zero_filled(ph.swi, 2.0, axes=(2,))
    assert np.allclose(thin.spacing_mm, [0.6, 0.6, 1.0])
    b = run_vessel_analysis(thin)
    assert np.allclose(b.summary["provenance"]["noise_interpolation_factors"], [1.0, 1.0, 1.8], atol=0.15)
    r = evaluate(b.vessels, b.centerlines, truth)
    assert r["width_mae_mm"] <= 0.15 and r["ppv"] >= 0.93 and r["sensitivity"] >= 0.85, r


def test_long_faint_dmvs_in_thick_slices_count():
    # 0.6-0.8 mm DMVs in 2 mm slices fit wider and fainter than they are; over >= 10 mm
    # (VesselParams.long_dmv_mm) a resolved fit needs only 0.25 x the scan's vein contrast instead
    # of 0.4 x: on term 1.5 T seed 12 this adds long DMVs, every one of them a true one
    from NeonatalBrainLib.phantom import generate_phantom
    from NeonatalVesselsLib.evaluation import match_vessels
    from NeonatalVesselsLib.pipeline import VesselParams

    ph = generate_phantom(seed=12, preset="term_1p5t", modalities=("swi",))
    truth = {"vessels": ph.vessels}
    on = run_vessel_analysis(ph.swi)
    off = run_vessel_analysis(ph.swi, params=VesselParams(long_dmv_mm=1e9))
    dmv_on = on.vessels[on.vessels["region"] == "dmv"].set_index("vessel_id")
    dmv_off = off.vessels[off.vessels["region"] == "dmv"]
    added = sorted(set(dmv_on.index) - set(dmv_off["vessel_id"]))
    assert added
    assert (dmv_on.loc[added, "length_mm"] >= VesselParams().long_dmv_mm).all()
    true = [v for v in ph.vessels if v["region"] == "dmv"]
    assert all(tid for tid, _ in match_vessels({i: on.centerlines[i] for i in added}, true).values())
    r_on, r_off = evaluate(on.vessels, on.centerlines, truth), evaluate(off.vessels, off.centerlines, truth)
    assert r_on["sensitivity"] > r_off["sensitivity"] and r_on["ppv"] >= r_off["ppv"] - 0.01, (r_on, r_off)


def test_engorged_dmvs_wider_than_1p9_mm_are_counted_when_the_scorer_is_sure():
    """DMVs of 1.2-2.2 mm (engorged veins): fitted wider than ``wide_dmv_mm`` (1.9 mm, the limit before
    round 31) they count when the line scorer gives them >= ``wide_dmv_min_probability``; with the
    old limit they were reported as ``other``."""
    import dataclasses

    from NeonatalBrainLib.phantom import PRESETS, generate_phantom, with_changes
    from NeonatalVesselsLib.pipeline import VesselParams

    ph = generate_phantom(seed=3, preset=with_changes(PRESETS["term_3t"], dmv_diameter_mm=(1.2, 2.2)),
                          modalities=("swi",))
    truth = {"vessels": ph.vessels}
    params = VesselParams()
    now = run_vessel_analysis(ph.swi)
    r_now = evaluate(now.vessels, now.centerlines, truth)
    assert r_now["sensitivity"] >= 0.9 and r_now["ppv"] >= 0.95 and r_now["width_mae_mm"] <= 0.1, r_now
    dmv = now.vessels[now.vessels["region"] == "dmv"]
    wide = dmv[dmv["width_mm"] > params.wide_dmv_mm]
    assert len(wide) >= 5 and (wide["dmv_probability"] >= params.wide_dmv_min_probability).all()
    assert (dmv["width_mm"] <= params.max_dmv_width_mm).all()
    assert now.provenance["dmv_scorer"]["min_probability_wide"] == params.wide_dmv_min_probability
    old = run_vessel_analysis(ph.swi, params=dataclasses.replace(params, max_dmv_width_mm=params.wide_dmv_mm))
    r_old = evaluate(old.vessels, old.centerlines, truth)
    assert r_old["sensitivity"] <= r_now["sensitivity"] - 0.1, (r_old, r_now)
    # the scorer decides the wide ones: asking it for certainty drops them again
    strict = run_vessel_analysis(ph.swi, params=dataclasses.replace(params, wide_dmv_min_probability=0.999))
    assert evaluate(strict.vessels, strict.centerlines, truth)["sensitivity"] <= r_now["sensitivity"] - 0.05


def test_a_swollen_brain_s_interhemispheric_fissure_is_not_taken_for_ventricles(monkeypatch):
    """A swollen brain (hypoxia-ischaemia): 0.5 mm of CSF around it, slit ventricles and shallow sulci.
    The brain mask then encloses the interhemispheric fissure, deep over most of its extent; it is
    bright and passes the depth rules, and before round 31 it was taken for ventricle (3-6 mL found
    for 1.7 mL), making the DMVs beside it fail.  Its edge lies at the brain surface, which no
    ventricle reaches (``masks.VENTRICLE_MAX_SHALLOW_FRACTION``)."""
    from NeonatalBrainLib.phantom import PRESETS, generate_phantom, with_changes
    from NeonatalVesselsLib import masks as mk

    swollen = generate_phantom(seed=3, modalities=("swi",), preset=with_changes(
        PRESETS["term_3t"], extracerebral_csf_mm=0.5, ventricle_scale=0.5, sulcal_depth_mm=4.0))
    true_mm3 = np.count_nonzero(swollen.swi_ventricles.array) * float(np.prod(swollen.swi.spacing_mm))
    result = run_vessel_analysis(swollen.swi)
    res = evaluate(result.vessels, result.centerlines, {"vessels": swollen.vessels})
    found = np.asarray(result.ventricles.array) > 0
    assert 0.7 * true_mm3 <= result.provenance["ventricles_mm3"] <= 1.3 * true_mm3, (result.provenance["ventricles_mm3"], true_mm3)
    assert np.count_nonzero(found & (np.asarray(swollen.swi_ventricles.array) > 0)) >= 0.6 * np.count_nonzero(found)
    assert res["sensitivity"] >= 0.85 and res["ppv"] >= 0.9, res
    monkeypatch.setattr(mk, "VENTRICLE_MAX_SHALLOW_FRACTION", 1.0)
    before = run_vessel_analysis(swollen.swi)
    assert before.provenance["ventricles_mm3"] > 2 * true_mm3
    assert evaluate(before.vessels, before.centerlines, {"vessels": swollen.vessels})["sensitivity"] < res["sensitivity"] - 0.03


def _independent_case(preset: str, seed: int, **changes):
    """One case of the independent phantom generator (benchmarks/) rendered in memory:
    ``(generator module, render dict, SWI Volume, truth as vessels.json holds it)``."""
    from benchmark_modules import benchmark_module

    gen = benchmark_module("independent_swi_phantom")
    r = gen.render(preset, seed, **changes)
    return gen, r, Volume(r["mag"], r["case"]["affine"]), {"vessels": gen.truth_vessels(r["case"])}

def test_a_thin_skull_under_bright_scalp_is_cut_from_the_brain_mask(monkeypatch):
    """The independent phantom's preterm case (seed 1) with its outer CSF x 0.2: a 1.5 mm calvarium
    between brain and scalp fat as bright as white matter.  Smoothed at 1 mm the skull rises above
    the threshold, and the brain mask held the scalp too (about 55 mL beyond 193 mL), unevenly: the
    head frame, taken from the mask's symmetry, and the midline moved, and 30 of 36 DMVs found were
    false (round 33).  The mask is cut where the image smoothed at 0.7 mm puts the skull."""
    from NeonatalVesselsLib import masks as mk

    gen, r, swi, truth = _independent_case("preterm", 1, extracerebral_csf_scale=0.2)
    affine, labels = r["case"]["affine"], r["labels"]
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    ml = float(np.prod(spacing)) / 1000.0
    intracranial = labels >= gen.CSF
    brain = mk.brain_mask(r["mag"], spacing)
    assert np.count_nonzero(brain & ~intracranial) * ml < 25.0
    assert np.count_nonzero(intracranial & ~brain) * ml < 1.0
    leaky = mk.head_object(r["mag"], spacing, smoothing_mm=mk.BRAIN_SMOOTHING_MM)
    assert np.count_nonzero(leaky & ~intracranial) * ml > 45.0
    result = run_vessel_analysis(swi)
    res = evaluate(result.vessels, result.centerlines, truth)
    assert res["ppv"] >= 0.9 and res["sensitivity"] >= 0.35, res
    monkeypatch.setattr(mk, "SKULL_CUT_MM", 1e6)        # no cut: the mask of 0.6.6
    before = run_vessel_analysis(swi)
    assert evaluate(before.vessels, before.centerlines, truth)["ppv"] < 0.5


def test_a_noisy_swollen_brain_s_slit_look_does_not_take_white_matter_for_ventricle(monkeypatch):
    """The independent phantom's 1.5 T case (seed 1) of a swollen brain: outer CSF x 0.2, ventricles
    x 0.5 (1.2 mL), noise SD 0.09 of tissue in 2 mm slices.  The first look finds 0.8 mL, so the slit
    look runs; at its floor of 1.1 the 0.5 mm-smoothed white matter (SD about 0.035) rose above it
    in dozens of places and along the ventricles: 4.1 mL of 'ventricles', 2.7 of them white matter,
    and no DMV found (round 34).  The slit look's threshold is now at least 1 + 5 x the smoothed noise SD."""
    from NeonatalBrainLib.imageio import reorient_to_canonical
    from NeonatalVesselsLib import masks as mk

    gen, r, swi, truth = _independent_case("term_1p5t", 1, ventricle_scale=0.5, extracerebral_csf_scale=0.2)
    true_vent = np.asarray(reorient_to_canonical(Volume((r["labels"] == gen.VENT).astype(np.uint8),
                                                        r["case"]["affine"]))[0].array) > 0
    true_ml = np.count_nonzero(true_vent) * float(np.prod(swi.spacing_mm)) / 1000.0
    result = run_vessel_analysis(swi)
    found = np.asarray(result.ventricles.array) > 0
    assert result.provenance["ventricles_mm3"] / 1000.0 < 1.6 * true_ml, (result.provenance["ventricles_mm3"], true_ml)
    assert np.count_nonzero(found & true_vent) >= 0.6 * np.count_nonzero(found)
    res = evaluate(result.vessels, result.centerlines, truth)
    assert res["n_pred"] >= 5 and res["ppv"] >= 0.9, res
    monkeypatch.setattr(mk, "SLIT_VENTRICLE_NOISE_Z", 0.0)      # the floor of 1.1 alone (0.6.7)
    before = run_vessel_analysis(swi)
    assert before.provenance["ventricles_mm3"] / 1000.0 > 2.5 * true_ml
    assert evaluate(before.vessels, before.centerlines, truth)["n_pred"] < res["n_pred"]


def test_atlas_phantom_with_its_third_ventricle_bridged_to_the_cisterns_and_its_own_tissue_mask():
    """The third generator's (``benchmarks/atlas_swi_phantom.py``: the MNI152 anatomy scaled to a
    neonate, dipole-field blooming, Rician noise) oblique low-SNR case, seed 4: its 3.8 mL of
    ventricles join the basal cisterns through a third ventricle whose membranes the 1.5 mm slices
    blur away, so every bright component reaching them was CSF open to the surface: 0.11 mL of
    ventricles were found and no DMV (0.6.9).  The look that splits the bright voxels at their narrow
    bridges finds the lateral ventricles.  Its many broad faint dark bands (2-2.6 mm, contrast
    0.1-0.2) had also set the scan's vein contrast: the widths of the DMVs measured by their dark
    area read 0.7-1.2 mm too wide on that generator's other cases (round 36)."""
    import tempfile
    from pathlib import Path

    from benchmark_modules import benchmark_module

    with tempfile.TemporaryDirectory() as tmp:
        benchmark_module("atlas_swi_phantom").generate(tmp, "oblique_low_snr", 4)
        swi, truth = load_volume(Path(tmp) / "swi.nii.gz"), load_truth(tmp)
        true_ventricles_mm3 = float(load_volume(Path(tmp) / "ventricles.nii.gz").array.sum() * np.prod(swi.spacing_mm))
        tissue_mask = load_volume(Path(tmp) / "brain_mask.nii.gz").array > 0
    a = run_vessel_analysis(swi)
    res = evaluate(a.vessels, a.centerlines, truth)
    assert 0.8 * true_ventricles_mm3 < a.provenance["ventricles_mm3"] < 1.3 * true_ventricles_mm3
    assert res["sensitivity"] >= 0.45 and res["ppv"] >= 0.9
    assert a.provenance["vein_contrast"] > 0.5            # 0.26 from the broad faint bands
    assert abs(res["width_bias_mm"]) < 0.45
    # given the generator's brain mask, brain tissue and ventricles without the CSF of the fissures and
    # cisterns, the ventricles lay 4 mm below its surface and failed the depth rules: 0.01 mL, no DMV
    # (0.6.9, every case of this generator); the depth is now taken below the mask closed over them
    g = run_vessel_analysis(swi, brain_mask=tissue_mask)
    res_g = evaluate(g.vessels, g.centerlines, truth)
    assert 0.5 * true_ventricles_mm3 < g.provenance["ventricles_mm3"] < 1.5 * true_ventricles_mm3
    assert res_g["sensitivity"] >= 0.6


def test_faint_dmvs_the_scorer_is_sure_of_are_kept_and_remeasured_alike():
    """The third generator's 1.5 T case, seed 1 (2 mm slices, white-matter SNR 14): thin DMVs whose
    mean centreline darkness falls under the noise-scaled bar, refused by the darkness rule alone,
    are kept when the line scorer gives them >= 0.6 (round 37: 7 of its 8 such lines, each on a true
    DMV; sensitivity 0.62 -> 0.71).  The faint lines left `other` are reported unfitted, so a
    re-measurement of the unedited labelmap with the run kept reads the same vein contrast and widths."""
    import dataclasses
    import tempfile
    from pathlib import Path

    from benchmark_modules import benchmark_module

    from NeonatalVesselsLib import PreviousRun
    from NeonatalVesselsLib.evaluation import match_vessels
    from NeonatalVesselsLib.params import VesselParams

    with tempfile.TemporaryDirectory() as tmp:
        benchmark_module("atlas_swi_phantom").generate(tmp, "term_1p5t", 1)
        swi, truth = load_volume(Path(tmp) / "swi.nii.gz"), load_truth(tmp)
    a = run_vessel_analysis(swi)
    scorer = a.provenance["dmv_scorer"]
    kept, judged = scorer["faint_dmvs_kept"], scorer["faint_dmvs_judged"]
    rows = a.vessels.set_index("vessel_id")
    assert len(kept) >= 4 and set(kept) <= set(judged)
    assert (rows.loc[kept, "region"] == "dmv").all() and (rows.loc[kept, "dmv_probability"] >= 0.6).all()
    refused = sorted(set(judged) - set(kept) & set(rows.index))
    assert (rows.loc[refused, "region"] == "other").all() and (rows.loc[refused, "width_method"] == "volume").all()
    true_dmvs = [v for v in truth["vessels"] if v["region"] == "dmv"]
    assert all(tid for tid, _ in match_vessels({k: a.centerlines[k] for k in kept}, true_dmvs).values())
    off = run_vessel_analysis(swi, params=dataclasses.replace(VesselParams(), faint_dmv_rescue_probability=1.0))
    assert off.provenance["dmv_scorer"]["faint_dmvs_kept"] == []
    assert evaluate(a.vessels, a.centerlines, truth)["sensitivity"] >= evaluate(off.vessels, off.centerlines, truth)["sensitivity"] + 0.05
    same = measure_vessel_mask(swi, a.vessel_labels.array, brain_mask=a.brain_mask, ventricles=a.ventricles,
                               previous=PreviousRun.from_analysis(a))
    assert same.provenance["vein_contrast"] == a.provenance["vein_contrast"]
    assert same.summary["dmv_count"] == a.summary["dmv_count"]
    assert same.summary["dmv_width_mm"] == pytest.approx(a.summary["dmv_width_mm"], abs=1e-4)
