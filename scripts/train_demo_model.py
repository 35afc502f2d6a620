#!/usr/bin/env python
"""Rebuild the shipped demo model ``Resources/Models/demo-resnet18`` (reproducible).

1. Phantom cohort: ``NeonatalBrainLib.phantom.write_cohort(DIR, n=40, center="A",
   seed=1, modalities=("t1",))`` (bilirubin injury, half injured) unless ``--cohort``
   points at an existing cohort.csv.
2. ``training.train(..., arch="resnet18", width=0.25, image_size=48, epochs=12, seed=0)``
   - a reduced-width ResNet18 (MONAI ``widen_factor`` 0.25: 0.7 M parameters, ~2.8 MB)
   so the extension stays small.  The user-facing ``train`` default is the standard
   width.
3. The model card is labelled as trained on synthetic phantom data, not for clinical use.

Usage: ``python scripts/train_demo_model.py [--cohort COHORT.csv] [--work DIR] [--out DIR]``
(``--out`` defaults to Resources/Models/demo-resnet18 and must be new or empty).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cohort", default=None, help="existing cohort.csv (default: generate one)")
    ap.add_argument("--work", default="demo-model-work", help="folder for the generated cohort")
    ap.add_argument("--out", default=str(REPO / "Resources" / "Models" / "demo-resnet18"))
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from NeonatalBrainLib.progress import tqdm_progress
    from NeonatalClassifyLib.training import train

    cohort = args.cohort
    if cohort is None:
        from NeonatalBrainLib.phantom.cohort import write_cohort

        progress, close = tqdm_progress("phantom cohort")
        try:
            cohort = write_cohort(Path(args.work) / "cohort_A", args.n, center="A", seed=1,
                                  modalities=("t1",), progress=progress)
        finally:
            close()
    progress, close = tqdm_progress("train demo model")
    try:
        out = train(cohort, arch="resnet18", out_dir=args.out, epochs=args.epochs, seed=args.seed,
                    image_size=48, width=0.25, progress=progress, model_id="demo-resnet18",
                    description=("DEMO: reduced-width ResNet18 (widen_factor 0.25) slice classifier of "
                                 "globus pallidus T1 hyperintensity, TRAINED ON SYNTHETIC PHANTOM DATA "
                                 "(NeonatalBrain digital phantom, centre A, bilirubin injury pattern)"),
                    extra_card={"synthetic_training_data": True,
                                "intended_use": ("Demonstration only: trained on synthetic phantom data, "
                                                 "not for clinical use; not a medical device."),
                                "reproduce": "python scripts/train_demo_model.py (phantom cohort n=40, "
                                             "centre A, seed 1; train seed 0, 12 epochs, width 0.25)"})
    finally:
        close()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
