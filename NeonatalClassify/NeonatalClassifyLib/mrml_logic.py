"""MRML-level logic of the NeonatalClassify module (3D Slicer or headless slicer-core).

Takes and returns MRML nodes; converts them with :mod:`NeonatalBrainLib.mrml`
and calls the engine (:mod:`NeonatalClassifyLib.roi`, ``.inference``,
``.training``, ``.evaluation``, ``.catalogue``) and :mod:`NeonatalBrainLib.stats`.
``slicer``, ``vtk`` and ``torch`` are imported inside the functions, so importing
this module needs none of them.  Every function takes the scene explicitly.

Nodes made here
---------------
* ROI segmentation: one segment per deep grey-matter ROI (``anatomy.DEEP_GREY_ROIS``),
  named like the label (``globus_pallidus_left``), coloured from
  :mod:`NeonatalBrainLib.anatomy`, with a DICOM/SNOMED-CT terminology entry
  (category *Anatomical Structure*; type *Globus pallidus*, *Putamen*, *Caudate
  nucleus*, *Thalamus*; modifier *Left*/*Right*) so Slicer's Segment Editor and
  DICOM SEG export name them correctly.  Its reference geometry is the T1 grid.
  The attribute ``NeonatalClassify.RoiChecksum`` holds the SHA-256 of the labels
  as extracted, so a later classification can tell whether the user edited them.
* Grad-CAM heatmap: scalar volume node on exactly the T1 grid (same dimensions
  and IJK-to-RAS matrix), warm colour table :data:`HEATMAP_COLOR_NAME`, window
  [lower threshold, maximum] with values below the lower threshold transparent.
* Result tables: a one-row summary and a per-slice table.
* All outputs of one input grouped in a subject-hierarchy folder named after the
  input volume node.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from NeonatalBrainLib import anatomy, mrml
from NeonatalBrainLib.imageio import InputError, Volume, ras_view, save_volume, validate_scalar_volume
from NeonatalBrainLib.outputs import OutputExistsError, unique_path
from NeonatalBrainLib.progress import as_progress

#: Node attribute: SHA-256 of the ROI labels as extracted (detects user edits).
ROI_CHECKSUM_ATTRIBUTE = "NeonatalClassify.RoiChecksum"
#: Node attribute: atlas the ROIs were extracted with.
ROI_ATLAS_ATTRIBUTE = "NeonatalClassify.Atlas"
#: Node attribute on outputs: ID of the T1 volume node they belong to.
SOURCE_VOLUME_ATTRIBUTE = "NeonatalClassify.SourceVolumeID"
#: Node attribute on the heatmap: opacity chosen for the overlay.
HEATMAP_OPACITY_ATTRIBUTE = "NeonatalClassify.HeatmapOpacity"

#: Name of the warm colour table of the Grad-CAM heatmap.
HEATMAP_COLOR_NAME = "NeonatalClassify Grad-CAM (warm)"
#: Anchor colours (position 0..1, RGB 0..1) of the warm ramp: dark red -> red -> orange -> yellow -> pale yellow.
HEATMAP_COLOR_ANCHORS: tuple[tuple[float, tuple[float, float, float]], ...] = (
    (0.0, (0.25, 0.0, 0.0)),
    (0.3, (0.80, 0.05, 0.0)),
    (0.6, (1.0, 0.50, 0.0)),
    (0.85, (1.0, 0.85, 0.10)),
    (1.0, (1.0, 1.0, 0.70)),
)

#: SNOMED-CT codes (coding scheme SCT) of the ROI structures, as in Slicer's
#: "3D Slicer General Anatomy list" terminology.
STRUCTURE_CODES: dict[str, tuple[str, str]] = {
    "globus_pallidus": ("14738005", "Globus pallidus"),
    "putamen": ("89278009", "Putamen"),
    "caudate": ("11000004", "Caudate nucleus"),
    "thalamus": ("119406000", "Thalamus"),
}
SIDE_CODES: dict[str, tuple[str, str]] = {"left": ("7771000", "Left"), "right": ("24028007", "Right")}
TERMINOLOGY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


# ----------------------------------------------------------------------------- small helpers
def _slicer():
    import slicer

    return slicer


def _name(node) -> str:
    return node.GetName() if node is not None else "(none)"


def _require_volume_node(node, what: str) -> None:
    if node is None or not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise InputError(f"{what}: expected a scalar volume node, got "
                         f"{node.GetClassName() if node is not None else 'nothing'}")


def labels_checksum(labels: np.ndarray) -> str:
    """SHA-256 of an integer label array (shape, dtype-independent values)."""
    a = np.ascontiguousarray(np.asarray(labels).astype(np.int32))
    h = hashlib.sha256(str(a.shape).encode())
    h.update(a.tobytes())
    return h.hexdigest()


def terminology_entry(roi_name: str) -> str | None:
    """Slicer terminology string of a ROI name (e.g. 'putamen_left'), or None if none fits."""
    structure = anatomy.structure_of(roi_name)
    side = roi_name[len(structure) + 1:] if roi_name != structure else ""
    if structure not in STRUCTURE_CODES:
        return None
    code, meaning = STRUCTURE_CODES[structure]
    modifier = "SCT^{}^{}".format(*SIDE_CODES[side]) if side in SIDE_CODES else "^^"
    return (f"{TERMINOLOGY_CONTEXT}~SCT^123037004^Anatomical Structure~SCT^{code}^{meaning}~{modifier}"
            f"~{ANATOMIC_CONTEXT}~^^~^^")


def select_device() -> str:
    """'cuda' when PyTorch sees a CUDA GPU, else 'cpu' (PyTorch imported here, on first use)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _subject_folder(scene, t1_node) -> int:
    """Subject-hierarchy folder named after the input volume (created once)."""
    return mrml.subject_hierarchy_folder(scene, f"{t1_node.GetName()} NeonatalClassify")


def _ijk_to_ras(volume_node) -> np.ndarray:
    """The node's own IJK-to-RAS matrix (before any parent transform)."""
    import vtk

    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def _tag_output(node, t1_node) -> None:
    node.SetAttribute(SOURCE_VOLUME_ATTRIBUTE, t1_node.GetID())


# ----------------------------------------------------------------------------- models (catalogue)
#: Catalogue id of the shipped demo model (trained on synthetic phantom data; not for clinical use).
DEMO_MODEL_ID = "demo"


def _catalogue():
    from NeonatalClassifyLib import catalogue

    return catalogue


def _entry_dict(entry) -> dict:
    return {"id": entry.id, "label": entry.label, "path": Path(entry.path), "card": dict(entry.card),
            "builtin": bool(entry.builtin), "synthetic": bool(entry.synthetic)}


def list_models() -> list[dict]:
    """Installed models of the local catalogue: ``[{id, label, path, card, builtin, synthetic}]``,
    the demo model first, then the user's models."""
    return [_entry_dict(e) for e in _catalogue().list_models()]


