"""The independent SWI phantom generator of the benchmarks (benchmarks/independent_swi_phantom.py):
its files are what the accuracy benchmark reads (NIfTI on its preset grid, a truth the
project's evaluation accepts), its veins are dark where the truth puts them, and it is
deterministic.  (The accuracy itself is measured in benchmarks/, not asserted here.)"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from benchmark_modules import benchmark_module
from scipy import ndimage


@pytest.fixture(scope="module")
def generator():
    return benchmark_module("independent_swi_phantom")


@pytest.fixture(scope="module")
def detectability():
    return benchmark_module("vessel_detectability")


@pytest.fixture(scope="module")
def preterm_1(generator, tmp_path_factory):
    """The folder of the independent phantom's preterm case, seed 1."""
    out = tmp_path_factory.mktemp("independent") / "preterm_1"
    generator.generate(out, "preterm", 1, verbose=False)
    return out


def test_preterm_case_files_truth_and_vein_darkness(generator, preterm_1, tmp_path):
    from NeonatalBrainLib.imageio import load_volume
    from NeonatalVesselsLib.evaluation import evaluate, load_truth

    out = preterm_1
    swi = load_volume(out / "swi.nii.gz")
    truth = load_truth(out)
    assert np.allclose(swi.spacing_mm, (0.5, 0.5, 2.0), atol=1e-4)
    assert np.isfinite(swi.array).all() and swi.array.ndim == 3
    dmv = [v for v in truth["vessels"] if v["region"] == "dmv"]
    assert {v["side"] for v in dmv} == {"left", "right"}
    assert {"vessel_id", "region", "side", "diameter_mm", "tortuosity", "curvature_per_mm",
            "centerline_ras_mm"} <= set(dmv[0])
    # left veins lie at RAS x < 0 (the patient's left), and every DMV is darker at its centreline
    # than 3 mm beside it, in the median over the phantom's DMVs
    inv = np.linalg.inv(swi.affine)
    img = np.asarray(swi.array, np.float32)
    ratios = []
    for v in dmv:
        p = np.asarray(v["centerline_ras_mm"], float)
        assert (np.median(p[:, 0]) < 0) == (v["side"] == "left")
        side = p + np.array([0.0, 0.0, 3.0])
        at = ndimage.map_coordinates(img, (p @ inv[:3, :3].T + inv[:3, 3]).T, order=1)
        beside = ndimage.map_coordinates(img, (side @ inv[:3, :3].T + inv[:3, 3]).T, order=1)
        ratios.append(np.median(at) / np.median(beside))
    assert np.median(ratios) < 0.97, np.median(ratios)
    # the project's evaluation reads this truth: the truth scored against itself is perfect
    import pandas as pd
    table = pd.DataFrame([{"vessel_id": v["vessel_id"], "region": v["region"], "side": v["side"],
                           "width_mm": v["diameter_mm"], "tortuosity": v["tortuosity"],
                           "curvature_per_mm": v["curvature_per_mm"]} for v in truth["vessels"]])
    lines = {v["vessel_id"]: np.asarray(v["centerline_ras_mm"], float) for v in truth["vessels"]}
    res = evaluate(table, lines, truth)
    assert res["sensitivity"] == 1.0 and res["ppv"] == 1.0 and res["width_mae_mm"] == 0.0
    # deterministic: the same case again gives the same bytes
    again = tmp_path / "again"
    generator.generate(again, "preterm", 1, verbose=False)
    digest = [hashlib.sha256((d / "vessels.json").read_bytes()).hexdigest() for d in (out, again)]
    assert digest[0] == digest[1]
    assert np.array_equal(load_volume(again / "swi.nii.gz").array, swi.array)


def test_ventricle_scale_narrows_only_the_lateral_ventricles(generator):
    """``ventricle_scale`` (round 30's slit ventricles) scales the lateral ventricles' radii; the
    same random draws (their centres, the choroid plexus, the pose) are kept."""
    as_is, slit = generator.build_case("term_3t", 2), generator.build_case("term_3t", 2, 0.4)
    a, b = as_is["anat"], slit["anat"]
    assert np.allclose(b.lat_vent.c, a.lat_vent.c) and np.allclose(b.lat_vent.r, 0.4 * a.lat_vent.r)
    assert all(np.allclose(x[0], y[0]) and np.allclose(x[1], y[1]) for x, y in zip(a.choroid, b.choroid))
    assert as_is["pose"].s == slit["pose"].s
    assert sum(v["region"] == "dmv" for v in slit["vessels"]) > 20


def test_dmv_diameter_scale_widens_only_the_dmvs(generator):
    """``dmv_diameter_scale`` (round 31's engorged DMVs) multiplies each DMV's drawn diameter; the
    veins placed before the DMVs (internal cerebral, thalamostriate, anterior caudate) are the same."""
    as_is, wide = generator.build_case("term_3t", 2), generator.build_case("term_3t", 2, dmv_diameter_scale=1.8)
    walls = [[(v["region"], v["diameter_mm"]) for v in c["vessels"] if v["region"] in
              ("internal_cerebral", "thalamic", "anterior_caudate")] for c in (as_is, wide)]
    assert walls[0] == walls[1] and len(walls[0]) >= 4
    d = [np.array([v["diameter_mm"] for v in c["vessels"] if v["region"] == "dmv"]) for c in (as_is, wide)]
    assert d[0][0] * 1.8 == pytest.approx(d[1][0])      # the first DMV: the same draw, 1.8 x as wide
    assert d[1].min() >= 0.4 * 1.8 and d[1].max() <= 1.2 * 1.8 and d[1].max() > 1.2 >= d[0].max()
    assert len(d[1]) > 20


