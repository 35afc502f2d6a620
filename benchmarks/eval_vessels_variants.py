"""DMV detection on variants of the project phantom: one preset field changed, all else as the preset.

Usage::

    .venv/bin/python benchmarks/eval_vessels_variants.py --field swi_vein_signal --values 0.08 0.2 0.3 0.4 \
        --presets term_3t preterm --seeds 3 22 [--jobs 2] [--cache DIR] [--out results.csv]

Each case is the phantom of PRESET x SEED generated with ``Preset.FIELD`` = VALUE
(``NeonatalBrainLib.phantom.with_changes``: the same neonate, grid and noise draws), run fully
automatically and scored with ``NeonatalVesselsLib.evaluation.evaluate``.  A value equal to the
preset's own is the phantom as ``eval_vessels.py`` caches it; the others are cached under
``<cache>/<field>_<value>/``.  Fields of interest:

* ``swi_vein_signal``: the lumen's SWI magnitude (0.08; white matter 0.74): fainter veins at the
  same noise (round 20);
* ``swi_noise_centre_gain``: the noise SD in the middle of the field of view relative to its
  edges, as parallel imaging's g-factor amplifies it (1: uniform; round 20);
* ``ventricle_scale``: the lateral ventricles' cross-section relative to the preset's (below 1:
  slit ventricles; round 30).  With ``--generator independent`` its ventricles' radii x the value
  (``independent_swi_phantom.py --ventricle-scale``; 1: as generated), or ``head_yaw_deg`` /
  ``head_roll_deg``: its head turned further about S-I / A-P (``--head-yaw``, ``--head-roll``; 0: as
  generated; round 30's head frame), or ``dmv_diameter_scale``: each DMV's diameter x the value
  (``--dmv-diameter-scale``; round 31's engorged DMVs), or ``extracerebral_csf_scale``: the CSF
  between brain and skull x the value (``--extracerebral-csf-scale``; round 32's swollen brain);
* ``dmv_diameter_mm``: the range the DMV diameters are drawn from, as ``LOW-HIGH`` (``1.2-2.2``:
  engorged DMVs; round 31).

Columns: the evaluation's metrics (also with the DMV scorer's veto undone: ``*_veto_off``), ``vein_contrast`` (1 - vein signal / white matter: the contrast
of a resolved lumen; project phantom), the run's ``noise_sd`` and ``vein_contrast_fitted`` (provenance),
``ventricles_ml`` (the ventricle mask the run used), ``dmv_detectability_index``, whether the run
warned and its warnings.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from eval_vessels import INDEPENDENT_CHANGES, add_case_arguments, map_cases, phantom_folder, veto_off_metrics     # this folder: the script's own (sys.path[0])
from NeonatalBrainLib.phantom import PRESETS
from NeonatalBrainLib.phantom.generator import SWI_BASE


def variant_folder(preset: str, seed: int, cache: Path, field: str, value: float,
                   generator: str = "project") -> Path:
    """The folder of one case (the preset's own value: the phantom as it is)."""
    own = INDEPENDENT_CHANGES[field] if generator == "independent" else getattr(PRESETS[preset], field)
    changes = {} if value == own else {field: value}
    return phantom_folder(preset, seed, cache, generator, changes=changes)


def evaluate_variant(job) -> dict:
    preset, seed, cache, field, value, generator = job
    from NeonatalBrainLib.imageio import load_volume
    from NeonatalVesselsLib.evaluation import evaluate, load_truth
    from NeonatalVesselsLib.pipeline import run_vessel_analysis

    folder = variant_folder(preset, seed, cache, field, value, generator)
    a = run_vessel_analysis(load_volume(folder / "swi.nii.gz"))
    vein_contrast = None
    if generator == "project":
        vein_signal = value if field == "swi_vein_signal" else PRESETS[preset].swi_vein_signal
        vein_contrast = round(1.0 - vein_signal / SWI_BASE["white_matter"], 3)
    prov, truth = a.summary["provenance"], load_truth(folder)
    return {"generator": generator, "preset": preset, "seed": seed, "field": field, "value": value,
            "vein_contrast": vein_contrast,
            **evaluate(a.vessels, a.centerlines, truth), **veto_off_metrics(a, truth),
            "noise_sd": prov["noise_sd"], "vein_contrast_fitted": prov["vein_contrast"],
            "ventricles_ml": round(prov["ventricles_mm3"] / 1000.0, 3),
            "dmv_detectability_index": a.summary.get("dmv_detectability_index"),
            "warned": bool(a.summary.get("warnings")), "warnings": " | ".join(a.summary.get("warnings") or [])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_case_arguments(ap)
    ap.add_argument("--field", required=True, help="a numeric field of NeonatalBrainLib.phantom.Preset")
    ap.add_argument("--values", nargs="+", required=True,
                    help="numbers; for a range field of Preset (dmv_diameter_mm) LOW-HIGH, e.g. 1.2-2.2")
    args = ap.parse_args(argv)
    if args.generator == "independent" and args.field not in INDEPENDENT_CHANGES:
        ap.error(f"--generator independent: only --field {', '.join(INDEPENDENT_CHANGES)} can be changed")
    own = getattr(PRESETS["term_3t"], args.field, None)
    if args.generator == "project" and not (isinstance(own, float) or (
            isinstance(own, tuple) and all(isinstance(x, float) for x in own))):
        ap.error(f"--field {args.field}: not a numeric field of Preset")
    try:
        args.values = [tuple(float(x) for x in v.split("-")) if isinstance(own, tuple) else float(v)
                       for v in args.values]
    except ValueError:
        ap.error(f"--values {' '.join(args.values)}: numbers expected" + (" (LOW-HIGH)" if isinstance(own, tuple) else ""))
    cache = Path(args.cache)
    jobs = [(p, s, cache, args.field, v, args.generator) for v in args.values for p in args.presets for s in args.seeds]
    df = pd.DataFrame(map_cases(evaluate_variant, jobs, args.jobs))
    if args.out:
        df.to_csv(args.out, index=False)
    by = df.groupby(["value", "preset"])[["sensitivity_veto_off", "ppv_veto_off", "sensitivity", "ppv",
                                          "width_mae_mm", "noise_sd", "vein_contrast_fitted",
                                          "ventricles_ml", "dmv_detectability_index", "warned"]].mean()
    print(by.round(3).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