def resolve_model(model) -> Path:
    """Model folder of a catalogue id, or ``model`` itself when it is a model folder."""
    if model is None or str(model) == "":
        raise InputError("model: no model selected")
    p = Path(str(model))
    if p.is_dir():
        return p
    try:
        return Path(_catalogue().get_model(str(model)).path)
    except InputError:
        raise InputError(f"model '{model}': not in the local catalogue and not a model folder") from None


def model_card(model) -> dict:
    """The model card (JSON dict) of a catalogue id or model folder."""
    from NeonatalClassifyLib import inference

    return inference.read_model_card(resolve_model(model))


def model_summary(model) -> str:
    """One-paragraph description of a model for the GUI."""
    card = model_card(model)
    parts = [f"Architecture: {card.get('architecture', '?')}"]
    roi = (card.get("input") or {}).get("roi")
    if roi:
        parts.append(f"ROI {roi}")
    if "threshold" in card:
        parts.append(f"threshold {float(card['threshold']):.3f}")
    metrics = card.get("validation_metrics") or card.get("validation") or {}
    if isinstance(metrics, Mapping) and isinstance(metrics.get("auc"), (int, float)):
        parts.append(f"validation AUC {float(metrics['auc']):.3f}")
    text = ", ".join(parts) + "."
    if card.get("synthetic_training_data"):
        text += " Trained on SYNTHETIC phantom data: a demonstration, not for clinical use."
    return text


def import_model(folder, model_id: str | None = None) -> str:
    """Copy a model folder (model.pt + model_card.json) into the user catalogue after the
    catalogue verified its SHA-256 checksum and architecture; returns the new id.
    Nothing is downloaded; an existing id is never overwritten."""
    return _catalogue().import_model(Path(folder), model_id).id


# ----------------------------------------------------------------------------- ROIs
def extract_rois(scene, t1_node, atlas=None, progress=None, *, model=None, segmentation_node=None):
    """Segment the eight deep grey-matter ROIs of ``t1_node`` into a segmentation node.

    ``atlas``: built-in atlas name or atlas folder; None = the atlas recorded in
    ``model``'s card when a model is given, else the built-in default atlas.
    ``segmentation_node``: replace the segments of this node instead of creating one.
    Returns the segmentation node (editable in the Segment Editor; reference
    geometry = the T1 grid).
    """
    from NeonatalClassifyLib import roi
    from NeonatalClassifyLib.atlas import DEFAULT_ATLAS

    _require_volume_node(t1_node, "T1 volume")
    prog = as_progress(progress)
    t1 = mrml.volume_from_node(t1_node)
    validate_scalar_volume(t1, f"T1 volume '{t1_node.GetName()}'")
    if atlas is None and model:
        atlas = _model_atlas(model)
    result = roi.segment_deep_grey(t1, atlas or DEFAULT_ATLAS, progress=prog.sub(0.0, 0.9))
    names = {int(v): n for v, n in result.names.items() if n in anatomy.DEEP_GREY_ROIS}
    labels = np.where(np.isin(result.labels.array, list(names)), result.labels.array, 0)
    seg = roi_segmentation_from_labels(scene, t1_node, Volume(labels, result.labels.affine), names,
                                       node=segmentation_node)
    seg.SetAttribute(ROI_ATLAS_ATTRIBUTE, f"{result.atlas_name} sha256:{result.atlas_checksum}")
    prog.update(1.0, "ROIs ready")
    return seg


def _model_atlas(model):
    """Atlas (folder or built-in name) recorded in a model's card, or None."""
    from NeonatalClassifyLib import inference

    folder = resolve_model(model)
    card = dict(inference.read_model_card(folder), _model_dir=str(folder))
    return inference.atlas_from_card(card)


def roi_segmentation_from_labels(scene, t1_node, labels: Volume, names: Mapping[int, str], node=None):
    """Segmentation node of the ROI labels (on the T1 grid) with colours, terminology and display set."""
    slicer = _slicer()
    base = node.GetName() if node is not None else f"{t1_node.GetName()} deep grey ROIs"
    seg = mrml.segmentation_node_from_labels(scene, labels, names, name=base, node=node,
                                             reference_volume_node=t1_node)
    segmentation = seg.GetSegmentation()
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        entry = terminology_entry(segment.GetName())
        if entry:
            segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), entry)
    display = seg.GetDisplayNode()
    if display is not None:
        display.SetOpacity2DFill(0.25)
        display.SetOpacity2DOutline(1.0)
        display.SetVisibility2DOutline(True)
    seg.SetAttribute(ROI_CHECKSUM_ATTRIBUTE, labels_checksum(labels.array))
    _tag_output(seg, t1_node)
    mrml.place_in_folder(scene, seg, _subject_folder(scene, t1_node))
    return seg


def roi_labels_from_segmentation(seg_node, t1: Volume) -> tuple[Volume, dict[int, str], bool]:
    """ROI labels on the T1 grid from a (possibly edited) segmentation node.

    Segments are matched by *name* to ``anatomy.DEEP_GREY_ROIS`` and get the
    standard label values (``anatomy.LABEL_VALUES``); other segments are ignored.
    Returns (labels, value -> name, edited) where ``edited`` is True when the
    labels differ from those stored when the ROIs were extracted.
    Raises InputError if none of the eight ROI names is present.
    """
    exported, table = mrml.labels_from_segmentation_node(seg_node, t1)
    out = np.zeros(t1.shape, np.uint8)
    names: dict[int, str] = {}
    for value, name in table.items():
        if name in anatomy.DEEP_GREY_ROIS:
            std = anatomy.LABEL_VALUES[name]
            out[np.asarray(exported.array) == value] = std
            names[std] = name
    if not names:
        raise InputError(f"ROI segmentation '{_name(seg_node)}': has none of the segments "
                         f"{', '.join(anatomy.DEEP_GREY_ROIS)}")
    stored = seg_node.GetAttribute(ROI_CHECKSUM_ATTRIBUTE)
    edited = stored is None or stored != labels_checksum(out)
    return Volume(out, t1.affine.copy()), names, edited


# ----------------------------------------------------------------------------- classification
@dataclass
class ClassifyOutputs:
    """What :func:`classify_volume_node` put into the scene.

    ``probability`` = P(injured) of the subject; ``predicted_label`` = 1 iff
    probability >= ``threshold``; ``roi_source`` says which ROIs were used
    ("edited segmentation", "segmentation" or "automatic");
    ``roi_labels`` = the label volume handed to the engine.
    """

    probability: float
    predicted_label: int
    predicted_class: str
    threshold: float
    model_id: str
    roi_source: str
    heatmap_node: Any
    summary_table_node: Any
    slice_table_node: Any
    roi_segmentation_node: Any
    folder_item: int
    roi_labels: Volume | None = None
    engine_result: Any = None
    summary: dict = field(default_factory=dict)
    slices: list = field(default_factory=list)


