#!/usr/bin/env python
"""Time ``classify_t1`` (+ Grad-CAM) per subject on CPU, and optionally a training run.

Usage::

    python benchmarks/bench_classify.py --cohort COHORT.csv [--model MODEL_DIR] [--n 10]
        [--threads 2] [--atlas NAME|FOLDER] [--train-epochs 0]

* classify: per subject, wall time of ``classify_t1`` with Grad-CAM given the ROIs
  (the cohort's labels.nii.gz; ROI registration is timed separately by
  benchmarks/bench_roi.py) after one warm-up call; also with ROI segmentation when
  ``--atlas`` is given.  Reports median / max seconds and CPU seconds.
* ``--train-epochs N``: wall and CPU time of ``training.train`` on the cohort.
Results go to stdout as JSON (copy them into benchmarks/README.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cohort", required=True)
    ap.add_argument("--model", default=None, help="model folder (default: the demo model)")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--atlas", default=None)
    ap.add_argument("--train-epochs", type=int, default=0)
    ap.add_argument("--width", type=float, default=1.0)
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from NeonatalBrainLib.imageio import load_volume
    from NeonatalClassifyLib import catalogue
    from NeonatalClassifyLib.cohort import read_cohort
    from NeonatalClassifyLib.inference import classify_t1, rois_from_files

    torch.set_num_threads(args.threads)
    out = {"threads": args.threads, "torch": torch.__version__}
    if args.train_epochs:
        from NeonatalClassifyLib.training import train

        with tempfile.TemporaryDirectory() as tmp:
            t0, c0 = time.perf_counter(), time.process_time()
            md = train(args.cohort, out_dir=Path(tmp) / "m", epochs=args.train_epochs, width=args.width,
                       num_threads=args.threads)
            out["train"] = {"epochs": args.train_epochs, "width": args.width,
                            "n_subjects": int(len(read_cohort(args.cohort))),
                            "wall_s": round(time.perf_counter() - t0, 1),
                            "cpu_s": round(time.process_time() - c0, 1),
                            "epochs_run": json.loads((md / "model_card.json").read_text())["training"]["epochs_run"]}
    model = args.model or str(catalogue.demo_model_dir())
    df = read_cohort(args.cohort, require_two_classes=False).head(args.n)
    walls, cpus, roi_walls = [], [], []
    for i, row in enumerate(df.itertuples()):
        t1 = load_volume(row.t1_path)
        rois = rois_from_files(row.labels_path, t1) if row.labels_path is not None else None
        if i == 0:
            classify_t1(t1, model, rois=rois)  # warm-up: model load, MONAI import
        t0, c0 = time.perf_counter(), time.process_time()
        classify_t1(t1, model, rois=rois)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        if args.atlas:
            t0 = time.perf_counter()
            classify_t1(t1, model, atlas=args.atlas)
            roi_walls.append(time.perf_counter() - t0)
    out["classify_with_gradcam"] = {"model": model, "n": len(walls), "median_wall_s": round(float(np.median(walls)), 3),
                                    "max_wall_s": round(float(np.max(walls)), 3),
                                    "median_cpu_s": round(float(np.median(cpus)), 3)}
    if roi_walls:
        out["classify_with_roi_segmentation"] = {"median_wall_s": round(float(np.median(roi_walls)), 2)}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
