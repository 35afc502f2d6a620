"""How detectable each true DMV of a phantom case is, against what the engine finds.

Usage::

    .venv/bin/python benchmarks/vessel_detectability.py --presets preterm term_1p5t --seeds 15 16 \
        [--generator independent|project] [--cache DIR] [--no-engine] [--out per_dmv.csv]

Per true DMV of a case of ``benchmarks/independent_swi_phantom.py`` (default; re-rendered in
memory with :func:`independent_swi_phantom.render`, checked equal to the cached
``swi.nii.gz``) or of the project's phantom (``--generator project``; from the case's files,
:func:`project_case_detectability`):

``dprime``
    The ideal observer's detectability with the signal and the background known exactly
    (SKE/BKE): ``sqrt(sum_i delta_i^2) / sigma``, ``delta`` the DMV's own intensity deficit per
    voxel (the vein rendered alone, the generator's bias field and point-spread applied) and
    ``sigma`` the noise SD of each complex channel (the magnitude's noise is close to Gaussian
    at these SNRs).  On the project phantom without its bias field (a few per cent).
``z``
    A matched filter on the noisy image with the background unknown: the DMV's deficit,
    high-passed (minus its Gaussian of ``highpass_mm``), weights the image's high-pass residual
    (its Gaussian minus the image: dark is positive); ``z`` is that sum at the vein's place
    against the same template moved to ``n_null`` places of vein-free white matter of the same
    image (the noise and the generator's white-matter texture): ``(s - mean) / SD``.

Both know the vein's place and shape.  A detector must search the brain for them: with of the
order of 1e5-1e6 distinct candidate veins in a brain and a few false ones allowed, it needs
``z`` of about 4.5 (one-sided Gaussian tail 3e-6) to report a vein.  ``ideal_search`` =
``Phi(z - 4.5)`` is then the chance that such an observer reports the DMV; its mean over a
case's DMVs bounds the sensitivity any detector reaches there at a useful PPV (optimistically:
the real search also has to find the shape, and the 4.5 does not count every path a bent vein
could take).  ``detected``: the engine
(``run_vessel_analysis``, fully automatic) reports a DMV matching it
(``NeonatalVesselsLib.evaluation.match_vessels``).

A DMV whose template finds fewer than 30 vein-free places (dense veins, the brain's edge) gets
no ``z`` and is left out of the fractions.  Prints one line per case and a table per preset;
``--out`` writes the per-DMV rows.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.stats import norm as gaussian

sys.path.insert(0, str(Path(__file__).resolve().parent))
import independent_swi_phantom as generator  # noqa: E402

#: z an observer searching a brain for veins needs to report one (see the module docstring)
SEARCH_Z = 4.5


def dmv_deficit(rendered: dict, vessel: dict, margin_vox) -> tuple[tuple[slice, ...], np.ndarray]:
    """(box, deficit in the box): the image-unit intensity that ``vessel`` alone removes from the
    noise-free image (the generator's partial volume and blooming, bias field, point-spread); the
    box reaches ``margin_vox`` voxels (per axis) beyond it."""
    case, tissue = rendered["case"], rendered["tissue"]
    alone, _ = generator.render_vessels(dict(case, vessels=[vessel]), tissue)
    delta = (tissue - alone) * rendered["bias"] * np.float32(generator.WM_LEVEL)
    nz = np.nonzero(delta)
    box = tuple(slice(max(0, int(a.min()) - m), min(n, int(a.max()) + m + 1))
                for a, n, m in zip(nz, delta.shape, margin_vox))
    return box, ndimage.gaussian_filter(delta[box], rendered["psf_sigma_vox"], mode="constant")


def highpass(image: np.ndarray, sigma_vox, mode: str = "nearest") -> np.ndarray:
    """``image - G * image`` (G: Gaussian of ``sigma_vox`` voxels)."""
    image = np.asarray(image, np.float32)
    return image - ndimage.gaussian_filter(image, sigma_vox, mode=mode)


def matched_filter_z(residual: np.ndarray, box: tuple[slice, ...], deficit: np.ndarray, hp_sigma, *,
                     vein_zone: np.ndarray, free_wm: np.ndarray, rng: np.random.Generator,
                     n_null: int = 300, span_vox=(40, 40, 8)) -> dict:
    """``z`` of one vein (module docstring): its ``deficit`` (any scale: z does not depend on it),
    high-passed, weights ``residual`` at ``box`` and at up to ``n_null`` places moved by at most
    ``span_vox`` voxels where the template touches no ``vein_zone`` voxel and lies >= 90 % on
    ``free_wm``.  Returns ``z``, ``n_null`` and ``null_sd_per_weight`` (the null's SD over the
    template's norm: the white noise SD when only white noise is there)."""
    weights = highpass(deficit, hp_sigma, mode="constant")
    support = np.abs(weights) > 0.02 * np.abs(weights).max()
    idx = np.argwhere(support) + np.array([b.start for b in box])
    w = weights[support].astype(np.float64)
    s_vein = float(w @ residual[tuple(idx.T)])
    shape, span = np.array(residual.shape), np.asarray(span_vox)
    null: list[float] = []
    for _ in range(100 * n_null):
        if len(null) >= n_null:
            break
        moved = idx + rng.integers(-span, span + 1)
        if (moved < 0).any() or (moved >= shape).any():
            continue
        at = tuple(moved.T)
        if vein_zone[at].any() or free_wm[at].mean() < 0.9:
            continue
        null.append(float(w @ residual[at]))
    null_arr = np.asarray(null)
    if len(null_arr) < 30:
        return {"z": float("nan"), "n_null": len(null_arr), "null_sd_per_weight": float("nan")}
    return {"z": float((s_vein - null_arr.mean()) / null_arr.std()), "n_null": len(null_arr),
            "null_sd_per_weight": float(null_arr.std() / np.linalg.norm(w))}


def _span_vox(spacing) -> tuple[int, int, int]:
    """How far a template is moved for the null: 40 voxels along the first two axes, about 16 mm
    along the third (both generators store their slices along it)."""
    return 40, 40, max(3, int(round(16.0 / float(spacing[2]))))


def case_detectability(rendered: dict, *, highpass_mm: float = 2.0, n_null: int = 300,
                       seed: int = 0) -> pd.DataFrame:
    """Per true DMV of a rendered independent case: ``dprime``, ``z`` and the null's spread
    (module docstring)."""
    case = rendered["case"]
    spacing = np.linalg.norm(case["affine"][:3, :3], axis=0)
    hp_sigma = [highpass_mm / s for s in spacing]
    residual = -highpass(rendered["mag"], hp_sigma)            # dark: positive
    # white matter at least 3 voxels from any vein's partial volume or halo
    vein_zone = ndimage.binary_dilation(np.abs(rendered["tissue"] - rendered["veins"]) > 1e-3, iterations=3)
    free_wm = (rendered["labels"] == generator.WM) & ~vein_zone
    rng = np.random.default_rng(seed)
    sigma = rendered["sigma"]
    rows = []
    for v in case["vessels"]:
        if v["region"] != "dmv":
            continue
        box, deficit = dmv_deficit(rendered, v, [int(np.ceil(3 * h)) + 4 for h in hp_sigma])
        mf = matched_filter_z(residual, box, deficit, hp_sigma, vein_zone=vein_zone, free_wm=free_wm, rng=rng,
                              n_null=n_null, span_vox=_span_vox(spacing))
        rows.append({
            "vessel_id": int(v["vessel_id"]), "side": v["side"], "diameter_mm": float(v["diameter_mm"]),
            "length_mm": float(v["curve"].length),
            "dprime": float(np.sqrt(np.sum(deficit.astype(np.float64) ** 2)) / sigma),
            "z": mf["z"], "n_null": mf["n_null"],
            # > 1: the texture and the high-pass add to the white noise
            "null_sd_over_noise": mf["null_sd_per_weight"] / sigma,
        })
    df = pd.DataFrame(rows)
    df["ideal_search"] = gaussian.cdf(df["z"] - SEARCH_Z)
    return df


def project_case_detectability(folder: Path, *, highpass_mm: float = 2.0, n_null: int = 300,
                               seed: int = 0) -> pd.DataFrame:
    """The same for a case of the project's phantom (``NeonatalBrainLib.phantom``), from its files.

    Its SWI has no point-spread beyond the voxel: a vein's deficit is its voxel fraction
    (``generator.render_vessels`` of that vein alone, on the stored centreline) times (white
    matter - lumen signal).  ``dprime`` takes the white-matter signal for the tissue and
    leaves out the bias field (a few per cent); ``z`` needs neither (it does not depend on the
    template's scale).
    """
    import json

    from NeonatalBrainLib.anatomy import LABEL_VALUES
    from NeonatalBrainLib.imageio import load_volume
    from NeonatalBrainLib.phantom import generator as project
    from NeonatalBrainLib.phantom.presets import get_preset, with_changes

    subject = json.loads((folder / "subject.json").read_text())
    preset = with_changes(get_preset(subject["preset"]), **subject.get("preset_changes", {}))
    swi = load_volume(folder / "swi.nii.gz")
    labels = np.asarray(load_volume(folder / "swi_labels.nii.gz").array)
    truth = json.loads((folder / "vessels.json").read_text())["vessels"]
    spacing = swi.spacing_mm
    hp_sigma = [highpass_mm / s for s in spacing]
    residual = -highpass(swi.array, hp_sigma)
    everything = [dict(v, points_b=np.asarray(v["centerline_ras_mm"], float)) for v in truth]
    frac_all, _ = project.render_vessels(everything, swi, np.eye(4))
    vein_zone = ndimage.binary_dilation(frac_all > 0, iterations=3)
    free_wm = np.isin(labels, [LABEL_VALUES["white_matter_left"], LABEL_VALUES["white_matter_right"]]) & ~vein_zone
    contrast = 1.0 - preset.swi_vein_signal / project.SWI_BASE["white_matter"]
    sigma_wm = project.SWI_BASE["white_matter"] / preset.swi_snr * preset.swi_scale
    rng = np.random.default_rng(seed)
    margin = [int(np.ceil(3 * h)) + 4 for h in hp_sigma]
    rows = []
    for v in everything:
        if v["region"] != "dmv":
            continue
        frac, _ = project.render_vessels([v], swi, np.eye(4))
        nz = np.nonzero(frac)
        box = tuple(slice(max(0, int(a.min()) - m), min(n, int(a.max()) + m + 1))
                    for a, n, m in zip(nz, frac.shape, margin))
        mf = matched_filter_z(residual, box, frac[box], hp_sigma, vein_zone=vein_zone, free_wm=free_wm, rng=rng,
                              n_null=n_null, span_vox=_span_vox(spacing))
        rows.append({
            "vessel_id": int(v["vessel_id"]), "side": v["side"], "diameter_mm": float(v["diameter_mm"]),
            "length_mm": float(v["length_mm"]),
            "dprime": float(contrast * preset.swi_snr * np.sqrt(np.sum(frac.astype(np.float64) ** 2))),
            "z": mf["z"], "n_null": mf["n_null"], "null_sd_over_noise": mf["null_sd_per_weight"] / sigma_wm,
        })
    df = pd.DataFrame(rows)
    df["ideal_search"] = gaussian.cdf(df["z"] - SEARCH_Z)
    return df


def engine_detections(folder: Path) -> set[int]:
    """True DMV ids the fully automatic engine reports a matching DMV for."""
    from NeonatalBrainLib.imageio import load_volume
    from NeonatalVesselsLib.evaluation import load_truth, match_vessels
    from NeonatalVesselsLib.pipeline import run_vessel_analysis

    analysis = run_vessel_analysis(load_volume(folder / "swi.nii.gz"))
    pred = {int(r.vessel_id): analysis.centerlines[int(r.vessel_id)]
            for r in analysis.vessels.itertuples() if r.region == "dmv"}
    true = [v for v in load_truth(folder)["vessels"] if v["region"] == "dmv"]
    return {t for t, _ in match_vessels(pred, true).values() if t}


def main(argv=None) -> int:
    from eval_vessels import phantom_folder
    from NeonatalBrainLib.imageio import load_volume

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", nargs="+", default=["term_3t", "term_1p5t", "preterm", "isotropic", "oblique_low_snr"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[15, 16])
    ap.add_argument("--generator", choices=("independent", "project"), default="independent")
    ap.add_argument("--cache", default="/tmp/neonatal_vessel_phantoms")
    ap.add_argument("--no-engine", action="store_true", help="only the detectability, not the engine's detections")
    ap.add_argument("--out", help="CSV of the per-DMV rows")
    args = ap.parse_args(argv)
    tables = []
    for preset in args.presets:
        for seed in args.seeds:
            t0 = time.perf_counter()
            folder = phantom_folder(preset, seed, Path(args.cache), args.generator)
            if args.generator == "project":
                df = project_case_detectability(folder)
            else:
                rendered = generator.render(preset, seed)
                saved = np.asarray(load_volume(folder / "swi.nii.gz").array, np.float32)
                if not np.array_equal(saved, rendered["mag"]):
                    raise SystemExit(f"{folder}: the cached image is not the generator's rendering of {preset} seed {seed}")
                del saved
                df = case_detectability(rendered)
                del rendered
            df.insert(0, "seed", seed)
            df.insert(0, "preset", preset)
            if not args.no_engine:
                found = engine_detections(folder)
                df["detected"] = df["vessel_id"].isin(found).astype(int)
            tables.append(df)
            line = (f"{preset} seed {seed}: {len(df)} DMVs ({df.z.isna().sum()} without z), d' median "
                    f"{df.dprime.median():.1f}, z median {df.z.median():.1f}, z >= 6 {np.mean(df.z.dropna() >= 6):.2f}, "
                    f"ideal search {df.ideal_search.mean():.2f}")
            if "detected" in df:
                line += (f", engine {df.detected.mean():.2f} (z median found {df.z[df.detected == 1].median():.1f}, "
                         f"missed {df.z[df.detected == 0].median():.1f})")
            print(line + f"  [{time.perf_counter() - t0:.0f} s]", flush=True)
    allrows = pd.concat(tables, ignore_index=True)
    if args.out:
        allrows.to_csv(args.out, index=False, float_format="%.4g")
    # the fractions and means are over the DMVs with a z (fewer than 30 vein-free places: none)
    allrows["z_ge_6"] = (allrows["z"] >= 6).astype(float).where(allrows["z"].notna())
    allrows["without_z"] = allrows["z"].isna().astype(int)
    agg = {"DMVs": ("z", "size"), "without_z": ("without_z", "sum"), "dprime_median": ("dprime", "median"),
           "z_median": ("z", "median"), "z_ge_6": ("z_ge_6", "mean"), "ideal_search": ("ideal_search", "mean")}
    if "detected" in allrows:
        agg["engine_found"] = ("detected", "mean")   # (not "engine": a keyword of agg)
    print(allrows.groupby("preset").agg(**agg).round(2).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