def classify_volume_node(scene, t1_node, model_id_or_dir, roi_segmentation_node=None, progress=None, *,
                         atlas=None, device=None, heatmap_node=None, summary_table_node=None,
                         slice_table_node=None) -> ClassifyOutputs:
    """Classify a T1 volume node and put heatmap, tables (and ROIs) into the scene.

    With ``roi_segmentation_node`` its segments (as edited by the user) are read
    back onto the T1 grid and given to the engine; without it the ROIs are
    extracted automatically and a segmentation node is created.  Output nodes are
    created, or updated in place when given.
    """
    _require_volume_node(t1_node, "T1 volume")
    prog = as_progress(progress)
    t1 = mrml.volume_from_node(t1_node)
    validate_scalar_volume(t1, f"T1 volume '{t1_node.GetName()}'")
    model_dir = resolve_model(model_id_or_dir)
    if roi_segmentation_node is None:
        roi_segmentation_node = extract_rois(scene, t1_node, atlas=atlas, model=model_id_or_dir,
                                             progress=prog.sub(0.0, 0.5))
        labels, _names, _edited = roi_labels_from_segmentation(roi_segmentation_node, t1)
        roi_source = "automatic"
        prog = prog.sub(0.5, 1.0)
    else:
        labels, _names, edited = roi_labels_from_segmentation(roi_segmentation_node, t1)
        roi_source = "edited segmentation" if edited else "segmentation"
    prog.update(0.05, "classifying")
    result = _engine_classify(t1, model_dir, labels, device=device, progress=prog.sub(0.05, 0.9))
    summary, slices, heat = _normalise_result(result, model_id_or_dir, model_dir)
    if not summary["architecture"]:
        summary["architecture"] = str(_read_card(model_dir).get("architecture", ""))
    summary["roi_source"] = roi_source
    summary["input"] = t1_node.GetName()

    folder = _subject_folder(scene, t1_node)
    heat_name = f"{t1_node.GetName()} Grad-CAM"
    # same IJK-to-RAS matrix and parent transform as the T1 node, so the two share one grid
    heatmap_node = mrml.volume_node_from_volume(scene, Volume(heat, _ijk_to_ras(t1_node)), heat_name,
                                                node=heatmap_node)
    heatmap_node.SetAndObserveTransformNodeID(t1_node.GetTransformNodeID())
    _tag_output(heatmap_node, t1_node)
    style_heatmap(scene, heatmap_node)
    summary_table_node = mrml.table_node_from_rows(scene, [summary], f"{t1_node.GetName()} classification",
                                                   node=summary_table_node)
    slice_table_node = mrml.table_node_from_rows(scene, slices, f"{t1_node.GetName()} per-slice results",
                                                 node=slice_table_node)
    for node in (summary_table_node, slice_table_node):
        _tag_output(node, t1_node)
        node.SetLocked(True) if hasattr(node, "SetLocked") else None
    for node in (heatmap_node, summary_table_node, slice_table_node, roi_segmentation_node):
        mrml.place_in_folder(scene, node, folder)
    prog.update(1.0, "done")
    return ClassifyOutputs(
        probability=float(summary["probability"]), predicted_label=int(summary["predicted_label"]),
        predicted_class=str(summary["predicted_class"]), threshold=float(summary["threshold"]),
        model_id=str(summary["model_id"]), roi_source=roi_source, heatmap_node=heatmap_node,
        summary_table_node=summary_table_node, slice_table_node=slice_table_node,
        roi_segmentation_node=roi_segmentation_node, folder_item=folder, roi_labels=labels,
        engine_result=result, summary=summary, slices=slices)


def _engine_classify(t1: Volume, model_dir: Path, labels: Volume, device=None, progress=None):
    """The engine's ``inference.classify_t1`` with these ROI labels (standard label values, T1 grid)."""
    from NeonatalClassifyLib import inference

    return _call_with(inference.classify_t1, [t1, model_dir],
                      {"rois": labels, "device": device, "progress": progress, "gradcam": True})


def _normalise_result(result, model_ref, model_dir: Path) -> tuple[dict, list[dict], np.ndarray]:
    """(summary row, per-slice rows, heatmap array) of an ``inference.ClassificationResult``."""
    from NeonatalClassifyLib import inference

    doc = result.to_dict()
    slices = [dict(r) for r in doc.pop("slices", [])]
    if result.gradcam is None:
        raise RuntimeError("the engine returned no Grad-CAM heatmap")
    summary = {
        "model_id": str(doc.get("model_id") or Path(str(model_ref)).name),
        "architecture": "",
        "probability": float(doc["probability"]),
        "predicted_label": int(doc["predicted_label"]),
        "predicted_class": str(doc.get("predicted_class") or inference.CLASSES[int(doc["predicted_label"])]),
        "threshold": float(doc["threshold"]),
        "n_slices": len(slices),
    }
    return summary, slices, np.asarray(result.gradcam.array, dtype=np.float32)


# ----------------------------------------------------------------------------- heatmap display
def heatmap_color_node(scene):
    """The warm colour table of Grad-CAM heatmaps (256 entries of :func:`heatmap_colors`, one per scene)."""
    node = scene.GetFirstNodeByName(HEATMAP_COLOR_NAME)
    if node is not None and node.IsA("vtkMRMLColorTableNode"):
        return node
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", HEATMAP_COLOR_NAME)
    node.SetTypeToUser()
    node.SetNumberOfColors(256)
    for i, (r, g, b) in enumerate(heatmap_colors(256)):
        node.SetColor(i, f"{i}", float(r), float(g), float(b), 1.0)
    node.SetAttribute("Category", "NeonatalClassify")
    node.SetHideFromEditors(False)
    return node


def heatmap_colors(n: int = 256) -> np.ndarray:
    """(n, 3) RGB of the warm ramp (for figures outside Slicer)."""
    xs = np.array([a[0] for a in HEATMAP_COLOR_ANCHORS])
    rgb = np.array([a[1] for a in HEATMAP_COLOR_ANCHORS])
    t = np.linspace(0.0, 1.0, n)
    return np.stack([np.interp(t, xs, rgb[:, c]) for c in range(3)], axis=1)


def style_heatmap(scene, heatmap_node, threshold_fraction: float = 0.2) -> None:
    """Warm colour table, window [lower, max], values below ``threshold_fraction`` x max transparent."""
    if heatmap_node.GetDisplayNode() is None:
        heatmap_node.CreateDefaultDisplayNodes()
    display = heatmap_node.GetDisplayNode()
    display.SetAndObserveColorNodeID(heatmap_color_node(scene).GetID())
    _apply_heatmap_threshold(heatmap_node, threshold_fraction)


