"""NeonatalClassify sub-commands of ``neonatal-brain``: roi, train, evaluate, classify, features.

Heavy imports (torch, MONAI, SimpleITK registration) happen inside the handlers.
"""
from __future__ import annotations

import json


def _progress(args, label):
    from NeonatalBrainLib.progress import tqdm_progress

    return tqdm_progress(label, disable=True if getattr(args, "quiet", False) else None)


def _parse_maps(text: str | None) -> dict[str, str]:
    from NeonatalBrainLib.imageio import InputError

    if not text:
        return {}
    out = {}
    for item in text.split(","):
        if "=" not in item:
            raise InputError(f"--maps: expected NAME=FILE[,NAME=FILE...], got {item!r}")
        name, path = item.split("=", 1)
        if not name.strip() or not path.strip():
            raise InputError(f"--maps: empty name or file in {item!r}")
        if name.strip() in out:
            raise InputError(f"--maps: map name {name.strip()!r} given twice")
        out[name.strip()] = path.strip()
    return out


def _cmd_train(args) -> int:
    from .training import train

    progress, close = _progress(args, "train")
    try:
        out = train(args.cohort, arch=args.arch, out_dir=args.out, epochs=args.epochs, seed=args.seed,
                    image_size=args.image_size, atlas=args.atlas, progress=progress, roi=args.roi,
                    width=args.width)
    finally:
        close()
    card = json.loads((out / "model_card.json").read_text())
    vm = card["validation_metrics"]
    print(f"wrote {out} ({card['architecture']}, best epoch {card['training']['best_epoch']}, "
          f"validation AUC {vm['auc']:.3f}, threshold {card['threshold']:.3f})")
    return 0


def _cmd_evaluate(args) -> int:
    from .evaluation import evaluate

    progress, close = _progress(args, "evaluate")
    try:
        m = evaluate(args.cohort, args.model, args.out, atlas=args.atlas, progress=progress, rois=args.rois)
    finally:
        close()
    print(f"wrote {args.out}: n={m['n']} AUC {m['auc']:.3f} ({m['auc_ci_low']:.3f}-{m['auc_ci_high']:.3f}), "
          f"sensitivity {m['sensitivity']}, specificity {m['specificity']} at threshold {m['threshold']:.3f}")
    return 0


def _cmd_classify(args) -> int:
    from NeonatalBrainLib.imageio import load_volume
    from NeonatalBrainLib.outputs import require_empty_dir

    from .inference import classify_t1, write_classification_outputs

    require_empty_dir(args.out, create=False)
    t1 = load_volume(args.t1, "T1")
    rois = None
    if args.rois:
        from .inference import rois_from_files

        rois = rois_from_files(args.rois, t1)
    progress, close = _progress(args, "classify")
    try:
        res = classify_t1(t1, args.model, rois=rois, atlas=args.atlas, progress=progress)
    finally:
        close()
    write_classification_outputs(res, t1, args.out)
    print(f"P(injured) = {res.probability:.4f} -> {'injured' if res.predicted_label else 'control'} "
          f"(threshold {res.threshold:.4f}, model {res.model_id}); wrote {args.out}")
    return 0


def _cmd_features(args) -> int:
    from NeonatalBrainLib.imageio import load_volume
    from NeonatalBrainLib.outputs import require_empty_dir

    from .features import compute_roi_features, write_feature_outputs

    require_empty_dir(args.out, create=False)
    t1 = load_volume(args.t1, "T1")
    maps = {name: load_volume(path, f"map {name}") for name, path in _parse_maps(args.maps).items()}
    rois = None
    if args.rois:
        from .inference import rois_from_files

        rois = rois_from_files(args.rois, t1)
    result = compute_roi_features(t1, args.model, rois, maps, atlas=args.atlas)
    write_feature_outputs(result, args.out)
    print(f"wrote {args.out}")
    return 0


def register(subparsers) -> None:
    """Add roi, train, evaluate, classify, features to the ``neonatal-brain`` parser."""
    from .models import ARCHITECTURES

    try:
        from .roi import add_roi_arguments, run_roi_command

        p = subparsers.add_parser("roi", help="deep grey-matter ROIs on a neonatal T1 (atlas registration)")
        add_roi_arguments(p)
        p.set_defaults(func=run_roi_command)
    except ImportError:  # pragma: no cover - roi engine absent
        pass

    atlas_help = "atlas name or folder for subjects without labels (default: the model's / built-in)"
    p = subparsers.add_parser("train", help="train a T1 slice classifier on a cohort CSV",
                              description="Train a deep grey-matter injury classifier (2D ROI-centred "
                                          "T1 slices, MONAI) with a subject-level stratified split.")
    p.add_argument("cohort", metavar="COHORT.csv",
                   help="subject_id,t1,label,... (t1 relative to the CSV; label 1 = injured, 0 = control)")
    p.add_argument("--arch", default="resnet18", choices=ARCHITECTURES)
    p.add_argument("--out", required=True, metavar="MODEL_DIR", help="new or empty model folder")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=48, metavar="PX", help="slice size in pixels (1 mm)")
    p.add_argument("--atlas", default=None, metavar="NAME|FOLDER", help=atlas_help)
    p.add_argument("--roi", default="globus_pallidus", choices=("globus_pallidus", "basal_ganglia"))
    p.add_argument("--width", type=float, default=1.0, help="ResNet width factor (1 = standard)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    p = subparsers.add_parser("evaluate", help="predictions, metrics (AUC with DeLong CI) and ROC on a cohort")
    p.add_argument("cohort", metavar="COHORT.csv")
    p.add_argument("--model", required=True, metavar="MODEL_DIR")
    p.add_argument("--out", required=True, metavar="DIR", help="new or empty output folder")
    p.add_argument("--atlas", default=None, metavar="NAME|FOLDER", help=atlas_help)
    p.add_argument("--rois", default="atlas", choices=("atlas", "cohort"),
                   help="atlas: segment ROIs as classify does (default); cohort: use the cohort's "
                        "<subject_id>/labels.nii.gz (ground-truth ROIs)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_evaluate)

    p = subparsers.add_parser("classify", help="classify one T1 (probability, Grad-CAM volume, overlay)")
    p.add_argument("t1", metavar="T1")
    p.add_argument("--model", required=True, metavar="MODEL_DIR")
    p.add_argument("--out", required=True, metavar="DIR", help="new or empty output folder")
    p.add_argument("--atlas", default=None, metavar="NAME|FOLDER", help=atlas_help)
    p.add_argument("--rois", default=None, metavar="LABELS",
                   help="use these ROI labels (on the T1 grid, e.g. edited roi_labels.nii.gz; a "
                        "value,name CSV of the same stem is read if present) instead of segmenting")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_classify)

    p = subparsers.add_parser("features", help="deep (penultimate-layer) features per ROI, optional map regression")
    p.add_argument("t1", metavar="T1")
    p.add_argument("--model", required=True, metavar="MODEL_DIR")
    p.add_argument("--out", required=True, metavar="DIR", help="new or empty output folder")
    p.add_argument("--maps", default=None, metavar="FA=fa.nii.gz,CBF=cbf.nii.gz",
                   help="co-registered parametric maps (resampled onto the T1 grid through the affines)")
    p.add_argument("--atlas", default=None, metavar="NAME|FOLDER", help=atlas_help)
    p.add_argument("--rois", default=None, metavar="LABELS", help="ROI labels on the T1 grid")
    p.set_defaults(func=_cmd_features)
