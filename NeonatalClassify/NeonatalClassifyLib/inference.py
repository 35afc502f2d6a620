"""Classify one T1 with a trained slice classifier, with Grad-CAM painted back onto the T1.

* **Slice probability** = softmax of the network's two logits, class 1 (injured).
* **Subject probability** ``P(injured)`` = the arithmetic mean of the slice
  probabilities of the subject's ``n_slices`` ROI-centred slices.
* **Prediction**: injured iff probability >= the model card's threshold (Youden's J
  on the validation subjects).
* **Grad-CAM** (Selvaraju et al. 2017) of the architecture's last convolutional block
  (``models.GRADCAM_LAYERS``) for class 1 via ``monai.visualize.GradCAM``:
  ReLU(sum_c w_c A_c), w_c = spatial mean of d logit_1 / d A_c, bilinearly
  up-sampled to the slice size, *not* normalised per slice (so slices compare);
  painted back into the T1 voxels each plane passes through (``slices.paint_back``)
  and divided by the maximum over the volume (so values lie in [0, 1]; all zeros if
  the map is zero everywhere).
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from NeonatalBrainLib import anatomy
from NeonatalBrainLib.imageio import InputError, Volume, save_volume, validate_scalar_volume
from NeonatalBrainLib.outputs import staged_output
from NeonatalBrainLib.progress import as_progress

from . import models as _models
from .slices import SliceSpec, SliceStack, extract_slices, paint_back

CARD_NAME = "model_card.json"
WEIGHTS_NAME = "model.pt"
CLASSES = ["control", "injured"]


@dataclass
class LoadedModel:
    model: object
    card: dict
    spec: SliceSpec
    arch: str
    model_id: str
    model_dir: Path


@dataclass
class ClassificationResult:
    probability: float
    predicted_label: int
    threshold: float
    model_id: str
    slice_table: pd.DataFrame
    gradcam: Volume | None
    rois: object = None
    slice_stack: SliceStack | None = field(default=None, repr=False)
    roi_source: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"probability": float(self.probability), "predicted_label": int(self.predicted_label),
                "predicted_class": CLASSES[int(self.predicted_label)], "threshold": float(self.threshold),
                "model_id": self.model_id, "rois": self.roi_source,
                "slices": json.loads(self.slice_table.to_json(orient="records"))}


_CACHE: dict = {}
_LOCK = threading.Lock()


def read_model_card(model_dir: str | os.PathLike) -> dict:
    model_dir = Path(model_dir)
    card_path = model_dir / CARD_NAME
    if not model_dir.is_dir():
        raise InputError(f"model folder {model_dir}: not found")
    if not card_path.is_file():
        raise InputError(f"model folder {model_dir}: no {CARD_NAME}")
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"model card {card_path}: not valid JSON ({exc})") from None
    for key in ("architecture", "weights_sha256", "input", "threshold"):
        if key not in card:
            raise InputError(f"model card {card_path}: missing '{key}'")
    return card


def load_model(model_dir: str | os.PathLike) -> LoadedModel:
    """Model + card of a model folder (checksum and architecture verified; cached)."""
    model_dir = Path(model_dir).resolve()
    card = read_model_card(model_dir)
    key = (str(model_dir), card["weights_sha256"])
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
    cfg = card.get("model_config") or {}
    spec = SliceSpec.from_dict(card["input"])
    arch = card["architecture"]
    model = _models.build_from_config(dict(cfg, arch=arch, in_channels=len(spec.channels),
                                           image_size=spec.image_size))
    _models.load_weights(model, model_dir / WEIGHTS_NAME, arch, card["weights_sha256"])
    lm = LoadedModel(model, card, spec, arch, str(card.get("model_id", model_dir.name)), model_dir)
    with _LOCK:
        _CACHE[key] = lm
    return lm


def slice_probabilities(model, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """P(injured) per slice for images (n, C, H, W)."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for b in range(0, len(images), batch_size):
            logits = model(torch.from_numpy(np.ascontiguousarray(images[b:b + batch_size])))
            out.append(torch.softmax(logits, dim=1)[:, 1].cpu().numpy())
    return np.concatenate(out).astype(float) if out else np.zeros(0)


def aggregate(slice_probs: np.ndarray) -> float:
    """Subject probability = mean of the slice probabilities."""
    return float(np.mean(slice_probs))


