"""Training a slice classifier on a cohort (subject-level split, early stopping, model card).

Procedure (``train``):

1. ROIs per subject: the cohort's ``<subject_id>/labels.nii.gz`` + ``labels.csv`` when
   present, else ``roi.segment_deep_grey`` with the chosen atlas.
2. ``n_slices`` ROI-centred axial slices per subject (``slices.extract_slices``).
3. Stratified split **by subject** (``val_fraction`` of the subjects, at least one per
   class, seeded) - never by slice, so no infant is in both sets.
4. Training on all slices of the training subjects, each slice labelled with its
   subject's label; class-balanced cross-entropy (weights n / (2 n_class)); AdamW
   (lr 1e-3, weight decay 1e-4), batch 16.  On-the-fly augmentation (seeded):
   left-right mirror with p = 0.5 (injury on either side is injury, so the subject
   label is unchanged; anterior-posterior is never flipped), rotation +-10 deg,
   translation +-3 px, scaling 0.92-1.08, Gaussian blur sigma 0-0.8 px (resolution
   differences), intensity x a + b (a 0.8-1.2, b +-0.15), a linear in-plane
   intensity ramp +-0.15 (bias field) and Gaussian noise sigma 0-0.12 (SNR).
5. After every epoch: BatchNorm statistics recomputed on up to 192 training slices for
   the current weights (``recompute_batchnorm``); subject probabilities (mean of slice
   probabilities) of the validation subjects, their AUC; the weights of the best epoch (highest AUC, ties:
   lower validation loss) are kept; training stops after ``patience`` epochs without
   improvement.
6. Threshold = Youden's J on the validation subjects' probabilities (best epoch), placed
   midway between the two validation scores that bound the optimal cut.

Determinism: ``torch.manual_seed(seed)``, a seeded NumPy generator for augmentation
and batching, ``torch.use_deterministic_algorithms(True)`` and a fixed number of
threads (``num_threads``, default 2): the same seed, data and thread count give the
same weights.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from NeonatalBrainLib.imageio import InputError, load_volume
from NeonatalBrainLib.outputs import staged_output
from NeonatalBrainLib.progress import as_progress
from NeonatalBrainLib.stats import roc as _roc

from . import models as _models
from .cohort import cohort_label_table, cohort_summary, read_cohort
from .inference import CARD_NAME, CLASSES, WEIGHTS_NAME, aggregate
from .slices import ROI_SETS, SliceSpec, extract_slices

DISCLAIMER = "Research use only; not a medical device; not for clinical use."


# ----------------------------------------------------------------------------- data
def subject_slices(t1_path, labels_path, names, spec: SliceSpec, atlas=None, progress=None):
    """SliceStack of one subject (cohort labels if given, else atlas ROIs)."""
    t1 = load_volume(t1_path, "T1")
    if labels_path is not None:
        labels = load_volume(labels_path, "labels")
        return extract_slices(t1, labels, names, spec)
    from .inference import resolve_rois

    labels, rnames, _ = resolve_rois(t1, None, atlas, None, progress=progress)
    return extract_slices(t1, labels, rnames, spec)


def split_subjects(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified subject indices (train, val): per class round(val_fraction * n_c) >= 1 to val."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    val = []
    for c in (0, 1):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 2:
            raise InputError(f"cohort: need at least 2 subjects of class {c} to split, got {len(idx)}")
        k = int(np.clip(round(val_fraction * len(idx)), 1, len(idx) - 1))
        val.extend(rng.permutation(idx)[:k].tolist())
    val = np.sort(np.array(val, int))
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, val


def augment(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Augment a batch (n, C, H, W) float32 (see module docstring); channel 0 = T1."""
    out = np.empty_like(batch)
    n, c, h, w = batch.shape
    centre = np.array([(h - 1) / 2.0, (w - 1) / 2.0])
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    for b in range(n):
        img = batch[b]
        if rng.random() < 0.5:
            img = img[:, :, ::-1]
        ang = np.deg2rad(rng.uniform(-10, 10))
        scale = rng.uniform(0.92, 1.08)
        rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]]) / scale
        shift = rng.uniform(-3, 3, 2)
        offset = centre - rot @ (centre + shift)
        sigma = rng.uniform(0, 0.8)
        for ch in range(c):
            order = 1 if ch == 0 else 0
            a = ndimage.affine_transform(np.ascontiguousarray(img[ch]), rot, offset=offset, order=order,
                                         mode="nearest")
            if ch == 0:
                if sigma > 0.1:
                    a = ndimage.gaussian_filter(a, sigma)
                a = a * rng.uniform(0.8, 1.2) + rng.uniform(-0.15, 0.15)
                a = a + rng.uniform(-0.15, 0.15) * xx + rng.uniform(-0.15, 0.15) * yy
                a = a + rng.normal(0, rng.uniform(0, 0.12), a.shape)
            out[b, ch] = a
    return out.astype(np.float32)


