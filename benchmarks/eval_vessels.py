"""Accuracy of the fully automatic vessel pipeline on phantoms, across presets and seeds.

Usage::

    .venv/bin/python benchmarks/eval_vessels.py --presets term_3t term_1p5t preterm isotropic oblique_low_snr \
        --seeds 11 12 [--cache DIR] [--jobs N] [--out results.csv]

Generates (or reuses from ``--cache``) the phantom of every preset x seed, runs
``run_vessel_analysis`` without masks, and scores it with
``NeonatalVesselsLib.evaluation.evaluate`` (sensitivity, PPV, count error per
hemisphere, width / tortuosity MAE; the scan's ``dmv_detectability_index``).  Prints a
Markdown table.

``--generator independent``: the phantoms of ``benchmarks/independent_swi_phantom.py``, a
second generator written without access to the engine or the project's phantom (its own
anatomy, contrasts, noise and presets), cached under ``<cache>/independent/``.
``--generator atlas``: ``benchmarks/atlas_swi_phantom.py``, a third one written the same way
whose anatomy is the MNI152 template scaled to neonatal size (cached under ``<cache>/atlas/``).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import pandas as pd


#: the generators written outside the project (name -> module in ``benchmarks/``), each with
#: ``generate(out_dir, preset, seed, **changes)`` writing ``swi.nii.gz`` and ``vessels.json``
EXTERNAL_GENERATORS = {"independent": "independent_swi_phantom", "atlas": "atlas_swi_phantom"}

#: the fields of the independent generator that a case may change, with the value that leaves the case
#: as generated (``independent_swi_phantom.generate``)
INDEPENDENT_CHANGES = {"ventricle_scale": 1.0, "head_yaw_deg": 0.0, "head_roll_deg": 0.0,
                       "dmv_diameter_scale": 1.0, "extracerebral_csf_scale": 1.0}


def _change_name(field: str, value) -> str:
    """The cache folder name of one changed field: ``ventricle_scale_0.5``, ``dmv_diameter_mm_1.2-2.2``."""
    return f"{field}_" + ("-".join(f"{v:g}" for v in value) if isinstance(value, tuple) else f"{value:g}")


def phantom_folder(preset: str, seed: int, cache: Path, generator: str = "project",
                   changes: dict | None = None) -> Path:
    """The folder of one phantom case (``swi.nii.gz``, ``vessels.json``), generated into
    ``cache`` the first time.  ``changes``: fields of the project preset to change
    (``NeonatalBrainLib.phantom.with_changes``), or for the independent generator its
    :data:`INDEPENDENT_CHANGES`, cached under ``<cache>/[independent/]<field>_<value>/``.
    A case is generated into a folder of its own and renamed into place, so that processes
    generating the same case at once never read one another's half-written files."""
    from NeonatalBrainLib.phantom import PRESETS, with_changes, write_phantom

    if generator == "independent" and set(changes or ()) - set(INDEPENDENT_CHANGES):
        raise ValueError(f"the independent generator changes only {sorted(INDEPENDENT_CHANGES)}, not {sorted(changes)}")
    if generator == "atlas" and changes:
        raise ValueError("the atlas generator takes no changes")
    if generator in EXTERNAL_GENERATORS:
        folder = cache.joinpath(generator, *(_change_name(f, v) for f, v in (changes or {}).items()),
                                f"{preset}_{seed}")
    elif changes:
        folder = cache.joinpath(*(_change_name(f, v) for f, v in changes.items())) / f"{preset}_{seed}"
    else:
        folder = cache / f"{preset}_{seed}"
    if (folder / "vessels.json").exists():
        return folder
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    if generator in EXTERNAL_GENERATORS:
        import importlib

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        importlib.import_module(EXTERNAL_GENERATORS[generator]).generate(partial, preset, seed, **(changes or {}))
    else:
        write_phantom(partial, seed=seed, preset=with_changes(PRESETS[preset], **changes) if changes else preset,
                      modalities=("swi",))
    try:
        os.replace(partial, folder)
    except OSError:         # another process put the case there first (or a stale folder without vessels.json)
        shutil.rmtree(partial, ignore_errors=True)
        if not (folder / "vessels.json").exists():
            raise
    return folder