def gradcam_maps(lm: LoadedModel, images: np.ndarray, class_index: int = 1) -> np.ndarray:
    """Raw (not normalised) Grad-CAM maps (n, H, W) >= 0 for ``class_index``."""
    import torch
    from monai.visualize import GradCAM

    cam = GradCAM(nn_module=lm.model, target_layers=_models.GRADCAM_LAYERS[lm.arch],
                  postprocessing=lambda x: x)
    x = torch.from_numpy(np.ascontiguousarray(images))
    lm.model.eval()
    maps = cam(x, class_idx=class_index)
    maps = maps.detach().cpu().numpy()[:, 0].astype(np.float32)
    maps = np.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(maps, 0.0, None)


def resolve_rois(t1: Volume, rois=None, atlas=None, card: dict | None = None, progress=None):
    """(labels Volume, names, roi_result) for ``t1``: the given ROIs (RoiResult or label
    Volume on the T1 grid, names from the project's table) or ``roi.segment_deep_grey``
    with ``atlas`` (default: the atlas recorded in the model card)."""
    if rois is not None:
        if hasattr(rois, "labels") and hasattr(rois, "names"):
            return rois.labels, dict(rois.names), rois
        if isinstance(rois, Volume):
            return rois, dict(anatomy.LABELS), rois
        raise InputError(f"ROIs: expected a RoiResult or a label Volume, got {type(rois).__name__}")
    try:
        from .roi import segment_deep_grey
    except ImportError as exc:
        raise InputError(f"automatic ROIs are not available ({exc}); give the ROI labels") from None
    if atlas is None and card is not None:
        atlas = atlas_from_card(card)
    kwargs = {"progress": progress}
    if atlas is not None:
        kwargs["atlas"] = atlas
    res = segment_deep_grey(t1, **kwargs)
    return res.labels, dict(res.names), res


def atlas_from_card(card: dict):
    """The atlas a model was trained with: a folder inside the model folder or a name."""
    rec = card.get("atlas") or {}
    if rec.get("path") and card.get("_model_dir"):
        p = Path(card["_model_dir"]) / rec["path"]
        if p.exists():
            return str(p)
    return rec.get("name")


def classify_t1(t1: Volume, model_dir: str | os.PathLike, *, rois=None, atlas=None, progress=None,
                gradcam: bool = True) -> ClassificationResult:
    """Probability of injury for one T1 (+ Grad-CAM volume on the T1 grid).

    ``rois``: the subject's ROIs (a RoiResult or a label Volume on the T1 grid, e.g.
    edited by the user) - used as given; else they are segmented with ``atlas`` or the
    model's recorded atlas.  See the module docstring for the definitions.
    """
    prog = as_progress(progress)
    validate_scalar_volume(t1, "T1")
    if t1.array.ndim != 3:
        raise InputError("T1: expected a 3D image")
    lm = load_model(model_dir)
    card = dict(lm.card, _model_dir=str(lm.model_dir))
    prog.update(0.0, "ROIs")
    labels, names, roi_obj = resolve_rois(t1, rois, atlas, card, progress=prog.sub(0.0, 0.6) if rois is None else None)
    prog.update(0.6, "slices")
    stack = extract_slices(t1, labels, names, lm.spec)
    prog.update(0.7, "classification")
    probs = slice_probabilities(lm.model, stack.images)
    p = aggregate(probs)
    threshold = float(lm.card["threshold"])
    table = pd.DataFrame({"slice": np.arange(len(probs)), "k_index": stack.k_index,
                          "z_mm": np.round(stack.z_mm, 3), "probability": probs})
    cam_vol = None
    if gradcam:
        prog.update(0.8, "Grad-CAM")
        maps = gradcam_maps(lm, stack.images)
        painted = paint_back(maps, stack, t1)
        peak = float(painted.max())
        if peak > 0 and np.isfinite(peak):
            painted = painted / peak
        cam_vol = t1.with_array(painted.astype(np.float32))
    prog.update(1.0, "done")
    source = {"source": "given" if rois is not None else "atlas"}
    if getattr(roi_obj, "atlas_checksum", None):
        recorded = (lm.card.get("atlas") or {}).get("checksum")
        source.update({"atlas_name": roi_obj.atlas_name, "atlas_checksum": roi_obj.atlas_checksum,
                       "matches_model_atlas": (recorded == roi_obj.atlas_checksum) if recorded else None})
    return ClassificationResult(probability=p, predicted_label=int(p >= threshold), threshold=threshold,
                                model_id=lm.model_id, slice_table=table, gradcam=cam_vol,
                                rois=roi_obj, slice_stack=stack, roi_source=source)


