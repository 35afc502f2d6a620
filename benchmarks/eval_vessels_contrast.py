"""DMV detection against the veins' contrast: the project phantom with fainter veins at the same noise.

Usage::

    .venv/bin/python benchmarks/eval_vessels_contrast.py --presets term_3t preterm --seeds 3 22 \
        --vein-signals 0.08 0.2 0.3 0.4 [--jobs 2] [--cache DIR] [--out results.csv]

The project phantom renders a vein's lumen at ``Preset.swi_vein_signal`` (default 0.08: dephased
almost to the noise floor; white matter is 0.74), which makes its veins about as dark as SWI
veins can be.  Real veins are often fainter (shorter echo time, lower field, partial volume of a
lumen that is not fully dephased).  Each case is the phantom of PRESET x SEED generated with the
lumen at VEIN_SIGNAL (everything else, noise included, as the preset; 0.08 is the preset as it
is, cached as ``eval_vessels.py`` caches it, the others under ``<cache>/vein_signal_<v>/``), run
fully automatically and scored with ``NeonatalVesselsLib.evaluation.evaluate``.  Columns: the
evaluation's metrics, ``vein_contrast`` (1 - vein signal / white matter, the contrast of a
resolved lumen), ``dmv_detectability_index`` and whether the run warned.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from eval_vessels import add_case_arguments, map_cases, phantom_folder     # this folder: the script's own (sys.path[0])
from NeonatalBrainLib.phantom.generator import SWI_BASE

def contrast_folder(preset: str, seed: int, cache: Path, vein_signal: float) -> Path:
    """The folder of one case, generated into ``cache`` the first time."""
    from NeonatalBrainLib.phantom import PRESETS, with_changes, write_phantom

    if vein_signal == PRESETS[preset].swi_vein_signal:
        return phantom_folder(preset, seed, cache)
    folder = cache / f"vein_signal_{vein_signal:g}" / f"{preset}_{seed}"
    if not (folder / "vessels.json").exists():
        write_phantom(folder, seed=seed, preset=with_changes(PRESETS[preset], swi_vein_signal=vein_signal),
                      modalities=("swi",))
    return folder


def evaluate_contrast(job) -> dict:
    preset, seed, cache, vein_signal = job
    from NeonatalBrainLib.imageio import load_volume
    from NeonatalVesselsLib.evaluation import evaluate, load_truth
    from NeonatalVesselsLib.pipeline import run_vessel_analysis

    folder = contrast_folder(preset, seed, cache, vein_signal)
    a = run_vessel_analysis(load_volume(folder / "swi.nii.gz"))
    return {"preset": preset, "seed": seed, "vein_signal": vein_signal,
            "vein_contrast": round(1.0 - vein_signal / SWI_BASE["white_matter"], 3),
            **evaluate(a.vessels, a.centerlines, load_truth(folder)),
            "dmv_detectability_index": a.summary.get("dmv_detectability_index"),
            "warned": bool(a.summary.get("warnings"))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_case_arguments(ap)
    ap.add_argument("--vein-signals", nargs="+", type=float, default=[0.08, 0.2, 0.3, 0.4])
    args = ap.parse_args(argv)
    if args.generator != "project":
        ap.error("--generator: only the project phantom has a vein signal to change")
    cache = Path(args.cache)
    jobs = [(p, s, cache, v) for v in args.vein_signals for p in args.presets for s in args.seeds]
    df = pd.DataFrame(map_cases(evaluate_contrast, jobs, args.jobs))
    if args.out:
        df.to_csv(args.out, index=False)
    by = df.groupby(["vein_signal", "preset"])[["vein_contrast", "sensitivity", "ppv", "width_mae_mm",
                                                "dmv_detectability_index", "warned"]].mean()
    print(by.round(3).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