def recompute_batchnorm(model, images: np.ndarray, batch_size: int = 32, max_images: int = 192) -> None:
    """Set every BatchNorm's running mean/variance to the average over ``images`` (the first
    ``max_images``, no augmentation) for the current weights ("precise BN"), so that
    evaluation-mode statistics match the weights even after few training steps."""
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns or len(images) < 2:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    with torch.no_grad():
        sub = images[:max_images]
        for b in range(0, len(sub), batch_size):
            chunk = sub[b:b + batch_size]
            if len(chunk) >= 2:
                model(torch.from_numpy(np.ascontiguousarray(chunk)))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.eval()


def _set_determinism(seed: int, num_threads: int):
    import torch

    state = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    torch.manual_seed(int(seed))
    torch.set_num_threads(int(num_threads))
    torch.use_deterministic_algorithms(True, warn_only=True)
    return state


def _versions() -> dict:
    import monai
    import scipy
    import SimpleITK
    import sklearn
    import torch

    from NeonatalBrainLib import __version__

    return {"neonatal_brain": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "monai": monai.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "SimpleITK": SimpleITK.Version_VersionString(), "scikit-learn": sklearn.__version__}


def atlas_record(atlas, used_cohort_labels: bool) -> dict:
    """JSON record of the atlas used for subjects without labels (name + checksum)."""
    rec = {"used_cohort_labels_for_training": bool(used_cohort_labels)}
    try:
        from .atlas import DEFAULT_ATLAS, atlas_checksum, load_atlas
    except ImportError:
        rec.update({"name": None if atlas is None else str(atlas), "checksum": None})
        return rec
    target = DEFAULT_ATLAS if atlas is None else atlas
    try:
        a = load_atlas(target)
        rec.update({"name": getattr(a, "name", str(target)), "checksum": atlas_checksum(a)})
    except Exception as exc:  # recorded, not fatal: classify can still be given --atlas
        rec.update({"name": str(target), "checksum": None, "error": str(exc)[:200]})
    rec["source"] = str(target)
    return rec


def youden_midpoint_threshold(y_true, score) -> float:
    """Threshold maximising Youden's J on (y_true, score), placed midway in the optimal gap.

    ``stats.roc.youden_threshold`` gives the largest observed score t_hi whose rule
    "positive iff score >= t_hi" maximises J; every threshold in (t_lo, t_hi], t_lo = the
    next lower observed score, gives the same rule on these data.  The midpoint
    (t_lo + t_hi) / 2 is returned (t_hi when no lower score exists), so the cut does not
    sit on a validation subject's own score.
    """
    t_hi = float(_roc.youden_threshold(y_true, score))
    lower = np.asarray(score, float)[np.asarray(score, float) < t_hi]
    return 0.5 * (t_hi + float(lower.max())) if lower.size else t_hi


