"""Phantom presets, injuries, cohorts and the CLI."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy.spatial import cKDTree

from NeonatalBrainLib.anatomy import LABEL_VALUES
from NeonatalBrainLib.imageio import InputError, Volume, load_volume
from NeonatalBrainLib.phantom import PRESETS, InjurySpec, generate_phantom, with_changes
from NeonatalBrainLib.phantom.anatomy_model import build_model
from NeonatalBrainLib.phantom.generator import noise_gain_map, rician
from NeonatalBrainLib.phantom.cohort import draw_subjects
from NeonatalBrainLib.phantom.vessels import build_vessels


def _roi_mean(t1, labels, names) -> float:
    return float(np.mean(t1.array[np.isin(labels.array, [LABEL_VALUES[n] for n in names])]))


def _volume_ml(labels, names) -> float:
    n = np.count_nonzero(np.isin(labels.array, [LABEL_VALUES[x] for x in names]))
    return n * float(np.prod(labels.spacing_mm)) / 1000.0


def test_t1_only_matches_the_full_phantom(phantom, phantom_t1_only):
    assert phantom_t1_only.swi is None and phantom_t1_only.vessels == []
    assert np.array_equal(phantom_t1_only.t1.array, phantom.t1.array)
    assert np.array_equal(phantom_t1_only.labels.array, phantom.labels.array)


def test_preterm_preset_differs_as_stated(phantom_t1_only):
    pre = generate_phantom(seed=0, preset="preterm", modalities=("t1",))
    term = phantom_t1_only
    brain = [n for n in LABEL_VALUES if n not in ("extracerebral_csf",)]
    vent = ["lateral_ventricle_left", "lateral_ventricle_right"]
    assert _volume_ml(pre.labels, brain) < 0.7 * _volume_ml(term.labels, brain)
    assert _volume_ml(pre.labels, vent) > 1.3 * _volume_ml(term.labels, vent)
    # no PLIC myelination: PLIC not brighter than thalamus (term: clearly brighter)
    plic, thal = ["plic_left", "plic_right"], ["thalamus_left", "thalamus_right"]
    assert _roi_mean(term.t1, term.labels, plic) > 1.15 * _roi_mean(term.t1, term.labels, thal)
    assert _roi_mean(pre.t1, pre.labels, plic) < 1.05 * _roi_mean(pre.t1, pre.labels, thal)
    # fewer, thinner DMVs (vessel geometry only: no rendering needed)
    def dmvs(preset):
        rng = np.random.default_rng(5)
        return [v for v in build_vessels(build_model(PRESETS[preset], rng), rng) if v["region"] == "dmv"]
    d_term, d_pre = dmvs("term_3t"), dmvs("preterm")
    assert len(d_pre) < 0.7 * len(d_term)
    assert np.mean([v["diameter_mm"] for v in d_pre]) < np.mean([v["diameter_mm"] for v in d_term])


def _background_sigma(vol, labels) -> float:
    """Noise sigma from the air background (Rayleigh: mean = sigma * sqrt(pi / 2))."""
    from scipy.ndimage import binary_dilation

    head = binary_dilation(labels.array > 0, iterations=12)
    return float(np.mean(vol.array[~head]) / np.sqrt(np.pi / 2))


def test_acquisition_presets(phantom_t1_only):
    low = generate_phantom(seed=0, preset="term_1p5t", modalities=("t1",))
    snr_low = _roi_mean(low.t1, low.labels, ["white_matter_left"]) / _background_sigma(low.t1, low.labels)
    term = phantom_t1_only
    snr_term = _roi_mean(term.t1, term.labels, ["white_matter_left"]) / _background_sigma(term.t1, term.labels)
    assert snr_low < 0.75 * snr_term
    assert np.allclose(low.t1.spacing_mm, PRESETS["term_1p5t"].t1_spacing_mm)
    assert PRESETS["isotropic"].swi_spacing_mm == (0.6, 0.6, 0.6)
    obl = generate_phantom(seed=0, preset="oblique_low_snr", modalities=("t1",))
    d = obl.t1.direction
    assert np.max(np.abs(d), axis=0).min() < np.cos(np.deg2rad(4))  # no axis aligned with R, A or S
    # the side labels stay correct on the oblique grid
    for s in ("thalamus", "putamen"):
        xl = obl.labels.ijk_to_ras(np.argwhere(obl.labels.array == LABEL_VALUES[f"{s}_left"]))
        xr = obl.labels.ijk_to_ras(np.argwhere(obl.labels.array == LABEL_VALUES[f"{s}_right"]))
        pose = np.array(obl.subject["brain_to_ras"])
        lb = (xl - pose[:3, 3]) @ pose[:3, :3]
        rb = (xr - pose[:3, 3]) @ pose[:3, :3]
        assert lb[:, 0].mean() < 0 < rb[:, 0].mean()
    rot = obl.subject["head_rotation_deg_xyz"]
    assert max(abs(a) for a in rot) > 4.0


def test_bilirubin_injury_brightens_the_pallidum(phantom_dir, injured_phantom_dir):
    ctl_t1, ctl_lab = load_volume(phantom_dir / "t1.nii.gz"), load_volume(phantom_dir / "labels.nii.gz")
    inj_t1, inj_lab = load_volume(injured_phantom_dir / "t1.nii.gz"), load_volume(injured_phantom_dir / "labels.nii.gz")
    assert np.array_equal(ctl_lab.array, inj_lab.array)
    for side in ("left", "right"):
        gp = [f"globus_pallidus_{side}"]
        assert _roi_mean(inj_t1, inj_lab, gp) > 1.25 * _roi_mean(ctl_t1, ctl_lab, gp)
        th = [f"thalamus_{side}"]
        assert _roi_mean(inj_t1, inj_lab, th) == pytest.approx(_roi_mean(ctl_t1, ctl_lab, th), rel=0.01)
    subject = json.loads((injured_phantom_dir / "subject.json").read_text())
    assert subject["injury"]["kind"] == "bilirubin" and subject["injury"]["strength"] == 1.0


def test_asymmetric_and_hie_injuries(phantom_t1_only):
    ctl = phantom_t1_only
    asym = generate_phantom(0, injury=InjurySpec("bilirubin", 0.8, asymmetry=1.0, weaker_side="left"),
                            modalities=("t1",))
    gl, gr = ["globus_pallidus_left"], ["globus_pallidus_right"]
    assert _roi_mean(asym.t1, asym.labels, gl) == pytest.approx(_roi_mean(ctl.t1, ctl.labels, gl), rel=0.01)
    assert _roi_mean(asym.t1, asym.labels, gr) > 1.2 * _roi_mean(ctl.t1, ctl.labels, gr)
    hie = generate_phantom(0, injury=InjurySpec("hie", 1.0), modalities=("t1",))
    for s in ("left", "right"):
        assert _roi_mean(hie.t1, hie.labels, [f"plic_{s}"]) < 0.8 * _roi_mean(ctl.t1, ctl.labels, [f"plic_{s}"])
        assert _roi_mean(hie.t1, hie.labels, [f"putamen_{s}"]) > 1.15 * _roi_mean(ctl.t1, ctl.labels, [f"putamen_{s}"])
    with pytest.raises(InputError):
        InjurySpec("stroke")
    with pytest.raises(InputError):
        InjurySpec("bilirubin", strength=1.5)


def test_cohort_csv_and_centres(phantom_cohort_factory):
    csv_a = phantom_cohort_factory(2, center="A", seed=0)
    csv_b = phantom_cohort_factory(2, center="B", seed=0)
    for path, centre in ((csv_a, "A"), (csv_b, "B")):
        rows = list(csv.DictReader(open(path)))
        assert list(rows[0]) == ["subject_id", "t1", "swi", "label", "center", "birthweight_g",
                                 "gestational_age_weeks", "sex"]
        assert len(rows) == 2 and sum(int(r["label"]) for r in rows) == 1
        assert {r["center"] for r in rows} == {centre}
        assert (path.parent / "labels.csv").is_file()
        for r in rows:
            assert (path.parent / r["t1"]).is_file() and r["swi"] == ""
            assert 1500 < float(r["birthweight_g"]) < 5500 and 34 <= float(r["gestational_age_weeks"]) <= 43
            assert r["sex"] in ("M", "F")
    seeds_a = {json.loads((csv_a.parent / r["subject_id"] / "subject.json").read_text())["seed"]
               for r in csv.DictReader(open(csv_a))}
    seeds_b = {json.loads((csv_b.parent / r["subject_id"] / "subject.json").read_text())["seed"]
               for r in csv.DictReader(open(csv_b))}
    assert not seeds_a & seeds_b  # different neonates at the two centres
    ta = load_volume(csv_a.parent / next(csv.DictReader(open(csv_a)))["t1"])
    tb = load_volume(csv_b.parent / next(csv.DictReader(open(csv_b)))["t1"])
    assert not np.allclose(ta.spacing_mm, tb.spacing_mm)
    assert np.median(tb.array[tb.array > 0]) > 1.5 * np.median(ta.array[ta.array > 0])  # intensity scaling


def test_cohort_clinical_association_in_expectation():
    rows = draw_subjects(4000, seed=3)
    bw = np.array([r["birthweight_g"] for r in rows])
    lab = np.array([r["label"] for r in rows])
    diff = bw[lab == 0].mean() - bw[lab == 1].mean()
    assert 100 < diff < 400  # weak: injured infants a little lighter
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(lab, -bw)
    assert 0.55 < auc < 0.75  # an association, not a give-away
    kinds = {r["injury"].kind for r in draw_subjects(40, seed=1, injury="mixed") if r["injury"]}
    assert kinds == {"bilirubin", "hie"}
    strengths = [r["injury"].strength for r in rows if r["injury"]]
    assert min(strengths) < 0.45 and max(strengths) > 0.9


def test_cli_phantom_and_cohort(tmp_path, capsys):
    from NeonatalBrainLib.cli import main

    assert main(["phantom", "--out", str(tmp_path / "p"), "--preset", "preterm", "--seed", "2",
                 "--modalities", "t1", "--injury", "hie", "--injury-strength", "0.5"]) == 0
    subject = json.loads((tmp_path / "p" / "subject.json").read_text())
    assert subject["preset"] == "preterm" and subject["injury"]["kind"] == "hie"
    assert subject["injury"]["strength"] == 0.5
    assert not (tmp_path / "p" / "swi.nii.gz").exists()
    assert main(["phantom-cohort", "--out", str(tmp_path / "c"), "--n", "1", "--center", "B",
                 "--modalities", "t1"]) == 0
    assert (tmp_path / "c" / "cohort.csv").is_file()
    assert main(["phantom", "--out", str(tmp_path / "q"), "--injury-strength", "2", "--injury", "bilirubin",
                 "--modalities", "t1"]) == 2


def test_numpy_labelling_twin_matches_the_numba_kernel(monkeypatch):
    """Where numba is missing (e.g. a Slicer Python) the numpy twin gives the same tissue labels."""
    from NeonatalBrainLib.phantom import anatomy_model as am

    pts = np.random.default_rng(2).uniform([-65, -75, -55], [65, 75, 55], (150_000, 3))
    for preset in ("term_3t", "preterm"):
        model = build_model(PRESETS[preset], np.random.default_rng(1))
        fast = model.tissue(pts)
        monkeypatch.setattr(am, "_KERNEL", am._cortex_numpy)
        twin = model.tissue(pts)
        monkeypatch.setattr(am, "_KERNEL", None)
        assert len(np.unique(fast)) >= 20
        assert np.count_nonzero(fast != twin) <= 2, preset  # rounding at an exact boundary at most


def test_fainter_veins_change_only_the_vessel_voxels_and_are_recorded(phantom):
    # Preset.swi_vein_signal: the lumen's SWI magnitude (0.08 by default; white matter 0.74)
    faint = generate_phantom(seed=0, preset=with_changes(PRESETS["term_3t"], swi_vein_signal=0.3),
                             modalities=("swi",))
    assert faint.subject["preset_changes"] == {"swi_vein_signal": 0.3}
    assert "preset_changes" not in phantom.subject
    # the same veins, the same truth
    assert faint.summary == phantom.summary
    assert np.array_equal(faint.vessel_labels.array, phantom.vessel_labels.array)
    before, after = np.asarray(phantom.swi.array), np.asarray(faint.swi.array)
    vessel = np.asarray(phantom.vessel_labels.array) > 0
    changed = np.argwhere(before != after)
    assert len(changed)
    # same noise and bias draws: only voxels a vein fills in part change, those whose centre lies
    # within the vein's radius plus half the voxel's diagonal of its centreline (+ 0.1 mm: the
    # truth's centreline points lie 0.2 mm apart)
    points = np.vstack([np.asarray(v["centerline_ras_mm"], float) for v in phantom.vessels])
    radius = np.concatenate([np.full(len(v["centerline_ras_mm"]), v["diameter_mm"] / 2) for v in phantom.vessels])
    centres = changed @ phantom.swi.affine[:3, :3].T + phantom.swi.affine[:3, 3]
    distance, nearest = cKDTree(points).query(centres)
    half_diagonal = 0.5 * float(np.linalg.norm(phantom.swi.spacing_mm))
    assert np.all(distance <= radius[nearest] + half_diagonal + 0.1)
    # a voxel mostly vein (fraction >= 0.5) is brighter by 0.5-1 x (0.3 - 0.08) x the signal
    # scale (1000), times the receive bias (the preset's amplitude 0.12), plus the noise's change
    gain = np.median((after - before)[vessel]) / (0.22 * PRESETS["term_3t"].swi_scale)
    assert 0.5 * 0.88 < gain < 1.12
    with pytest.raises(InputError, match="swi_vein_signal"):
        with_changes(PRESETS["term_3t"], swi_vein_signal=-0.1)
    with pytest.raises(InputError, match="swi_noise_centre_gain"):
        with_changes(PRESETS["term_3t"], swi_noise_centre_gain=0.5)


def test_noise_gain_map_and_rician_noise_that_varies_across_the_image():
    # parallel imaging's g-factor: the noise SD is amplified most in the middle of the field of view
    grid = Volume(np.zeros((61, 81, 21), np.uint8), np.diag([0.5, 0.5, 2.0, 1.0]))
    gain = noise_gain_map(grid, 1.6, width_mm=20.0)
    assert gain.shape == grid.shape and gain.dtype == np.float32
    assert gain[30, 40, 10] == pytest.approx(1.6) and gain.max() == pytest.approx(1.6)
    r_mm = 15.0     # 30 voxels of 0.5 mm along j
    assert gain[30, 10, 10] == pytest.approx(1 + 0.6 * np.exp(-r_mm ** 2 / (2 * 20.0 ** 2)), rel=1e-6)
    assert np.allclose(gain, gain[::-1, ::-1, ::-1])
    # Rician noise of zero signal: Rayleigh magnitudes of mean sigma sqrt(pi / 2) wherever sigma is
    sigma = np.broadcast_to(np.where(np.arange(61) < 30, 1.0, 3.0)[:, None, None], grid.shape)
    noise = rician(np.zeros(grid.shape, np.float32), sigma, np.random.default_rng(0))
    for half, s in ((noise[:30], 1.0), (noise[31:], 3.0)):
        assert half.mean() == pytest.approx(s * np.sqrt(np.pi / 2), rel=0.01)