def _apply_heatmap_threshold(heatmap_node, threshold_fraction: float) -> tuple[float, float]:
    display = heatmap_node.GetDisplayNode()
    image = heatmap_node.GetImageData()
    lo_value, hi_value = image.GetScalarRange() if image is not None else (0.0, 0.0)
    hi = float(max(hi_value, 0.0))
    fraction = min(1.0, max(0.0, float(threshold_fraction)))
    # never show exact zeros (voxels outside the classified slices): lower bound at least 1e-6 x max
    lower = max(fraction * hi, 1e-6 * hi) if hi > 0 else 1e-6
    display.SetAutoWindowLevel(0)
    display.SetWindowLevelMinMax(lower, hi if hi > lower else lower + 1e-6)
    display.SetApplyThreshold(1)
    display.SetAutoThreshold(0)
    display.SetLowerThreshold(lower)
    display.SetUpperThreshold(hi if hi > lower else lower + 1e-6)
    display.SetInterpolate(1)
    return lower, hi


def set_heatmap_overlay(scene, t1_node, heatmap_node, opacity: float = 0.5, threshold_fraction: float = 0.2) -> dict:
    """Show ``heatmap_node`` as foreground over ``t1_node`` in every slice view.

    ``opacity`` (0-1): foreground opacity; ``threshold_fraction`` (0-1): heatmap
    values below this fraction of the heatmap's maximum are transparent.
    Returns ``{"lower": ..., "upper": ..., "opacity": ..., "views": n}``.
    """
    if heatmap_node is None:
        raise InputError("heatmap: no heatmap volume node")
    if heatmap_node.GetDisplayNode() is None or heatmap_node.GetDisplayNode().GetColorNode() is None \
            or heatmap_node.GetDisplayNode().GetColorNode().GetName() != HEATMAP_COLOR_NAME:
        style_heatmap(scene, heatmap_node, threshold_fraction)
    lower, upper = _apply_heatmap_threshold(heatmap_node, threshold_fraction)
    opacity = min(1.0, max(0.0, float(opacity)))
    heatmap_node.SetAttribute(HEATMAP_OPACITY_ATTRIBUTE, f"{opacity:.4g}")
    n = 0
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
        if t1_node is not None:
            composite.SetBackgroundVolumeID(t1_node.GetID())
        composite.SetForegroundVolumeID(heatmap_node.GetID())
        composite.SetForegroundOpacity(opacity)
        n += 1
    return {"lower": lower, "upper": upper, "opacity": opacity, "views": n}


# ----------------------------------------------------------------------------- figures (matplotlib)
#: Display planes of :func:`render_overlay_figure`: (in-plane RAS axes (horizontal, vertical), slice axis, labels).
_PLANES = {
    "axial": ((0, 1), 2, ("x (mm): patient's right  <->  left", "y (mm): posterior  <->  anterior"), "z"),
    "coronal": ((0, 2), 1, ("x (mm): patient's right  <->  left", "z (mm): inferior  <->  superior"), "y"),
}