def add_case_arguments(ap: argparse.ArgumentParser) -> None:
    """``--presets``, ``--seeds``, ``--generator``, ``--cache``, ``--jobs``, ``--out``: the cases
    of this script and of the variant scripts (``eval_vessels_slabs.py``,
    ``eval_vessels_interpolated.py``, ``eval_vessels_variants.py``)."""
    ap.add_argument("--presets", nargs="+", default=["term_3t", "term_1p5t", "preterm", "isotropic", "oblique_low_snr"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[11, 12])
    ap.add_argument("--generator", choices=("project", *EXTERNAL_GENERATORS), default="project")
    ap.add_argument("--cache", default="/tmp/neonatal_vessel_phantoms")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out")


def map_cases(function, jobs: list, n_jobs: int) -> list:
    """``[function(job) for job in jobs]``, in ``n_jobs`` processes when > 1 (results in order)."""
    if n_jobs > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(n_jobs) as pool:
            return list(pool.map(function, jobs))
    return [function(job) for job in jobs]


def evaluate_case(preset: str, seed: int, cache: Path, generator: str = "project") -> dict:
    from NeonatalBrainLib.imageio import load_volume
    from NeonatalVesselsLib.evaluation import evaluate, load_truth
    from NeonatalVesselsLib.pipeline import run_vessel_analysis

    folder = phantom_folder(preset, seed, cache, generator)
    swi = load_volume(folder / "swi.nii.gz")
    t0 = time.perf_counter()
    a = run_vessel_analysis(swi)
    truth = load_truth(folder)
    res = evaluate(a.vessels, a.centerlines, truth)
    true_summary = truth.get("summary") or wall_vein_truth(truth)
    return {"preset": preset, "seed": seed, "time_s": round(time.perf_counter() - t0, 1), **res,
            **wall_vein_width_errors(a.summary, true_summary),
            "dmv_detectability_index": a.summary.get("dmv_detectability_index")}


def _evaluate_job(job: tuple) -> dict:
    return evaluate_case(*job)


def vetoed_dmv_ids(analysis) -> list[int]:
    """The DMVs the DMV scorer made `other` (``provenance.dmv_scorer.dmvs_vetoed``; none for a given mask)."""
    return (analysis.provenance.get("dmv_scorer") or {}).get("dmvs_vetoed") or []


def vessels_without_veto(analysis) -> pd.DataFrame:
    """``analysis.vessels`` with the DMV scorer's veto undone (:func:`vetoed_dmv_ids` relabelled
    dmv): the table of the run with ``dmv_min_probability`` = 0 (the veto is the last step that
    changes a region; widths and centrelines are fitted before it)."""
    vessels = analysis.vessels.copy()
    vessels.loc[vessels["vessel_id"].isin(vetoed_dmv_ids(analysis)), "region"] = "dmv"
    return vessels


def veto_off_metrics(analysis, truth: dict) -> dict:
    """DMV sensitivity, PPV and per-hemisphere count errors of ``analysis`` with the DMV scorer's
    veto undone (:func:`vessels_without_veto`), keys suffixed ``_veto_off``, and ``dmvs_vetoed``."""
    from NeonatalVesselsLib.evaluation import evaluate

    res = evaluate(vessels_without_veto(analysis), analysis.centerlines, truth)
    keys = ("n_pred", "sensitivity", "ppv", "count_error_left", "count_error_right")
    return {"dmvs_vetoed": len(vetoed_dmv_ids(analysis)),
            **{f"{k}_veto_off": res[k] for k in keys}}


WALL_VEIN_KEYS = ("thalamic_vein_width_mm_left", "thalamic_vein_width_mm_right",
                  "anterior_caudate_vein_width_mm_left", "anterior_caudate_vein_width_mm_right")


def wall_vein_truth(truth: dict) -> dict:
    """Per-side wall-vein widths of a truth without a summary: the length-weighted mean
    diameter of its thalamic / anterior caudate veins (the engine's summary definition)."""
    import numpy as np

    from NeonatalBrainLib.centerline import arc_length_mm

    out = {}
    for key in WALL_VEIN_KEYS:
        region = "thalamic" if key.startswith("thalamic") else "anterior_caudate"
        side = key.rsplit("_", 1)[1]
        veins = [v for v in truth["vessels"] if v["region"] == region and v["side"] == side]
        lengths = [arc_length_mm(np.asarray(v["centerline_ras_mm"], float)) for v in veins]
        out[key] = (float(np.average([v["diameter_mm"] for v in veins], weights=lengths))
                    if veins and sum(lengths) > 0 else None)
    return out


def wall_vein_width_errors(summary: dict, true_summary: dict) -> dict:
    """Thalamic / anterior caudate summary widths against truth: MAE (mm) over the keys both
    measured, and how many true keys were reported null."""
    err = [abs(summary[k] - true_summary[k]) for k in WALL_VEIN_KEYS
           if summary.get(k) is not None and true_summary.get(k) is not None]
    null = sum(1 for k in WALL_VEIN_KEYS if summary.get(k) is None and true_summary.get(k) is not None)
    return {"wall_vein_width_mae_mm": sum(err) / len(err) if err else float("nan"), "wall_vein_width_null": null}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_case_arguments(ap)
    args = ap.parse_args(argv)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    jobs = [(preset, seed, cache, args.generator) for preset in args.presets for seed in args.seeds]
    rows = map_cases(_evaluate_job, jobs, args.jobs)
    for row in rows:
        print(row, flush=True)
    df = pd.DataFrame(rows)
    cols = ["preset", "seed", "n_true", "n_pred", "sensitivity", "ppv", "count_error_left", "count_error_right",
            "width_mae_mm", "width_bias_mm", "tortuosity_mae", "curvature_mae_per_mm",
            "wall_vein_width_mae_mm", "wall_vein_width_null", "dmv_detectability_index", "time_s"]
    try:
        print(df[cols].round(3).to_markdown(index=False))
    except ImportError:   # tabulate not installed
        print(df[cols].round(3).to_string(index=False))
    if args.out:
        df.to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
