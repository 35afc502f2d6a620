#!/usr/bin/env python
"""Benchmark of deep grey-matter ROI segmentation: Dice per structure and time per subject.

Phantoms (``NeonatalBrainLib.phantom``) over several presets and seeds that are not
used to build the built-in atlas (atlas seeds are 9001+); injured brains included.
Each phantom's own ``labels.nii.gz`` is the reference.

    python benchmarks/bench_roi.py [--atlas neonatal-phantom] [--cache DIR] [--cases ...]
                                   [--method demons|affine] [--set KEY=VALUE ...] [--json FILE]

``--cache DIR`` keeps generated phantoms between runs (DIR/<preset>_<seed>[_<injury>]).
Time per subject is wall-clock of ``segment_deep_grey`` after the atlas is loaded
and prepared once (as in training); CPU time (all threads) is reported beside it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_CASES = (
    "term_3t:11", "term_3t:12", "term_1p5t:13", "term_1p5t:14", "preterm:15", "isotropic:16",
    "oblique_low_snr:17", "oblique_low_snr:18:bilirubin:0.5", "term_3t:19:bilirubin:1.0",
    "term_1p5t:20:hie:0.6",
)
STRUCTURES = ("globus_pallidus", "putamen", "caudate", "thalamus")


def load_case(spec: str, cache: Path | None):
    """(t1, labels) Volumes for 'preset:seed[:injury[:strength]]'."""
    from NeonatalBrainLib.imageio import load_volume, save_volume
    from NeonatalBrainLib.phantom import InjurySpec, generate_phantom

    parts = spec.split(":")
    preset, seed = parts[0], int(parts[1])
    injury = InjurySpec(parts[2], float(parts[3]) if len(parts) > 3 else 1.0) if len(parts) > 2 else None
    folder = cache / spec.replace(":", "_") if cache else None
    if folder is not None and (folder / "labels.nii.gz").is_file():
        return load_volume(folder / "t1.nii.gz"), load_volume(folder / "labels.nii.gz")
    ph = generate_phantom(seed, preset, injury=injury, modalities=("t1",))
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        save_volume(ph.t1, folder / "t1.nii.gz")
        save_volume(ph.labels, folder / "labels.nii.gz")
    return ph.t1, ph.labels


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--atlas", default="neonatal-phantom")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--cases", nargs="*", default=list(DEFAULT_CASES))
    ap.add_argument("--method", choices=("demons", "affine"), default=None,
                    help="override the deformable stage (default: library default)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="override RegistrationParameters fields (numbers/tuples as Python literals)")
    ap.add_argument("--json", type=Path, default=None, help="write per-case results here")
    args = ap.parse_args(argv)

    import ast
    import dataclasses

    from NeonatalClassifyLib.atlas import load_atlas
    from NeonatalClassifyLib.registration import RegistrationParameters
    from NeonatalClassifyLib.roi import _prepare_atlas, dice_per_roi, segment_deep_grey

    changes = {}
    if args.method == "affine":
        changes["deformable"] = False
    elif args.method == "demons":
        changes["deformable"] = True
    for kv in args.set:
        k, v = kv.split("=", 1)
        try:
            changes[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            changes[k] = v
    params = dataclasses.replace(RegistrationParameters(), **changes)
    atlas = load_atlas(args.atlas)
    t0 = time.perf_counter()
    _prepare_atlas(atlas, params)
    print(f"atlas {atlas.name} ({len(atlas.subjects)} subject(s)) prepared in "
          f"{time.perf_counter() - t0:.2f} s; params {changes or 'default'}", file=sys.stderr)
    rows = []
    header = "| case | " + " | ".join(f"{s[:4]} L/R" for s in STRUCTURES) + " | mean | wall s | cpu s |"
    print(header)
    print("|" + "---|" * (len(STRUCTURES) + 4))
    for spec in args.cases:
        t1, ref = load_case(spec, args.cache)
        w0, c0 = time.perf_counter(), time.process_time()
        res = segment_deep_grey(t1, atlas, params=params)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        d = dice_per_roi(res.labels.array, ref.array)
        mean = float(np.mean(list(d.values())))
        rows.append({"case": spec, "dice": d, "mean": mean, "wall_s": wall, "cpu_s": cpu,
                     "timings": res.timings})
        cells = " | ".join(f"{d[s + '_left']:.3f}/{d[s + '_right']:.3f}" for s in STRUCTURES)
        print(f"| {spec} | {cells} | {mean:.3f} | {wall:.2f} | {cpu:.2f} |", flush=True)
    allv = {k: [r["dice"][k] for r in rows] for k in rows[0]["dice"]}
    per_struct = {s: float(np.mean(allv[s + "_left"] + allv[s + "_right"])) for s in STRUCTURES}
    print("\nmean Dice per structure: " + ", ".join(f"{s} {v:.3f}" for s, v in per_struct.items()))
    print(f"mean over the eight ROIs: {np.mean([r['mean'] for r in rows]):.3f}; "
          f"min GP Dice {min(allv['globus_pallidus_left'] + allv['globus_pallidus_right']):.3f}; "
          f"wall {np.mean([r['wall_s'] for r in rows]):.2f} s/subject (median "
          f"{np.median([r['wall_s'] for r in rows]):.2f}), cpu {np.mean([r['cpu_s'] for r in rows]):.2f} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