# ----------------------------------------------------------------------------- train
def train(cohort_csv: str | os.PathLike, arch: str = "resnet18", out_dir: str | os.PathLike = "model",
          *, epochs: int = 8, seed: int = 0, image_size: int = 48, atlas=None, progress=None,
          roi: str = "globus_pallidus", n_slices: int = 3, spacing_mm: float = 1.0, width: float = 1.0,
          batch_size: int = 16, lr: float = 1e-3, val_fraction: float = 0.2, patience: int = 4,
          num_threads: int = 2, channels: tuple[str, ...] = ("t1",), output_stride: int = 4, model_id: str | None = None,
          description: str | None = None, extra_card: dict | None = None) -> Path:
    """Train a slice classifier on ``cohort_csv``; write ``model.pt`` + ``model_card.json``
    (+ ``training_log.csv``, ``validation_predictions.csv``) into the new/empty ``out_dir``.
    Returns ``out_dir``.  See the module docstring for the procedure."""
    import torch

    prog = as_progress(progress)
    _models._check_arch(arch)
    if int(epochs) < 1:
        raise InputError(f"epochs must be >= 1, got {epochs}")
    spec = SliceSpec(roi=roi, image_size=image_size, spacing_mm=spacing_mm, n_slices=n_slices, channels=channels)
    df = read_cohort(cohort_csv)
    names = cohort_label_table(cohort_csv)
    out_dir = Path(out_dir)
    from NeonatalBrainLib.outputs import require_empty_dir

    require_empty_dir(out_dir, create=False)

    # 1-2: slices
    stacks = []
    n = len(df)
    for i, row in enumerate(df.itertuples()):
        prog.update(0.35 * i / n, f"slices {row.subject_id}")
        sub = prog.sub(0.35 * i / n, 0.35 * (i + 1) / n)
        stacks.append(subject_slices(row.t1_path, row.labels_path, names, spec, atlas, progress=sub))
    y = df["label"].to_numpy(int)
    used_labels = bool(df["labels_path"].notna().all())

    # 3: split by subject
    tr, va = split_subjects(y, val_fraction, seed)
    assert not set(df["subject_id"].iloc[tr]) & set(df["subject_id"].iloc[va])
    x_tr = np.concatenate([stacks[i].images for i in tr])
    y_tr = np.concatenate([np.full(len(stacks[i].images), y[i]) for i in tr])

    saved = _set_determinism(seed, num_threads)
    rng = np.random.default_rng(seed)
    try:
        config = _models.model_config(arch, len(spec.channels), 2, spec.image_size, width, output_stride)
        model = _models.build_from_config(config)
        counts = np.bincount(y_tr, minlength=2).astype(float)
        weights = torch.tensor(len(y_tr) / (2.0 * np.maximum(counts, 1)), dtype=torch.float32)
        loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        best = None
        log = []
        since_best = 0
        steps = int(np.ceil(len(x_tr) / batch_size))
        bn_order = np.random.default_rng(seed + 1).permutation(len(x_tr))[:192]
        for ep in range(int(epochs)):
            model.train()
            order = rng.permutation(len(x_tr))
            total = 0.0
            for s in range(steps):
                prog.update(0.35 + 0.6 * (ep + s / steps) / epochs, f"epoch {ep + 1}/{epochs}")
                idx = order[s * batch_size:(s + 1) * batch_size]
                if len(idx) < 2:  # BatchNorm needs > 1 sample
                    continue
                xb = torch.from_numpy(augment(x_tr[idx], rng))
                yb = torch.from_numpy(y_tr[idx].astype(np.int64))
                opt.zero_grad()
                loss = loss_fn(model(xb), yb)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            # 5: validation on subjects (BatchNorm statistics recomputed for these weights)
            recompute_batchnorm(model, x_tr[bn_order], batch_size=2 * batch_size)
            vprobs, vloss = [], 0.0
            with torch.no_grad():
                for i in va:
                    logits = model(torch.from_numpy(stacks[i].images))
                    vloss += float(loss_fn(logits, torch.full((len(logits),), int(y[i]))))
                    vprobs.append(aggregate(torch.softmax(logits, 1)[:, 1].numpy()))
            vprobs = np.array(vprobs)
            vauc = _roc.auc(y[va], vprobs)
            vloss /= len(va)
            log.append({"epoch": ep + 1, "train_loss": total / len(x_tr), "val_loss": vloss, "val_auc": vauc})
            if best is None or vauc > best["auc"] + 1e-12 or (abs(vauc - best["auc"]) <= 1e-12 and vloss < best["loss"]):
                best = {"epoch": ep + 1, "auc": vauc, "loss": vloss, "probs": vprobs,
                        "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
                since_best = 0
            else:
                since_best += 1
                if since_best >= patience:
                    break
        model.load_state_dict(best["state"])
        model.eval()
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1])

    # 6: threshold on validation subjects
    vprobs = best["probs"]
    threshold = youden_midpoint_threshold(y[va], vprobs)
    vmetrics = _roc.binary_metrics(y[va], vprobs, threshold)
    vmetrics["auc"] = float(best["auc"])
    try:
        _, lo, hi = _roc.delong_auc_ci(y[va], vprobs)
        vmetrics["auc_ci_low"], vmetrics["auc_ci_high"] = float(lo), float(hi)
    except InputError:
        pass
    prog.update(0.97, "writing model")
    mid = model_id or f"{arch}-{spec.roi}-{datetime.datetime.now(datetime.timezone.utc):%Y%m%dT%H%M%SZ}"
    with staged_output(out_dir) as stage:
        sha = _models.save_checkpoint(model, stage / WEIGHTS_NAME, config)
        pd.DataFrame(log).to_csv(stage / "training_log.csv", index=False)
        pd.DataFrame({"subject_id": df["subject_id"].iloc[va].to_numpy(), "label": y[va],
                      "probability": vprobs}).to_csv(stage / "validation_predictions.csv", index=False)
        card = {
            "model_id": mid,
            "description": description or f"{arch} slice classifier of deep grey-matter injury on neonatal T1",
            "intended_use": DISCLAIMER,
            "architecture": arch,
            "model_config": config,
            "n_parameters": int(sum(p.numel() for p in model.parameters())),
            "weights_file": WEIGHTS_NAME,
            "weights_sha256": sha,
            "input": spec.to_dict(),
            "input_description": (
                f"{spec.n_slices} axial (RAS) slices through the {spec.roi.replace('_', ' ')} ROI at the "
                f"ROI-z quantiles (s+0.5)/{spec.n_slices}; {spec.image_size}x{spec.image_size} px at "
                f"{spec.spacing_mm} mm centred on the ROI centroid; rows anterior->posterior, columns "
                "patient left->right; per-slice (v - median)/(p90 - p10) clipped to [-5, 5]"),
            "roi": {"set": spec.roi, "labels": list(ROI_SETS[spec.roi])},
            "classes": CLASSES,
            "output": "P(injured) = mean over slices of softmax(logits)[1]; injured iff P >= threshold",
            "threshold": threshold,
            "threshold_rule": "Youden's J on the validation subjects (midpoint of the optimal gap)",
            "gradcam_layer": _models.GRADCAM_LAYERS[arch],
            "training": {
                "cohort_csv": str(Path(cohort_csv).resolve()),
                "cohort": cohort_summary(df),
                "n_train_subjects": int(len(tr)), "n_val_subjects": int(len(va)),
                "val_subjects": df["subject_id"].iloc[va].tolist(),
                "split": f"stratified by subject, val_fraction={val_fraction}, seed={seed}",
                "epochs_requested": int(epochs), "epochs_run": len(log), "best_epoch": best["epoch"],
                "seed": int(seed), "batch_size": batch_size, "lr": lr, "optimizer": "AdamW (wd 1e-4)",
                "loss": "class-balanced cross-entropy", "num_threads": int(num_threads),
                "augmentation": "LR mirror, rot +-10 deg, shift +-3 px, scale 0.92-1.08, blur 0-0.8 px, "
                                "intensity x0.8-1.2 +-0.15, linear ramp +-0.15, noise 0-0.12",
                "rois": "cohort labels.nii.gz" if used_labels else "atlas segmentation",
            },
            "validation_metrics": vmetrics,
            "atlas": atlas_record(atlas, used_labels),
            "versions": _versions(),
            "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        if extra_card:
            card.update(extra_card)
        if atlas is not None and Path(str(atlas)).is_dir():
            shutil.copytree(str(atlas), stage / "atlas")
            card["atlas"]["path"] = "atlas"
        (stage / CARD_NAME).write_text(json.dumps(card, indent=2))
    prog.update(1.0, "done")
    return out_dir