def render_overlay_figure(path, t1_node, *, segmentation_node=None, heatmap_node=None, opacity: float = 0.5,
                          threshold_fraction: float = 0.2, plane: str = "axial", slice_index: int | None = None,
                          title: str = "", focus: str = "globus_pallidus", dpi: int = 120) -> Path:
    """PNG of one axial or coronal slice of the T1 with ROI outlines and/or the heatmap, from the MRML nodes.

    Drawn with matplotlib in radiological convention (patient's right on the image
    left) on the T1 re-ordered to its nearest R, A, S axes.  ``slice_index`` (along
    that re-ordering) defaults to the slice with the largest heatmap value, else the
    largest area of the ``focus`` structure (both sides), else of all ROIs.
    Heatmap values below ``threshold_fraction`` x its maximum are transparent, as in
    :func:`set_heatmap_overlay`.  Never overwrites ``path``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.lines import Line2D

    if plane not in _PLANES:
        raise InputError(f"plane '{plane}': expected one of {', '.join(_PLANES)}")
    (ax_h, ax_v), ax_s, (label_h, label_v), slice_name = _PLANES[plane]
    order = (ax_h, ax_v, ax_s)
    path = Path(path)
    if path.exists():
        raise OutputExistsError(f"{path} already exists; not overwritten")
    t1 = mrml.volume_from_node(t1_node)
    t1_ras, spacing = ras_view(t1.array, t1.affine)
    t1_ras, spacing = np.transpose(t1_ras, order), spacing[list(order)]
    labels_ras = heat_ras = None
    seg_colors: dict[int, tuple] = {}
    if segmentation_node is not None:
        labels, _names, _edited = roi_labels_from_segmentation(segmentation_node, t1)
        labels_ras = np.transpose(ras_view(labels.array, labels.affine)[0], order)
        segmentation = segmentation_node.GetSegmentation()
        for i in range(segmentation.GetNumberOfSegments()):
            seg = segmentation.GetNthSegment(i)
            if seg.GetName() in anatomy.LABEL_VALUES:
                seg_colors[anatomy.LABEL_VALUES[seg.GetName()]] = tuple(seg.GetColor())
    if heatmap_node is not None:
        heat = mrml.volume_from_node(heatmap_node)
        if heat.shape != t1.shape or not np.allclose(heat.affine, t1.affine, atol=1e-4):
            raise InputError(f"heatmap '{heatmap_node.GetName()}': not on the T1 grid")
        heat_ras = np.transpose(ras_view(heat.array, heat.affine)[0], order).astype(float)
    if slice_index is None:
        if heat_ras is not None and heat_ras.max() > 0:
            slice_index = int(np.argmax(heat_ras.reshape(-1, heat_ras.shape[2]).max(axis=0)))
        elif labels_ras is not None and labels_ras.any():
            focus_values = [anatomy.LABEL_VALUES[n] for n in anatomy.DEEP_GREY_ROIS if anatomy.structure_of(n) == focus]
            mask = np.isin(labels_ras, focus_values)
            slice_index = int(np.argmax((mask if mask.any() else labels_ras > 0).sum(axis=(0, 1))))
        else:
            slice_index = t1_ras.shape[2] // 2
    k = int(np.clip(slice_index, 0, t1_ras.shape[2] - 1))
    corners = np.array([[i, j, kk] for i in (-0.5, t1.shape[0] - 0.5) for j in (-0.5, t1.shape[1] - 0.5)
                        for kk in (-0.5, t1.shape[2] - 0.5)])
    world_min = t1.ijk_to_ras(corners).min(axis=0)
    h0, v0 = world_min[ax_h], world_min[ax_v]
    extent = (h0, h0 + t1_ras.shape[0] * spacing[0], v0, v0 + t1_ras.shape[1] * spacing[1])
    aspect = (extent[3] - extent[2]) / max(extent[1] - extent[0], 1e-6)
    fig, ax = plt.subplots(figsize=(5.6, 4.6 * aspect + 0.6))
    sl = t1_ras[:, :, k].T
    lo, hi = np.percentile(sl, [1, 99.5]) if sl.max() > sl.min() else (sl.min(), sl.min() + 1)
    ax.imshow(sl, cmap="gray", vmin=lo, vmax=hi, origin="lower", extent=extent, interpolation="nearest")
    if heat_ras is not None:
        hmax = float(heat_ras.max())
        lower = max(threshold_fraction * hmax, 1e-6 * hmax) if hmax > 0 else 1.0
        masked = np.ma.masked_less(heat_ras[:, :, k].T, lower)
        im = ax.imshow(masked, cmap=ListedColormap(heatmap_colors()), vmin=lower, vmax=max(hmax, lower + 1e-6),
                       alpha=float(opacity), origin="lower", extent=extent, interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="Grad-CAM")
    if labels_ras is not None:
        sl_lab = labels_ras[:, :, k].T
        xs = extent[0] + (np.arange(sl_lab.shape[1]) + 0.5) * spacing[0]
        ys = extent[2] + (np.arange(sl_lab.shape[0]) + 0.5) * spacing[1]
        shown: dict[str, tuple] = {}
        for value, color in sorted(seg_colors.items()):
            mask = (sl_lab == value).astype(float)
            if mask.any():
                ax.contour(xs, ys, mask, levels=[0.5], colors=[color], linewidths=1.2)
                shown.setdefault(anatomy.structure_of(anatomy.LABELS[value]).replace("_", " "), color)
        if shown:
            ax.legend([Line2D([0], [0], color=c, lw=2) for c in shown.values()], list(shown), loc="upper right",
                      fontsize=7, framealpha=0.6)
    ax.invert_xaxis()  # radiological convention: patient's right on the left of the image
    ax.set_xlabel(label_h)
    ax.set_ylabel(label_v)
    position_mm = float(world_min[ax_s] + (k + 0.5) * spacing[2])
    ax.set_title(title or f"{t1_node.GetName()}, {plane} slice {k}", fontsize=10)
    ax.text(0.02, 0.02, f"{slice_name} = {position_mm:.1f} mm", transform=ax.transAxes, color="white", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- export
def _write_rows_csv(rows: list[dict], path: Path) -> Path:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    return path


def export_results(out_dir, *, t1_node, heatmap_node=None, roi_segmentation_node=None, summary_table_node=None,
                   slice_table_node=None, results: bool = True, heatmap: bool = True, segmentation: bool = True,
                   figures: bool = True, overwrite: bool = False, opacity: float | None = None,
                   threshold_fraction: float = 0.2) -> list[Path]:
    """Write the classification of ``t1_node`` into ``out_dir``; returns the written paths.

    Files: ``result.json`` (summary + per-slice rows), ``result.csv``,
    ``slices.csv``, ``gradcam.nii.gz`` (heatmap on the T1 grid),
    ``roi_segmentation.seg.nrrd``, ``roi_labels.nii.gz`` + ``roi_labels.csv``,
    ``overlay_rois.png``, ``overlay_gradcam.png``.  If any of these exists and
    ``overwrite`` is False, raises :class:`OutputExistsError` naming them and
    writes nothing; files are written to a staging folder first and moved in
    only when all succeeded.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"export folder {out}: exists and is not a folder")
    plan: list[str] = []
    if results:
        if summary_table_node is None:
            raise InputError("export: no result table (classify first)")
        plan += ["result.json", "result.csv"] + (["slices.csv"] if slice_table_node is not None else [])
    if heatmap:
        if heatmap_node is None:
            raise InputError("export: no heatmap volume (classify first)")
        plan.append("gradcam.nii.gz")
    if segmentation:
        if roi_segmentation_node is None:
            raise InputError("export: no ROI segmentation (extract ROIs first)")
        plan += ["roi_segmentation.seg.nrrd", "roi_labels.nii.gz", "roi_labels.csv"]
    if figures:
        plan += (["overlay_rois.png"] if roi_segmentation_node is not None else []) + \
                (["overlay_gradcam.png"] if heatmap_node is not None else [])
    existing = [name for name in plan if (out / name).exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"export folder {out}: {len(existing)} file(s) exist already: "
                                f"{', '.join(existing)}; nothing was written")
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    try:
        t1 = mrml.volume_from_node(t1_node)
        if results:
            summary_rows = mrml.rows_from_table_node(summary_table_node)
            slice_rows = mrml.rows_from_table_node(slice_table_node) if slice_table_node is not None else []
            doc = dict(summary_rows[0]) if summary_rows else {}
            doc["slices"] = slice_rows
            doc["notice"] = "Research software; models trained on synthetic data are not for clinical use."
            (stage / "result.json").write_text(json.dumps(doc, indent=2, default=float))
            _write_rows_csv(summary_rows, stage / "result.csv")
            if slice_table_node is not None:
                _write_rows_csv(slice_rows, stage / "slices.csv")
        if heatmap:
            save_volume(mrml.volume_from_node(heatmap_node), stage / "gradcam.nii.gz")
        if segmentation:
            mrml.save_segmentation(roi_segmentation_node, stage / "roi_segmentation.seg.nrrd")
            labels, names, _edited = roi_labels_from_segmentation(roi_segmentation_node, t1)
            save_volume(labels, stage / "roi_labels.nii.gz")
            anatomy.write_label_table(stage / "roi_labels.csv", names)
        if figures:
            if opacity is None and heatmap_node is not None:
                opacity = float(heatmap_node.GetAttribute(HEATMAP_OPACITY_ATTRIBUTE) or 0.5)
            if roi_segmentation_node is not None:
                render_overlay_figure(stage / "overlay_rois.png", t1_node, segmentation_node=roi_segmentation_node,
                                      title=f"{t1_node.GetName()}: deep grey-matter ROIs")
            if heatmap_node is not None:
                render_overlay_figure(stage / "overlay_gradcam.png", t1_node, heatmap_node=heatmap_node,
                                      segmentation_node=roi_segmentation_node, opacity=opacity or 0.5,
                                      threshold_fraction=threshold_fraction,
                                      title=f"{t1_node.GetName()}: Grad-CAM")
        written = []
        for name in plan:
            src = stage / name
            if not src.exists():
                continue
            target = out / name
            if target.exists() and not overwrite:
                raise OutputExistsError(f"{target} appeared during the export; not overwritten")
            os.replace(src, target)
            written.append(target)
        return written
    finally:
        shutil.rmtree(stage, ignore_errors=True)