def test_extracerebral_csf_scale_narrows_the_csf_around_the_brain(generator):
    """``extracerebral_csf_scale`` (round 32's swollen brain) scales the CSF layer between brain and
    skull; the brain itself and the pose are the same draws."""
    as_is, swollen = generator.build_case("preterm", 2), generator.build_case("preterm", 2, extracerebral_csf_scale=0.2)
    a, b = as_is["anat"], swollen["anat"]
    assert b.t_csf == pytest.approx(0.2 * a.t_csf) and (b.ax, b.t_skull) == (a.ax, a.t_skull)
    assert as_is["pose"].s == swollen["pose"].s


def test_detectability_of_the_phantom_dmvs(generator, detectability, preterm_1):
    """benchmarks/vessel_detectability.py: render() is the image generate() writes, and the
    matched-filter z of each DMV (its own template at its place against vein-free white matter)
    follows the ideal observer's d' (a template off the vein would give z ~ 0 whatever d')."""
    from scipy.stats import spearmanr

    from NeonatalBrainLib.imageio import load_volume

    rendered = generator.render("preterm", 1)
    assert np.array_equal(load_volume(preterm_1 / "swi.nii.gz").array, rendered["mag"])
    df = detectability.case_detectability(rendered, n_null=100)
    assert len(df) == sum(v["region"] == "dmv" for v in rendered["case"]["vessels"]) > 20
    assert (df["n_null"] >= 30).all() and np.isfinite(df[["dprime", "z"]].to_numpy()).all()
    # white noise alone would give a null SD of 1 x noise; the texture and the high-pass add to it
    assert 0.9 < df["null_sd_over_noise"].median() < 2.0
    assert df["z"].median() > 4.0 and df["z"].median() < df["dprime"].median()
    assert spearmanr(df["z"], df["dprime"]).statistic > 0.4
    assert ((df["ideal_search"] >= 0) & (df["ideal_search"] <= 1)).all()


def test_detectability_of_the_project_phantom_dmvs(detectability, tmp_path, monkeypatch):
    """benchmarks/vessel_detectability.py on the project's phantom (from its files): each DMV's
    voxel-fraction template at its place stands out of the white matter; moved off the vein it
    does not."""
    from NeonatalBrainLib.phantom import write_phantom

    folder = write_phantom(tmp_path / "case", seed=5, preset="term_1p5t", modalities=("swi",))
    df = detectability.project_case_detectability(folder, n_null=60)
    # a few DMVs among dense veins find too few vein-free places for a null: no z
    assert len(df) > 20 and (df["n_null"] >= 30).mean() > 0.8 and df["z"].isna().equals(df["n_null"] < 30)
    assert df["z"].median() > 6.0 and 0.9 < df["null_sd_over_noise"].median() < 2.0
    # the same templates 6 voxels off their veins: no signal left
    real = detectability.matched_filter_z

    def off_vein(residual, box, deficit, hp_sigma, **kw):
        return real(residual, tuple(slice(b.start + 6, b.stop + 6) for b in box), deficit, hp_sigma, **kw)
    monkeypatch.setattr(detectability, "matched_filter_z", off_vein)
    off = detectability.project_case_detectability(folder, n_null=60)
    assert abs(np.nanmedian(off["z"])) < 2.0


def test_radial_line_search_finds_a_thin_radial_vein_in_noise():
    """benchmarks/radial_line_search.py: on white matter with white noise around a box-shaped
    ventricle, the line with the highest lateral z lies on the one thin dark radial vein and
    stands out of the noise lines and of a darker band 4 mm wide (no vein: its sides are as
    dark); the same line moved 3 mm sideways has no lateral contrast."""
    search = benchmark_module("radial_line_search")
    spacing = np.array([0.5, 0.5, 2.0])
    shape = (120, 120, 16)
    rng = np.random.default_rng(3)
    image = 1.0 + 0.08 * rng.standard_normal(shape).astype(np.float32)
    ventricles = np.zeros(shape, bool)
    ventricles[50:70, 50:70, 4:12] = True
    image[ventricles] = 1.4
    # the vein: 0.5 mm wide (one voxel), 12 mm long, out of the ventricle's +x wall along x, slice 8
    image[70:94, 60, 8] -= 0.3
    # the band: 4 mm wide in-plane, darker than the vein, out of the -x wall
    image[26:50, 52:60, 8] -= 0.35
    brain = np.zeros(shape, bool)
    brain[5:115, 5:115, 1:15] = True
    vent_dist = ndimage.distance_transform_edt(~ventricles, sampling=spacing)
    depth = ndimage.distance_transform_edt(brain, sampling=spacing)
    lines = search.radial_lines(image, spacing, brain, ventricles, vent_dist, depth, max_lines=150)
    z = np.array([line["lateral_z"] for line in lines])
    best = lines[int(np.argmax(z))]
    p = best["points_vox"]
    assert np.abs(p[:, 1] - 60).max() * 0.5 < 1.0 and np.abs(p[:, 2] - 8).max() * 2.0 < 1.0
    assert 70 <= p[:, 0].min() and p[:, 0].max() <= 94 and best["length_mm"] >= 9.0
    others = np.delete(z, int(np.argmax(z)))
    assert z.max() > 5.0 and z.max() > others.max() + 2.0
    e = search.evidence(image, spacing, brain & ~ventricles)
    moved = search.lateral_z(e, p + np.array([0.0, 6.0, 0.0]), np.array([1.0, 0.0, 0.0]), spacing)
    assert abs(moved) < 3.0