def write_overlay_png(result: ClassificationResult, path: str | os.PathLike) -> Path:
    """PNG: each slice's T1 (grey) with Grad-CAM (colour) and the ROI outline, in radiological
    convention (anterior up, the patient's right on the left)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    stack = result.slice_stack
    n = len(stack.z_mm)
    fig = Figure(figsize=(2.2 * n, 2.6), dpi=110)
    FigureCanvasAgg(fig)
    lm_maps = None
    if result.gradcam is not None:
        # sample the painted volume back at the slice pixels for display
        from scipy import ndimage
        inv = np.linalg.inv(result.gradcam.affine)
        lm_maps = []
        for s in range(n):
            pr = stack.pixel_ras(s).reshape(-1, 3)
            vox = pr @ inv[:3, :3].T + inv[:3, 3]
            lm_maps.append(ndimage.map_coordinates(result.gradcam.array, vox.T, order=1).reshape(stack.raw[s].shape))
    # the stack's columns run from the patient's left to right: shown mirrored, in radiological
    # convention (the patient's right on the left of each picture), as radiologists read
    for s in range(n):
        ax = fig.add_subplot(1, n, s + 1)
        ax.imshow(stack.raw[s][:, ::-1], cmap="gray")
        if lm_maps is not None:
            ax.imshow(lm_maps[s][:, ::-1], cmap="jet", alpha=0.35, vmin=0, vmax=1)
        ax.contour(stack.roi_mask[s][:, ::-1].astype(float), levels=[0.5], colors="lime", linewidths=0.6)
        ax.text(0.02, 0.5, "R", color="yellow", transform=ax.transAxes, fontsize=7, va="center")
        ax.text(0.98, 0.5, "L", color="yellow", transform=ax.transAxes, fontsize=7, va="center", ha="right")
        p = result.slice_table["probability"].iloc[s]
        ax.set_title(f"z={stack.z_mm[s]:.1f} mm  p={p:.2f}", fontsize=7)
        ax.set_axis_off()
    fig.suptitle(f"P(injured) = {result.probability:.3f} (threshold {result.threshold:.3f}); "
                 "radiological view: the patient's right on the left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def write_classification_outputs(result: ClassificationResult, t1: Volume, out_dir: str | os.PathLike) -> Path:
    """``result.json``, ``gradcam.nii.gz``, ``gradcam_overlay.png`` (and ``roi_labels.nii.gz``
    when the ROIs were segmented) into a new or empty ``out_dir`` (staged)."""
    out_dir = Path(out_dir)
    with staged_output(out_dir) as stage:
        (stage / "result.json").write_text(json.dumps(result.to_dict(), indent=2))
        result.slice_table.to_csv(stage / "slices.csv", index=False)
        if result.gradcam is not None:
            save_volume(result.gradcam, stage / "gradcam.nii.gz")
        if result.slice_stack is not None:
            write_overlay_png(result, stage / "gradcam_overlay.png")
    return out_dir


@dataclass
class UserRois:
    """ROI labels given by the user (e.g. edited in Slicer): ``labels`` on the T1 grid."""

    labels: Volume
    names: dict
    source: str = "user"


def rois_from_files(labels_path: str | os.PathLike, t1: Volume) -> UserRois:
    """Read user ROI labels (must lie on the T1 grid); names from ``<stem>.csv`` beside
    the file (value,name) when present, else the project's label table."""
    from NeonatalBrainLib.imageio import check_same_grid, load_volume

    labels_path = Path(labels_path)
    vol = load_volume(labels_path, "ROI labels")
    check_same_grid(t1, vol, "T1", f"ROI labels ({labels_path})")
    name = labels_path.name
    stem = name[:-7] if name.endswith(".nii.gz") else labels_path.stem
    table = labels_path.with_name(stem + ".csv")
    names = anatomy.read_label_table(table) if table.is_file() else dict(anatomy.LABELS)
    arr = np.asarray(vol.array)
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.rint(arr)
    return UserRois(vol.with_array(arr.astype(np.int32)), names, str(labels_path))