# ----------------------------------------------------------------------------- cohort
@dataclass
class CohortResult:
    """Outcome of a cohort task: ``summary`` (JSON-ready), ``files`` (name -> path),
    ``tables`` (name -> table node), ``figures`` (name -> plot chart or image node), ``out_dir``."""

    summary: dict
    files: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict)
    figures: dict = field(default_factory=dict)
    out_dir: Path | None = None


def _removes_new_run_folders_on_failure(func):
    """Decorator for cohort tasks: if the task fails or is cancelled, the folders it created
    under ``out_parent`` are removed again (nothing half-written is left; older runs stay)."""
    import functools
    import inspect

    signature = inspect.signature(func)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        parent = Path(signature.bind(*args, **kwargs).arguments["out_parent"])
        before = {p.name for p in parent.iterdir()} if parent.is_dir() else None
        try:
            return func(*args, **kwargs)
        except BaseException:
            if before is not None and parent.is_dir():
                for p in parent.iterdir():
                    if p.name not in before and p.is_dir():
                        shutil.rmtree(p, ignore_errors=True)
            elif before is None:
                shutil.rmtree(parent, ignore_errors=True)
            raise

    return wrapper


def _new_run_folder(parent, stem: str) -> Path:
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    return unique_path(parent / stem)


def plot_chart(scene, name: str, table_node, x_column: str, series: Sequence[tuple[str, str]], *,
               x_title: str = "", y_title: str = "", x_range=None, y_range=None):
    """Plot chart node with one line series per ``(y_column, legend)`` of ``table_node``."""
    slicer = _slicer()
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
    palette = [(0.85, 0.2, 0.1), (0.1, 0.4, 0.85), (0.2, 0.65, 0.2), (0.5, 0.5, 0.5), (0.6, 0.2, 0.7)]
    for i, (column, legend) in enumerate(series):
        s = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name}: {legend}")
        s.SetAndObserveTableNodeID(table_node.GetID())
        s.SetXColumnName(x_column)
        s.SetYColumnName(column)
        s.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        s.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
        s.SetColor(*palette[i % len(palette)])
        chart.AddAndObservePlotSeriesNodeID(s.GetID())
    chart.SetTitle(name)
    chart.SetXAxisTitle(x_title or x_column)
    chart.SetYAxisTitle(y_title)
    if x_range is not None:
        chart.SetXAxisRangeAuto(False)
        chart.SetXAxisRange(*x_range)
    if y_range is not None:
        chart.SetYAxisRangeAuto(False)
        chart.SetYAxisRange(*y_range)
    return chart


def image_node_from_png(scene, path, name: str):
    """RGB vector volume node showing a PNG (e.g. the nomogram) in a slice view."""
    import matplotlib.image as mpimg

    rgba = mpimg.imread(str(path))
    if rgba.dtype != np.uint8:
        rgba = np.clip(np.rint(rgba * 255.0), 0, 255).astype(np.uint8)
    rgb = rgba[..., :3]
    arr = np.ascontiguousarray(rgb[::-1].transpose(1, 0, 2))[:, :, np.newaxis, :]  # i = column, j = row (up)
    import vtk
    from vtk.util import numpy_support

    image = vtk.vtkImageData()
    image.SetDimensions(arr.shape[0], arr.shape[1], 1)
    flat = np.ascontiguousarray(arr.transpose(2, 1, 0, 3)).reshape(-1, 3)
    vtk_array = numpy_support.numpy_to_vtk(flat, deep=1)
    image.GetPointData().SetScalars(vtk_array)
    node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", name)
    node.SetSpacing(1.0, 1.0, 1.0)
    node.SetIJKToRASDirections(-1, 0, 0, 0, 1, 0, 0, 0, 1)  # image left = patient right in a default axial view
    node.SetAndObserveImageData(image)
    node.CreateDefaultDisplayNodes()
    return node


def _read_csv_rows(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _cohort_labels(cohort_csv) -> dict[str, int]:
    rows = _read_csv_rows(cohort_csv)
    if not rows or "subject_id" not in rows[0] or "label" not in rows[0]:
        raise InputError(f"cohort CSV {cohort_csv}: needs the columns subject_id and label")
    return {r["subject_id"]: int(float(r["label"])) for r in rows}


def roc_table_and_chart(scene, name: str, predictions: Mapping[str, Sequence[float]], labels: Sequence[int],
                        subject_ids: Sequence[str] | None = None):
    """ROC points table (one fpr/tpr column pair per model) and a plot chart with the chance line."""
    from NeonatalBrainLib.stats import roc

    y = np.asarray(labels, int)
    rows: list[dict] = []
    curves = {}
    for model, score in predictions.items():
        fpr, tpr, _thr = roc.roc_curve_points(y, np.asarray(score, float))
        curves[model] = (fpr, tpr)
    n = max(len(c[0]) for c in curves.values())
    for i in range(n):
        row: dict = {}
        for model, (fpr, tpr) in curves.items():
            j = min(i, len(fpr) - 1)
            row[f"fpr_{model}"] = float(fpr[j])
            row[f"tpr_{model}"] = float(tpr[j])
        row["chance"] = float(i / max(n - 1, 1))
        rows.append(row)
    table = mrml.table_node_from_rows(scene, rows, f"{name} ROC points")
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"{name} ROC")
    slicer = _slicer()
    for i, model in enumerate(list(curves) + ["chance"]):
        s = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name} ROC: {model}")
        s.SetAndObserveTableNodeID(table.GetID())
        s.SetXColumnName("chance" if model == "chance" else f"fpr_{model}")
        s.SetYColumnName("chance" if model == "chance" else f"tpr_{model}")
        s.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        s.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
        if model == "chance":
            s.SetLineStyle(slicer.vtkMRMLPlotSeriesNode.LineStyleDash)
            s.SetColor(0.5, 0.5, 0.5)
        else:
            s.SetColor(*[(0.85, 0.2, 0.1), (0.1, 0.4, 0.85), (0.2, 0.65, 0.2)][i % 3])
        chart.AddAndObservePlotSeriesNodeID(s.GetID())
    chart.SetTitle(f"{name}: ROC")
    chart.SetXAxisTitle("1 - specificity (false-positive rate)")
    chart.SetYAxisTitle("sensitivity (true-positive rate)")
    return table, chart



# ----------------------------------------------------------------------------- cohort tasks
def _call_with(func, positional: Sequence[Any], options: Mapping[str, Any]):
    """Call ``func(*positional, **options)`` passing only the options it accepts (first matching alias).

    ``options`` keys may be ``"name|alias|..."``; a None value is left out.
    """
    import inspect

    params = inspect.signature(func).parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {}
    for keys, value in options.items():
        if value is None:
            continue
        for key in keys.split("|"):
            if key in params:
                kwargs[key] = value
                break
        else:
            if takes_kwargs:
                kwargs[keys.split("|")[0]] = value
    return func(*positional, **kwargs)


