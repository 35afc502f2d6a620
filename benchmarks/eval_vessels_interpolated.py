"""DMV detection on interpolated scans: phantoms reconstructed on a finer grid (k-space zero-filled).

Usage::

    .venv/bin/python benchmarks/eval_vessels_interpolated.py --presets term_1p5t preterm --seeds 11 12 \
        --factors 1 1.5 2 [--axes inplane|slice|all] [--generator independent] [--white-noise-model] [--jobs 2] [--cache DIR] [--out results.csv]

Scanners often reconstruct SWI on a grid finer than they sample ("interpolation", ZIP): the
resolution and the noise per voxel stay, but neighbouring voxels share their noise.  Each case is
the cached phantom passed through ``NeonatalBrainLib.phantom.zero_filled`` by FACTOR along its two
finest voxel axes (``--axes inplane``, the default), its coarsest (``slice``: overlapping slices)
or all three (1 = as generated), run fully automatically and scored with
``NeonatalVesselsLib.evaluation.evaluate``.  ``--white-noise-model`` runs the engine as it was
before it estimated the noise's correlation (every voxel's noise taken as independent:
``masks.WHITE_NOISE_MAX_LAG_RATIO`` set to infinity), for comparison.  Columns: the evaluation's
metrics (also with the DMV scorer's veto undone: ``*_veto_off``), ``dmv_count``, ``noise_sd`` and
``interpolation`` (``provenance.noise_interpolation_factors``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from eval_vessels import add_case_arguments, map_cases, phantom_folder, veto_off_metrics     # this folder: the script's own (sys.path[0])
from NeonatalVesselsLib.masks import WHITE_NOISE_MAX_LAG_RATIO     # the engine's own, before any job changes it


def evaluate_interpolated(job) -> dict:
    preset, seed, cache, generator, factor, white_noise_model, axes = job
    from NeonatalBrainLib.imageio import load_volume
    from NeonatalBrainLib.phantom import zero_filled
    from NeonatalVesselsLib import masks
    from NeonatalVesselsLib.evaluation import evaluate, load_truth
    from NeonatalVesselsLib.pipeline import run_vessel_analysis

    # set in every job: a pool's worker process keeps a module's state from its previous job
    masks.WHITE_NOISE_MAX_LAG_RATIO = float("inf") if white_noise_model else WHITE_NOISE_MAX_LAG_RATIO
    folder = phantom_folder(preset, seed, cache, generator)
    swi = load_volume(folder / "swi.nii.gz")
    if factor != 1.0:
        order = np.argsort(swi.spacing_mm, kind="stable")
        chosen = {"inplane": order[:2], "slice": order[2:], "all": order}[axes]
        swi = zero_filled(swi, factor, axes=tuple(sorted(int(a) for a in chosen)))
    a = run_vessel_analysis(swi)
    prov, truth = a.summary["provenance"], load_truth(folder)
    return {"generator": generator, "preset": preset, "seed": seed, "factor": factor, "axes": axes,
            "engine": "white_noise_model" if white_noise_model else "current",
            "grid_mm": " ".join(f"{s:.3f}" for s in swi.spacing_mm),
            **evaluate(a.vessels, a.centerlines, truth), **veto_off_metrics(a, truth), "dmv_count": a.summary["dmv_count"],
            "noise_sd": prov["noise_sd"], "interpolation": " ".join(f"{f:.2f}" for f in prov["noise_interpolation_factors"])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_case_arguments(ap)
    ap.add_argument("--factors", nargs="+", type=float, default=[1.0, 1.5, 2.0])
    ap.add_argument("--axes", choices=("inplane", "slice", "all"), default="inplane",
                    help="the axes zero-filled: the two finest (in-plane), the coarsest (slices), or all three")
    ap.add_argument("--white-noise-model", action="store_true",
                    help="the engine before round 19: the noise of every voxel taken as independent")
    args = ap.parse_args(argv)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    jobs = [(p, s, cache, args.generator, f, args.white_noise_model, args.axes)
            for p in args.presets for s in args.seeds for f in args.factors]
    df = pd.DataFrame(map_cases(evaluate_interpolated, jobs, args.jobs))
    cols = ["preset", "seed", "factor", "grid_mm", "sensitivity", "ppv", "n_true", "dmv_count", "count_error_left",
            "count_error_right", "width_mae_mm", "noise_sd", "interpolation"]
    print(df[cols].round(3).to_string(index=False))
    print(df.groupby("factor")[["sensitivity", "ppv", "width_mae_mm", "tortuosity_mae"]].mean().round(3).to_string())
    if args.out:
        df.to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