def _stats_command(argv: Sequence[str]) -> None:
    """Run a ``neonatal-brain`` statistics command (compare, nomogram) in-process; errors are raised."""
    import argparse

    from NeonatalBrainLib.stats import cli as stats_cli

    parser = argparse.ArgumentParser(prog="neonatal-brain")
    sub = parser.add_subparsers(dest="command", required=True)
    stats_cli.register(sub)
    args = parser.parse_args([str(a) for a in argv])
    args.func(args)


def _model_id_of(model) -> str:
    p = Path(str(model))
    return p.name if p.is_dir() else str(model)


@_removes_new_run_folders_on_failure
def train_cohort(scene, cohort_csv, out_parent, *, architecture: str = "resnet18", epochs: int = 8, seed: int = 0,
                 atlas=None, image_size: int | None = None, add_to_catalogue: bool = True,
                 progress=None) -> CohortResult:
    """Train a model on a cohort CSV into a new folder under ``out_parent``; optionally add it to the catalogue.

    ``summary`` holds the model card's architecture, validation metrics and threshold
    and ``model_id`` (the catalogue id when added, else the folder).
    """
    from NeonatalClassifyLib import training

    prog = as_progress(progress)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(cohort_csv).parent.name or Path(cohort_csv).stem)
    model_id = f"{architecture}-{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = _new_run_folder(out_parent, model_id)
    model_id = out.name
    _call_with(training.train, [Path(cohort_csv)],
               {"out_dir|out|model_dir": out, "arch|architecture": architecture, "epochs": int(epochs),
                "seed": int(seed), "atlas": atlas, "image_size": image_size, "model_id": model_id,
                "progress": prog.sub(0.0, 0.95)})
    if add_to_catalogue:
        model_id = import_model(out, model_id)
    card = _read_card(out)
    summary = {"model_id": model_id, "model_dir": str(out), "architecture": card.get("architecture"),
               "threshold": card.get("threshold"),
               "validation_metrics": card.get("validation_metrics") or card.get("validation")}
    files = {p.name: p for p in sorted(out.iterdir()) if p.is_file()}
    tables, figures = {}, {}
    if (out / "training_log.csv").is_file():
        log = [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in _read_csv_rows(out / "training_log.csv")]
        if log:
            tables["training_log"] = mrml.table_node_from_rows(scene, log, f"{model_id} training log")
            series = [(c, c) for c in ("train_loss", "val_loss", "val_auc") if c in log[0]]
            figures["Training curve"] = plot_chart(scene, f"{model_id}: training", tables["training_log"], "epoch",
                                                   series, x_title="epoch", y_title="loss / AUC")
    prog.update(1.0, "model ready")
    return CohortResult(summary=summary, files=files, tables=tables, figures=figures, out_dir=out)


def _read_card(folder: Path) -> dict:
    for name in ("model_card.json", "card.json"):
        if (folder / name).is_file():
            return json.loads((folder / name).read_text())
    return {}


def _evaluate_into(cohort_csv, model, out: Path, progress, rois: str = "atlas") -> tuple[dict, list[dict]]:
    from NeonatalClassifyLib import evaluation

    _call_with(evaluation.evaluate, [Path(cohort_csv)],
               {"model|model_dir": resolve_model(model), "out_dir|out": out, "progress": progress,
                "rois": None if rois == "atlas" else rois})
    metrics = json.loads((out / "metrics.json").read_text())
    predictions = _read_csv_rows(out / "predictions.csv")
    return metrics, predictions


def _metrics_rows(metrics: Mapping[str, Any]) -> list[dict]:
    return [{"metric": k, "value": float(v)} for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)]


@_removes_new_run_folders_on_failure
def evaluate_cohort(scene, cohort_csv, model, out_parent, progress=None, *, rois: str = "atlas") -> CohortResult:
    """Evaluate a model on a cohort: predictions/metrics tables, ROC plot chart and the ROC image.

    Files (from the engine, in a new folder under ``out_parent``): predictions.csv,
    metrics.json, roc.png.  ``rois``: "atlas" (segment each T1, as Classify does) or
    "cohort" (the cohort's own ``<subject_id>/labels.nii.gz``).
    """
    prog = as_progress(progress)
    model_id = _model_id_of(model)
    out = _new_run_folder(out_parent, f"evaluate-{model_id}")
    metrics, predictions = _evaluate_into(cohort_csv, model, out, prog.sub(0.0, 0.9), rois)
    labels = _cohort_labels(cohort_csv)
    ids = [r["subject_id"] for r in predictions]
    y = [labels[i] for i in ids]
    scores = [float(r["probability"]) for r in predictions]
    name = f"{Path(cohort_csv).stem} {model_id}"
    tables = {
        "predictions": mrml.table_node_from_rows(
            scene, [{"subject_id": i, "probability": p, "label": lab} for i, p, lab in zip(ids, scores, y)],
            f"{name} predictions"),
        "metrics": mrml.table_node_from_rows(scene, _metrics_rows(metrics), f"{name} metrics"),
    }
    roc_table, roc_chart = roc_table_and_chart(scene, name, {model_id: scores}, y)
    tables["roc"] = roc_table
    figures = {"ROC curve": roc_chart}
    if (out / "roc.png").is_file():
        figures["ROC (image)"] = image_node_from_png(scene, out / "roc.png", f"{name} ROC image")
    files = {p.name: p for p in sorted(out.iterdir()) if p.is_file()}
    prog.update(1.0, "evaluation done")
    return CohortResult(summary={"model_id": model_id, **metrics}, files=files, tables=tables,
                        figures=figures, out_dir=out)


@_removes_new_run_folders_on_failure
def compare_models(scene, cohort_csv, model_a, model_b, out_parent, progress=None, *,
                   rois: str = "atlas") -> CohortResult:
    """Evaluate two models on the same cohort and compare their AUCs with the paired DeLong test.

    Writes ``a/`` and ``b/`` (each model's evaluation) and ``compare/`` (compare.json,
    roc_compare.png) in a new folder under ``out_parent``.
    """
    prog = as_progress(progress)
    id_a, id_b = _model_id_of(model_a), _model_id_of(model_b)
    if id_a == id_b:
        raise InputError(f"compare: choose two different models (both are '{id_a}')")
    out = _new_run_folder(out_parent, f"compare-{id_a}-vs-{id_b}")
    out.mkdir(parents=True)
    _metrics_a, pred_a = _evaluate_into(cohort_csv, model_a, out / "a", prog.sub(0.0, 0.45), rois)
    _metrics_b, pred_b = _evaluate_into(cohort_csv, model_b, out / "b", prog.sub(0.45, 0.9), rois)
    _stats_command(["compare", out / "a" / "predictions.csv", out / "b" / "predictions.csv",
                    "--cohort", cohort_csv, "--out", out / "compare", "--names", f"{id_a},{id_b}"])
    result = json.loads((out / "compare" / "compare.json").read_text())
    labels = _cohort_labels(cohort_csv)
    score_b = {r["subject_id"]: float(r["probability"]) for r in pred_b}
    ids = [r["subject_id"] for r in pred_a]
    y = [labels[i] for i in ids]
    name = f"{Path(cohort_csv).stem} {id_a} vs {id_b}"
    roc_table, roc_chart = roc_table_and_chart(
        scene, name, {id_a: [float(r["probability"]) for r in pred_a], id_b: [score_b[i] for i in ids]}, y)
    figures = {"ROC curves": roc_chart}
    if (out / "compare" / "roc_compare.png").is_file():
        figures["ROC (image)"] = image_node_from_png(scene, out / "compare" / "roc_compare.png", f"{name} ROC image")
    summary_rows = [{"metric": k, "value": float(v)} for k, v in result.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)]
    tables = {"comparison": mrml.table_node_from_rows(scene, summary_rows, f"{name} DeLong"), "roc": roc_table}
    files = {str(p.relative_to(out)): p for p in sorted(out.rglob("*")) if p.is_file()}
    prog.update(1.0, "comparison done")
    return CohortResult(summary=result, files=files, tables=tables, figures=figures, out_dir=out)


@_removes_new_run_folders_on_failure
def fit_nomogram(scene, cohort_csv, out_parent, *, clinical: Sequence[str] = ("birthweight_g",),
                 predictions_csv=None, model=None, validation_csv=None, progress=None,
                 rois: str = "atlas") -> CohortResult:
    """Nomogram ``label ~ dl_score + clinical`` with calibration and decision curves.

    ``predictions_csv``: the deep-learning scores of the cohort (subject_id, probability);
    when None, ``model`` is evaluated on the cohort first.  ``validation_csv``: a
    validation cohort, scored with ``model``, to which the nomogram is applied.
    Files (new folder under ``out_parent``): nomogram.json, nomogram.png,
    calibration.png, decision_curve.png/.csv, nomogram_predictions.csv (+ validation_*).
    Scene: coefficient/odds-ratio, calibration and decision-curve tables; calibration
    and decision-curve plot charts; the nomogram (and plots) as image nodes.
    """
    prog = as_progress(progress)
    clinical = [c for c in clinical if c]
    out = _new_run_folder(out_parent, "nomogram")
    out.mkdir(parents=True)
    if predictions_csv is None:
        if model is None:
            raise InputError("nomogram: give the predictions CSV or a model to score the cohort with")
        _evaluate_into(cohort_csv, model, out / "training-predictions", prog.sub(0.0, 0.45), rois)
        predictions_csv = out / "training-predictions" / "predictions.csv"
    argv = ["nomogram", predictions_csv, cohort_csv, "--clinical", ",".join(clinical), "--out", out / "nomogram"]
    if validation_csv is not None:
        if model is None:
            raise InputError("nomogram: a validation cohort needs a model to score it with")
        _evaluate_into(validation_csv, model, out / "validation-predictions", prog.sub(0.45, 0.9), rois)
        argv += ["--validation-predictions", out / "validation-predictions" / "predictions.csv",
                 "--validation-cohort", validation_csv]
    prog.update(0.9, "fitting the nomogram")
    _stats_command(argv)
    nom_dir = out / "nomogram"
    result = json.loads((nom_dir / "nomogram.json").read_text())
    name = f"{Path(cohort_csv).stem} nomogram"
    coef_rows = []
    for key, beta in result["coefficients"].items():
        row = {"term": key, "coefficient": float(beta)}
        odds = result.get("odds_ratios", {}).get(key)
        if odds:
            row.update({"odds_ratio": odds.get("odds_ratio"), "ci_low": odds.get("ci_low"),
                        "ci_high": odds.get("ci_high"), "p_value": odds.get("p_value")})
        coef_rows.append(row)
    tables = {"coefficients": mrml.table_node_from_rows(scene, coef_rows, f"{name} coefficients")}
    figures: dict[str, Any] = {}
    bins = (result.get("calibration") or {}).get("bins") or []
    if bins:
        cal_rows = [{"mean_predicted": b["mean_predicted"], "observed_rate": b["observed_rate"],
                     "ideal": b["mean_predicted"], "n": b["n"]} for b in bins]
        cal_table = mrml.table_node_from_rows(scene, cal_rows, f"{name} calibration")
        tables["calibration"] = cal_table
        figures["Calibration curve"] = plot_chart(
            scene, f"{name}: calibration", cal_table, "mean_predicted",
            [("observed_rate", "observed"), ("ideal", "ideal")], x_title="mean predicted probability",
            y_title="observed rate", x_range=(0, 1), y_range=(0, 1))
    if (nom_dir / "decision_curve.csv").is_file():
        dca_rows = _read_csv_rows(nom_dir / "decision_curve.csv")
        dca_table = mrml.table_node_from_rows(
            scene, [{k: float(v) for k, v in r.items()} for r in dca_rows], f"{name} decision curve")
        tables["decision_curve"] = dca_table
        figures["Decision curve"] = plot_chart(
            scene, f"{name}: decision curve", dca_table, "threshold",
            [("net_benefit_model", "nomogram"), ("net_benefit_all", "treat all"),
             ("net_benefit_none", "treat none")], x_title="threshold probability", y_title="net benefit")
    for png, label in (("nomogram.png", "Nomogram"), ("calibration.png", "Calibration (image)"),
                       ("decision_curve.png", "Decision curve (image)"),
                       ("validation_calibration.png", "Validation calibration (image)"),
                       ("validation_decision_curve.png", "Validation decision curve (image)")):
        if (nom_dir / png).is_file():
            figures[label] = image_node_from_png(scene, nom_dir / png, f"{name} {label}")
    files = {str(p.relative_to(out)): p for p in sorted(out.rglob("*")) if p.is_file()}
    prog.update(1.0, "nomogram done")
    summary = {k: result[k] for k in ("coefficients", "auc", "n") if k in result}
    if "validation" in result:
        summary["validation_auc"] = result["validation"].get("auc")
    return CohortResult(summary=summary, files=files, tables=tables, figures=figures, out_dir=out)

__all__ = [
    "extract_rois", "classify_volume_node", "set_heatmap_overlay", "export_results", "render_overlay_figure",
    "roi_labels_from_segmentation", "roi_segmentation_from_labels", "terminology_entry", "ClassifyOutputs",
    "list_models", "model_card", "model_summary", "import_model", "resolve_model", "select_device",
    "CohortResult", "plot_chart", "roc_table_and_chart", "image_node_from_png", "heatmap_color_node",
    "style_heatmap", "labels_checksum", "DEMO_MODEL_ID", "train_cohort", "evaluate_cohort", "compare_models",
    "fit_nomogram",
]
