"""MRML-level logic of the NeonatalVessels module: SWI volume node in, result nodes out.

Runs inside 3D Slicer (GUI or Python console) and headless on slicer-core; ``slicer``
is imported only inside the functions (through :mod:`NeonatalBrainLib.mrml`).  The
engine (:mod:`NeonatalVesselsLib.pipeline`) does all measuring; this module only
converts between MRML nodes and the engine's arrays and puts results in the scene.

Result nodes of one analysis (:class:`VesselsOutputNodes`), named after the input
node and grouped in a subject-hierarchy folder ``"<input> vessels"``:

* segmentation ``"<input> vessels"``: one segment per vessel region and side
  ("DMV left", "Thalamic vein right" ...; label value :func:`segment_value`),
  colours :data:`NeonatalBrainLib.anatomy.VESSEL_REGION_COLORS`, terminology
  "Tissue / Vein" with the side as modifier, shown as 2D outline + fill and 3D
  closed surface;
* one markups curve per vessel ``"DMV 12 (left)"`` (control points hidden), in a
  sub-folder ``"centrelines"``;
* table ``"<input> vessel metrics"`` (one row per vessel) and table
  ``"<input> vessel summary"`` (one row: the subject's summary, the keys of the
  engine's ``summary.json``); recomputation adds ``"... (v2)"``, ``"... (v3)"``
  and keeps the earlier tables;
* scalar volume ``"<input> minIP"``: the minimum-intensity-projection slab on the
  input grid;
* a hidden labelmap volume ``"<input> vessel ids"`` (the engine's vessel-id
  labelmap) that ties voxels to vessel ids for recomputation and row centring.

The nodes are tied together by node references on the segmentation
(:data:`REF_INPUT` ...), so :func:`outputs_from_segmentation` finds them again
after a scene is saved and reloaded.  Creating them is all or nothing: if the
engine or the node creation fails or is cancelled, every node made so far is
removed.
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from NeonatalBrainLib import anatomy, centerline
from NeonatalBrainLib import mrml as nbmrml
from NeonatalBrainLib.imageio import InputError, Volume, resample_to_grid
from NeonatalBrainLib.outputs import OutputExistsError
from NeonatalBrainLib.progress import Progress, as_progress

from .definitions import SUMMARY_KEY_DEFINITIONS, VESSEL_COLUMN_DEFINITIONS

# ----------------------------------------------------------------------------- names and codes
#: Reader-facing names of the vessel regions (segment and curve names).
REGION_TITLES: dict[str, str] = {
    "dmv": "DMV",
    "thalamic": "Thalamic vein",
    "anterior_caudate": "Anterior caudate vein",
    "internal_cerebral": "Internal cerebral vein",
    "other": "Other vein",
}

#: Node reference roles on the result segmentation node.
REF_INPUT = "NeonatalVessels.input"
REF_VESSEL_TABLE = "NeonatalVessels.vesselTable"
REF_SUMMARY_TABLE = "NeonatalVessels.summaryTable"
REF_MINIP = "NeonatalVessels.minip"
REF_VESSEL_IDS = "NeonatalVessels.vesselIds"
REF_CURVE = "NeonatalVessels.curve"
REF_BRAIN_MASK = "NeonatalVessels.brainMask"
REF_VENTRICLES = "NeonatalVessels.ventricles"
#: Node attributes.
ATTR_ROLE = "NeonatalVessels.Role"
ATTR_VERSION = "NeonatalVessels.Version"
ATTR_VESSEL_ID = "NeonatalVessels.VesselId"

#: Terminology (Slicer's terminology string) of every vessel segment: category Tissue, type Vein
#: (SNOMED CT 29092000, the "vein" entry of Slicer's General Anatomy list), side as type modifier.
_TERMINOLOGY = ("Segmentation category and type - 3D Slicer General Anatomy list"
                "~SCT^85756007^Tissue~SCT^29092000^Vein~{modifier}"
                "~Anatomic codes - DICOM master list~^^~^^")
_SIDE_CODES = {"left": "SCT^7771000^Left", "right": "SCT^24028007^Right", "midline": "^^"}

#: Column descriptions (with units) of the per-vessel and per-subject tables (:mod:`.definitions`).
VESSEL_COLUMN_DESCRIPTIONS: dict[str, str] = VESSEL_COLUMN_DEFINITIONS
SUMMARY_COLUMN_DESCRIPTIONS: dict[str, str] = SUMMARY_KEY_DEFINITIONS


def segment_value(region: str, side: str) -> int:
    """Label value of the segment of ``region`` and ``side`` (1 .. 15, fixed coding)."""
    if region not in anatomy.VESSEL_REGIONS:
        raise InputError(f"vessel region '{region}': expected one of {anatomy.VESSEL_REGIONS}")
    if side not in anatomy.VESSEL_SIDES:
        raise InputError(f"vessel side '{side}': expected one of {anatomy.VESSEL_SIDES}")
    return 1 + len(anatomy.VESSEL_SIDES) * anatomy.VESSEL_REGIONS.index(region) + anatomy.VESSEL_SIDES.index(side)


def region_side_of_value(value: int) -> tuple[str, str]:
    """Inverse of :func:`segment_value`."""
    n = len(anatomy.VESSEL_SIDES)
    r, s = divmod(int(value) - 1, n)
    if value < 1 or r >= len(anatomy.VESSEL_REGIONS):
        raise InputError(f"segment label value {value}: not a vessel segment value (1 .. {n * len(anatomy.VESSEL_REGIONS)})")
    return anatomy.VESSEL_REGIONS[r], anatomy.VESSEL_SIDES[s]


def segment_name(region: str, side: str) -> str:
    """'DMV left', 'Internal cerebral vein midline' ..."""
    return f"{REGION_TITLES[region]} {side}"


def curve_name(vessel_id: int, region: str, side: str) -> str:
    """'DMV 12 (left)', 'Thalamic vein 3 (right)' ..."""
    return f"{REGION_TITLES.get(region, region)} {int(vessel_id)} ({side})"


# ----------------------------------------------------------------------------- engine interface
def _engine():
    from NeonatalVesselsLib import pipeline

    return pipeline


def scales_mm(scale_min_mm: float, scale_max_mm: float, scale_count: int) -> tuple[float, ...]:
    """``scale_count`` vesselness scales (sigma, mm) spaced geometrically from min to max.

    Raises :class:`InputError` if min > max, a scale is not positive or the count is < 1.
    """
    if scale_count < 1:
        raise InputError(f"vesselness scales: count must be at least 1, got {scale_count}")
    if not 0 < scale_min_mm <= scale_max_mm:
        raise InputError(f"vesselness scales: need 0 < smallest <= largest, got {scale_min_mm} mm and {scale_max_mm} mm")
    if scale_count == 1:
        return (float(scale_min_mm),)
    return tuple(float(x) for x in np.geomspace(scale_min_mm, scale_max_mm, int(scale_count)))


def vessel_params(scale_min_mm: float | None = None, scale_max_mm: float | None = None,
                  scale_count: int | None = None, min_dmv_length_mm: float | None = None,
                  minip_slab_mm: float | None = None, threshold_high: float | None = None,
                  threshold_low: float | None = None, track_max_mm: float | None = None,
                  dmv_min_probability: float | None = None):
    """The engine's ``VesselParams`` with the module's settings (None keeps the engine default).

    The scales are :func:`scales_mm` of (min, max, count), except that settings equal to
    the engine's default set's smallest, largest and number of scales keep that default
    set as it is.  Raises :class:`InputError` for inconsistent settings (min > max, low
    threshold above the high one, a DMV probability outside [0, 1)).
    """
    params = _engine().VesselParams()
    changes: dict[str, Any] = {}
    if scale_min_mm is not None or scale_max_mm is not None or scale_count is not None:
        default = tuple(params.scales_mm)
        lo = default[0] if scale_min_mm is None else float(scale_min_mm)
        hi = default[-1] if scale_max_mm is None else float(scale_max_mm)
        count = len(default) if scale_count is None else int(scale_count)
        wanted = scales_mm(lo, hi, count)
        if not (count == len(default) and math.isclose(lo, default[0]) and math.isclose(hi, default[-1])):
            changes["scales_mm"] = wanted
    for name, value in (("minip_slab_mm", minip_slab_mm), ("threshold_high", threshold_high),
                        ("threshold_low", threshold_low), ("track_max_mm", track_max_mm),
                        ("dmv_min_probability", dmv_min_probability)):
        if value is not None:
            changes[name] = float(value)
    if min_dmv_length_mm is not None and float(min_dmv_length_mm) != params.rules.min_dmv_length_mm:
        changes["rules"] = replace(params.rules, min_dmv_length_mm=float(min_dmv_length_mm))
    high = changes.get("threshold_high", params.threshold_high)
    low = changes.get("threshold_low", params.threshold_low)
    if low > high:
        raise InputError(f"vesselness thresholds: low ({low}) is above high ({high})")
    return _engine().checked_params(replace(params, **changes) if changes else params)


def params_to_json(params) -> str:
    """``VesselParams`` as JSON (stored on the result segmentation for recomputation)."""
    return json.dumps(params.as_dict() if hasattr(params, "as_dict") else {})


def params_from_json(text: str | None):
    """Inverse of :func:`params_to_json`; engine defaults for missing fields, unknown ones (stored by
    another version) ignored (``VesselParams.from_dict(strict=False)``)."""
    engine = _engine()
    if not text:
        return engine.VesselParams()
    return engine.VesselParams.from_dict(json.loads(text), strict=False)


@dataclass
class _Result:
    """What this module needs from an engine result (``pipeline.VesselAnalysis``)."""

    vessels: list[dict]                 # rows: vessel_id, region, side, length_mm, width_mm, ...
    centerlines: dict[int, np.ndarray]  # vessel_id -> (N, 3) RAS mm
    labels: Volume                      # vessel-id labelmap on the input grid
    summary: dict                       # summary.json content
    minip: Volume | None = None
    brain_mask: Volume | None = None
    ventricles: Volume | None = None


def _result_from_engine(analysis) -> _Result:
    vessels = analysis.vessels
    rows = vessels.to_dict("records") if hasattr(vessels, "to_dict") else [dict(r) for r in vessels]
    rows = [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in r.items()} for r in rows]
    centerlines = {int(k): np.asarray(v, dtype=float) for k, v in analysis.centerlines.items()}
    return _Result(vessels=rows, centerlines=centerlines, labels=analysis.vessel_labels,
                   summary=dict(analysis.summary), minip=analysis.minip,
                   brain_mask=getattr(analysis, "brain_mask", None), ventricles=getattr(analysis, "ventricles", None))


def _scalar_summary(summary: Mapping) -> dict:
    """The scalar entries of a summary as one table row; None ("could not be measured") -> NaN."""
    out = {}
    for k, v in summary.items():
        if v is None:
            out[str(k)] = float("nan")
        elif isinstance(v, (bool, int, float, str, np.integer, np.floating)):
            out[str(k)] = v.item() if isinstance(v, np.generic) else v
        elif isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
            out[str(k)] = "; ".join(v)          # e.g. warnings: one text cell
    return out


# ----------------------------------------------------------------------------- outputs
@dataclass
class VesselsOutputNodes:
    """The nodes of one analysis (and its recomputations) in the scene."""

    input_node: Any
    segmentation: Any
    vessel_table: Any
    summary_table: Any
    minip: Any
    vessel_ids: Any
    brain_mask: Any = None
    ventricles: Any = None
    curves: dict[int, Any] = field(default_factory=dict)
    folder_item: int = 0
    version: int = 1
    #: Tables of earlier versions (oldest first), kept in the scene.
    previous_tables: list[tuple[Any, Any]] = field(default_factory=list)
    #: The engine's ``VesselAnalysis`` of the latest run (in memory only; None after a scene reload).
    analysis: Any = None

    @property
    def name(self) -> str:
        return self.input_node.GetName()

    def nodes(self) -> list:
        """All result nodes (not the input)."""
        out = [self.segmentation, self.vessel_table, self.summary_table, self.minip, self.vessel_ids,
               self.brain_mask, self.ventricles]
        out += list(self.curves.values())
        for pair in self.previous_tables:
            out += list(pair)
        return [n for n in out if n is not None]


class _Rollback:
    """Removes the nodes it created (and subject-hierarchy folders) unless committed."""

    def __init__(self, scene):
        self.scene = scene
        self.nodes: list = []
        self.folders: list[int] = []
        self.committed = False

    def add(self, node):
        self.nodes.append(node)
        return node

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.committed = True
            return False
        sh = _sh(self.scene)
        self.scene.StartState(self.scene.BatchProcessState)
        try:
            self._remove_nodes(sh)
        finally:
            self.scene.EndState(self.scene.BatchProcessState)
        if self.folders and sh is not None:
            for item in reversed(self.folders):
                if sh.GetItemName(item):  # still there
                    sh.RemoveItem(item, True, True)
        return False

    def _remove_nodes(self, sh):
        for node in reversed(self.nodes):
            _remove_node(self.scene, node, sh)


def _remove_node(scene, node, sh=None) -> None:
    """Remove ``node``, its display and storage nodes and its subject-hierarchy item."""
    if node is None or not scene.IsNodePresent(node):
        return
    sh = sh if sh is not None else _sh(scene)
    item = sh.GetItemByDataNode(node) if sh is not None else 0
    if item:
        sh.RemoveItem(item, False, False)
    displays = [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())] \
        if hasattr(node, "GetNumberOfDisplayNodes") else []
    storage = node.GetStorageNode() if hasattr(node, "GetStorageNode") else None
    for other in displays + [storage]:
        if other is not None and scene.IsNodePresent(other):
            scene.RemoveNode(other)
    scene.RemoveNode(node)


def _sh(scene):
    import slicer

    return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)


def _new_folder(scene, name: str, parent: int | None, rollback: _Rollback) -> int:
    """A new subject-hierarchy folder (an existing one of that name gets a numbered twin)."""
    sh = _sh(scene)
    parent_id = sh.GetSceneItemID() if parent is None else int(parent)
    unique, n = name, 2
    while sh.GetItemChildWithName(parent_id, unique):
        unique, n = f"{name} ({n})", n + 1
    item = int(sh.CreateFolderItem(parent_id, unique))
    rollback.folders.append(item)
    return item


def _unique_node_name(scene, name: str) -> str:
    if not scene.GetFirstNodeByName(name):
        return name
    n = 2
    while scene.GetFirstNodeByName(f"{name} ({n})"):
        n += 1
    return f"{name} ({n})"


def _input_volume(node, what: str) -> Volume:
    if node is None:
        raise InputError(f"{what}: no volume node given")
    if not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise InputError(f"{what}: node '{node.GetName()}' ({node.GetClassName()}) is not a scalar volume")
    return nbmrml.volume_from_node(node)


def mask_from_node(node, reference: Volume, what: str) -> Volume | None:
    """uint8 0/1 mask on ``reference``'s grid from a labelmap volume or segmentation node (None: None).

    Both are taken through world (RAS) coordinates, as Slicer shows them: a segmentation is
    exported onto the reference grid (all segments = foreground), a labelmap on another grid
    is resampled (nearest neighbour).  An empty mask raises :class:`InputError`.
    """
    if node is None:
        return None
    if node.IsA("vtkMRMLSegmentationNode"):
        labels, _ = nbmrml.labels_from_segmentation_node(node, reference)
        mask = (np.asarray(labels.array) > 0).astype(np.uint8)
    elif node.IsA("vtkMRMLScalarVolumeNode"):
        volume = nbmrml.volume_from_node(node)
        volume = volume.with_array((np.asarray(volume.array) > 0).astype(np.uint8))
        if not volume.same_grid(reference):
            volume = resample_to_grid(volume, reference, interpolation="nearest")
        mask = np.asarray(volume.array).astype(np.uint8)
    else:
        raise InputError(f"{what} '{node.GetName()}': expected a labelmap volume or a segmentation node")
    if not mask.any():
        raise InputError(f"{what} '{node.GetName()}': empty (no voxel inside the SWI volume)")
    return reference.with_array(mask)
    raise InputError(f"{what} '{node.GetName()}': expected a labelmap volume or a segmentation node")


def _direct(fn):
    return fn()


def analyze_volume_node(scene, swi_node, brain_mask_node=None, ventricles_node=None, params=None,
                        progress=None, runner=None) -> VesselsOutputNodes:
    """Run the vessel engine on ``swi_node`` and put the results in ``scene``.

    ``brain_mask_node`` / ``ventricles_node``: optional labelmap volume or segmentation
    nodes (taken through RAS onto the SWI grid, :func:`mask_from_node`).  ``params``: the
    engine's ``VesselParams`` (see :func:`vessel_params`; None = engine defaults).
    ``progress``: :class:`NeonatalBrainLib.progress.Progress` or ``callback(fraction, stage)``;
    cancelling raises :class:`OperationCancelled` and leaves ``scene`` without any new node.
    ``runner``: ``runner(fn) -> fn()``, called with the engine step only (pure numpy, no
    MRML access), e.g. to run it in a worker thread while the GUI stays responsive; the
    scene is read before and written after it, in the calling thread.
    Returns the :class:`VesselsOutputNodes`.
    """
    progress = as_progress(progress)
    swi = _input_volume(swi_node, "SWI volume")
    progress.update(0.0, "reading inputs")
    brain_mask = mask_from_node(brain_mask_node, swi, "brain mask")
    ventricles = mask_from_node(ventricles_node, swi, "ventricle mask")
    params = params if params is not None else _engine().VesselParams()
    engine_progress = progress.sub(0.0, 0.85)
    analysis = (runner or _direct)(lambda: _engine().run_vessel_analysis(
        swi, brain_mask=brain_mask, ventricles=ventricles, params=params, progress=engine_progress))
    return outputs_from_analysis(scene, swi_node, analysis, params=params, progress=progress.sub(0.85, 1.0))


def outputs_from_analysis(scene, swi_node, analysis, params=None, progress=None) -> VesselsOutputNodes:
    """Put an engine result (``pipeline.VesselAnalysis`` of ``swi_node``'s volume) into ``scene``.

    All or nothing: on any error or cancellation the nodes made so far are removed.
    """
    progress = as_progress(progress)
    result = _result_from_engine(analysis)
    swi = _input_volume(swi_node, "SWI volume")
    if not result.labels.same_grid(swi):
        raise InputError(f"vessel labelmap: not on the grid of '{swi_node.GetName()}'")
    name = swi_node.GetName()
    progress.update(0.0, "creating result nodes")
    with _Rollback(scene) as rb:
        folder = _new_folder(scene, f"{name} vessels", None, rb)

        def hidden_labelmap(volume, title, role):
            node = rb.add(nbmrml.volume_node_from_volume(scene, volume, _unique_node_name(scene, f"{name} {title}"),
                                                         labelmap=True))
            node.SetHideFromEditors(True)
            node.SetAttribute(ATTR_ROLE, role)
            return node

        ids_node = hidden_labelmap(result.labels, "vessel ids", "vesselIds")
        brain_node = hidden_labelmap(result.brain_mask, "vessel brain mask", "brainMask") \
            if result.brain_mask is not None else None
        vent_node = hidden_labelmap(result.ventricles, "vessel ventricles", "ventricles") \
            if result.ventricles is not None else None
        seg_node = rb.add(_segmentation_from_result(scene, swi_node, result, _unique_node_name(scene, f"{name} vessels")))
        seg_node.SetAttribute("NeonatalVessels.Parameters", params_to_json(params or _engine().VesselParams()))
        progress.update(0.2, "creating result nodes")
        minip_node = None
        if result.minip is not None:
            minip_node = rb.add(nbmrml.volume_node_from_volume(
                scene, result.minip, _unique_node_name(scene, f"{name} minIP"), reference_node=swi_node))
            minip_node.SetAttribute(ATTR_ROLE, "minip")
        vessel_table, summary_table = _tables_from_result(scene, name, result, version=1, rollback=rb)
        outputs = VesselsOutputNodes(input_node=swi_node, segmentation=seg_node, vessel_table=vessel_table,
                                     summary_table=summary_table, minip=minip_node, vessel_ids=ids_node,
                                     brain_mask=brain_node, ventricles=vent_node, folder_item=folder, version=1,
                                     analysis=analysis)
        curves_folder = _new_folder(scene, "centrelines", folder, rb)
        _sync_curves(scene, outputs, result, curves_folder, rb, progress.sub(0.3, 0.95))
        for node in (seg_node, vessel_table, summary_table, minip_node, ids_node, brain_node, vent_node):
            if node is not None:
                nbmrml.place_in_folder(scene, node, folder)
        _link(outputs)
        progress.update(1.0, "done")
    return outputs


def _segmentation_from_result(scene, swi_node, result: _Result, name: str):
    region_side = {int(v["vessel_id"]): (str(v["region"]), str(v["side"])) for v in result.vessels}
    ids = np.asarray(result.labels.array)
    lut = np.zeros(int(ids.max()) + 1 if ids.size else 1, dtype=np.uint8)
    for vid, (region, side) in region_side.items():
        if vid < len(lut):
            lut[vid] = segment_value(region, side)
    values = lut[ids.astype(np.int64)]
    present = sorted(set(segment_value(r, s) for r, s in region_side.values()))
    names = {v: segment_name(*region_side_of_value(v)) for v in present}
    colors = {v: anatomy.VESSEL_REGION_COLORS[region_side_of_value(v)[0]] for v in present}
    seg = nbmrml.segmentation_node_from_labels(scene, result.labels.with_array(values), names, colors=colors,
                                               name=name, reference_volume_node=swi_node)
    seg.SetAttribute(ATTR_ROLE, "segmentation")
    segmentation = seg.GetSegmentation()
    for v in present:
        region, side = region_side_of_value(v)
        segment = segmentation.GetSegment(names[v])
        segment.SetTerminology(_TERMINOLOGY.format(modifier=_SIDE_CODES[side]))
        segment.SetTag("NeonatalVessels.Region", region)
        segment.SetTag("NeonatalVessels.Side", side)
    seg.CreateClosedSurfaceRepresentation()
    display = seg.GetDisplayNode()
    display.SetVisibility2DFill(True)
    display.SetVisibility2DOutline(True)
    display.SetOpacity2DFill(0.5)
    display.SetVisibility3D(True)
    for v in present:  # "other" veins (cortical veins, sinuses, fragments): outline only, no 3D surface
        if region_side_of_value(v)[0] not in SHOWN_CURVE_REGIONS:
            display.SetSegmentVisibility2DFill(names[v], False)
            display.SetSegmentVisibility3D(names[v], False)
    return seg


def _tables_from_result(scene, name: str, result: _Result, version: int, rollback: _Rollback):
    suffix = "" if version == 1 else f" (v{version})"
    columns = list(VESSEL_COLUMN_DESCRIPTIONS)
    rows = []
    for v in sorted(result.vessels, key=lambda r: int(r["vessel_id"])):
        row = {c: v.get(c) for c in columns}
        row.update({k: val for k, val in v.items() if k not in row})
        row["vessel_id"] = int(row["vessel_id"])
        rows.append(row)
    if not rows:
        rows_for_table = [{c: None for c in columns}]
    else:
        rows_for_table = rows
    vessel_table = rollback.add(nbmrml.table_node_from_rows(
        scene, rows_for_table, _unique_node_name(scene, f"{name} vessel metrics{suffix}")))
    if not rows:
        vessel_table.GetTable().SetNumberOfRows(0)
    summary_table = rollback.add(nbmrml.table_node_from_rows(
        scene, [_scalar_summary(result.summary)], _unique_node_name(scene, f"{name} vessel summary{suffix}")))
    for node, descriptions in ((vessel_table, VESSEL_COLUMN_DESCRIPTIONS), (summary_table, SUMMARY_COLUMN_DESCRIPTIONS)):
        for column, text in descriptions.items():
            if node.GetTable().GetColumnByName(column) is not None:
                node.SetColumnDescription(column, text)
        node.SetAttribute(ATTR_VERSION, str(version))
    vessel_table.SetAttribute(ATTR_ROLE, "vesselTable")
    summary_table.SetAttribute(ATTR_ROLE, "summaryTable")
    vessel_table.SetLocked(True)
    summary_table.SetLocked(True)
    return vessel_table, summary_table


#: Regions whose centreline curves are shown when created; the others ("other": cortical veins,
#: sinuses, small fragments; often hundreds) are created hidden (show them in the Data module).
SHOWN_CURVE_REGIONS = ("dmv", "thalamic", "anterior_caudate", "internal_cerebral")


class _BatchState:
    """The scene's batch-processing state around many node additions/removals.

    Without it each new markups node costs time proportional to the number of nodes
    already in the scene (observers, unique names): minutes for thousands of curves.
    """

    def __init__(self, scene):
        self.scene = scene

    def __enter__(self):
        self.scene.StartState(self.scene.BatchProcessState)
        return self

    def __exit__(self, *exc):
        self.scene.EndState(self.scene.BatchProcessState)
        return False


def _sync_curves(scene, outputs: VesselsOutputNodes, result: _Result, curves_folder: int,
                 rollback: _Rollback | None, progress: Progress | None) -> None:
    """Make ``outputs.curves`` hold one curve per vessel of ``result`` (create, update, remove).

    Every vessel whose centreline has at least two points gets a curve (as in the engine's
    ``centerlines.mrk.json``; single-voxel fragments have none), named
    :func:`curve_name`, coloured by region, control points hidden; curves of regions
    outside :data:`SHOWN_CURVE_REGIONS` are hidden.
    """
    import slicer

    by_id = {int(v["vessel_id"]): v for v in result.vessels}
    todo = [vid for vid in sorted(by_id) if vid in result.centerlines and len(result.centerlines[vid]) >= 2]
    with _BatchState(scene):
        for vid in [vid for vid in outputs.curves if vid not in todo]:
            _remove_node(scene, outputs.curves.pop(vid))
        for n, vid in enumerate(todo):
            if progress is not None and n % 25 == 0:
                progress.update(n / max(1, len(todo)), f"creating centreline curves ({n}/{len(todo)})")
            region, side = str(by_id[vid]["region"]), str(by_id[vid]["side"])
            name = curve_name(vid, region, side)
            node = outputs.curves.get(vid)
            created = node is None
            if created:  # AddNode: no scene-wide unique-name search per node
                node = slicer.vtkMRMLMarkupsCurveNode()
                node.SetName(name)
                scene.AddNode(node)
                if rollback is not None:
                    rollback.add(node)
                display = scene.AddNode(slicer.vtkMRMLMarkupsDisplayNode())
                node.SetAndObserveDisplayNodeID(display.GetID())
            nbmrml.curve_node_from_points(scene, result.centerlines[vid], name, node=node,
                                          color=anatomy.VESSEL_REGION_COLORS.get(region, (0.6, 0.6, 0.6)))
            node.SetName(name)
            node.SetAttribute(ATTR_VESSEL_ID, str(vid))
            node.SetAttribute(ATTR_ROLE, "centerline")
            display = node.GetDisplayNode()
            if display is not None:
                display.SetVisibility(region in SHOWN_CURVE_REGIONS)
            if created:
                outputs.curves[vid] = node
                nbmrml.place_in_folder(scene, node, curves_folder)


def _link(outputs: VesselsOutputNodes) -> None:
    """Record the result nodes as node references on the segmentation node."""
    seg = outputs.segmentation
    seg.SetNodeReferenceID(REF_INPUT, outputs.input_node.GetID())
    seg.SetNodeReferenceID(REF_VESSEL_TABLE, outputs.vessel_table.GetID())
    seg.SetNodeReferenceID(REF_SUMMARY_TABLE, outputs.summary_table.GetID())
    seg.SetNodeReferenceID(REF_MINIP, outputs.minip.GetID() if outputs.minip is not None else None)
    seg.SetNodeReferenceID(REF_VESSEL_IDS, outputs.vessel_ids.GetID())
    seg.SetNodeReferenceID(REF_BRAIN_MASK, outputs.brain_mask.GetID() if outputs.brain_mask is not None else None)
    seg.SetNodeReferenceID(REF_VENTRICLES, outputs.ventricles.GetID() if outputs.ventricles is not None else None)
    seg.RemoveNodeReferenceIDs(REF_CURVE)
    for vid in sorted(outputs.curves):
        seg.AddNodeReferenceID(REF_CURVE, outputs.curves[vid].GetID())
    seg.SetAttribute(ATTR_VERSION, str(outputs.version))
    seg.SetAttribute("NeonatalVessels.PreviousTables", json.dumps(
        [[v.GetID(), s.GetID()] for v, s in outputs.previous_tables]))


def outputs_from_segmentation(scene, segmentation_node) -> VesselsOutputNodes:
    """The :class:`VesselsOutputNodes` a result segmentation belongs to (from its node references)."""
    seg = segmentation_node
    if seg is None or not seg.IsA("vtkMRMLSegmentationNode") or seg.GetNodeReference(REF_VESSEL_IDS) is None:
        raise InputError(f"segmentation '{seg.GetName() if seg is not None else None}': not a NeonatalVessels "
                         "result (run Apply first, or pick the result segmentation)")
    curves = {}
    for i in range(seg.GetNumberOfNodeReferences(REF_CURVE)):
        node = seg.GetNthNodeReference(REF_CURVE, i)
        if node is not None:
            curves[int(node.GetAttribute(ATTR_VESSEL_ID))] = node
    previous = []
    for vid, sid in json.loads(seg.GetAttribute("NeonatalVessels.PreviousTables") or "[]"):
        v, s = scene.GetNodeByID(vid), scene.GetNodeByID(sid)
        if v is not None and s is not None:
            previous.append((v, s))
    sh = _sh(scene)
    seg_item = sh.GetItemByDataNode(seg)
    return VesselsOutputNodes(
        input_node=seg.GetNodeReference(REF_INPUT), segmentation=seg,
        vessel_table=seg.GetNodeReference(REF_VESSEL_TABLE), summary_table=seg.GetNodeReference(REF_SUMMARY_TABLE),
        minip=seg.GetNodeReference(REF_MINIP), vessel_ids=seg.GetNodeReference(REF_VESSEL_IDS),
        brain_mask=seg.GetNodeReference(REF_BRAIN_MASK), ventricles=seg.GetNodeReference(REF_VENTRICLES), curves=curves,
        folder_item=int(sh.GetItemParent(seg_item)) if seg_item else 0,
        version=int(seg.GetAttribute(ATTR_VERSION) or 1), previous_tables=previous)


# ----------------------------------------------------------------------------- recomputation
def edited_vessel_labels(outputs: VesselsOutputNodes, edited_segmentation_node=None) -> tuple[Volume, Volume]:
    """(vessel-id labelmap restricted to the edited segmentation, edited segment-value labelmap).

    Voxels the user erased lose their vessel id; voxels the user painted that had no
    vessel get new ids, one per connected component (26-connectivity), numbered after
    the largest existing id.
    """
    seg = edited_segmentation_node or outputs.segmentation
    ids = nbmrml.volume_from_node(outputs.vessel_ids)
    seg_values, _ = nbmrml.labels_from_segmentation_node(seg, ids)
    return ids.with_array(_engine().edited_vessel_ids(ids.array, seg_values.array)), seg_values


def recompute_from_segmentation(scene, outputs: VesselsOutputNodes, edited_segmentation_node=None, params=None,
                                progress=None, runner=None) -> VesselsOutputNodes:
    """Measure the edited segmentation again (no detection), keep the edits and the earlier tables.

    The edited segmentation (all segments) is measured by the engine's
    ``measure_vessel_mask`` with the brain mask, ventricles and parameters of the
    original run (``params`` overrides them): split into vessels, centrelines, widths.
    A vessel whose voxels the user left as they were keeps its centreline (its curve), region
    and side (its row of the vessel table) (``PreviousRun``), so it is measured as before;
    edited vessels keep the rest of their centreline and are classified anew; painted
    vessels are traced and classified.
    A vessel whose voxels lie mostly in a segment of another region or side than the
    engine's classification takes the segment's region and side (moving a vein to
    another segment in the Segment Editor re-labels it).  New tables are added as
    ``"... (v<N>)"``; the earlier ones stay in the scene (``outputs.previous_tables``).
    The curves are replaced by the new centrelines (vessel ids are renumbered by the
    engine); the segmentation is not modified.  Cancelling leaves the scene as it was.
    ``runner`` as in :func:`analyze_volume_node`.  Returns the updated ``outputs``.
    """
    progress = as_progress(progress)
    progress.update(0.0, "reading the edited segmentation")
    swi = _input_volume(outputs.input_node, "SWI volume")
    labels, seg_values = edited_vessel_labels(outputs, edited_segmentation_node)
    if params is None:
        params = params_from_json(outputs.segmentation.GetAttribute("NeonatalVessels.Parameters"))
    masks = {key: nbmrml.volume_from_node(node) for key, node in
             (("brain_mask", outputs.brain_mask), ("ventricles", outputs.ventricles)) if node is not None}
    previous = _previous_run(outputs)
    engine_progress = progress.sub(0.05, 0.85)
    analysis = (runner or _direct)(lambda: _engine().measure_vessel_mask(
        swi, labels, params=params, progress=engine_progress, previous=previous, **masks))
    outputs.analysis = analysis
    result = _result_from_engine(analysis)
    result = _apply_segment_regions(result, seg_values)
    version = outputs.version + 1
    with _Rollback(scene) as rb:
        vessel_table, summary_table = _tables_from_result(scene, outputs.name, result, version, rb)
        for node in (vessel_table, summary_table):
            nbmrml.place_in_folder(scene, node, outputs.folder_item)
        progress.update(0.9, "updating centreline curves")
    # No cancellation checkpoint after this point: the scene update below always completes.
    outputs.previous_tables.append((outputs.vessel_table, outputs.summary_table))
    outputs.vessel_table, outputs.summary_table, outputs.version = vessel_table, summary_table, version
    nbmrml.volume_node_from_volume(scene, result.labels, outputs.vessel_ids.GetName(), labelmap=True,
                                   node=outputs.vessel_ids)
    curves_folder = _curves_folder(scene, outputs)
    _sync_curves(scene, outputs, result, curves_folder, None, None)
    _link(outputs)
    return outputs


def _previous_run(outputs: VesselsOutputNodes):
    """The engine's :class:`PreviousRun` of the result in the scene: its vessel-id labelmap, its
    centreline curves and the region and side of each vessel in its vessel table (the user's
    re-labelling included).  Read from the nodes, so it also serves a scene loaded from disk.
    None when the labelmap or the table is missing."""
    if outputs.vessel_ids is None or outputs.vessel_table is None:
        return None
    ids = nbmrml.volume_from_node(outputs.vessel_ids)
    centrelines = {vid: nbmrml.points_from_curve_node(node) for vid, node in outputs.curves.items()}
    return _engine().PreviousRun.from_rows(ids.array, centrelines, nbmrml.rows_from_table_node(outputs.vessel_table))


def _apply_segment_regions(result: _Result, seg_values: Volume) -> _Result:
    """Region and side of each vessel = the segment most of its voxels are in (the user's choice).

    Only vessels whose majority segment differs from the engine's classification are
    changed, and then the engine's summary is recomputed from the rows.
    """
    ids = np.asarray(result.labels.array).astype(np.int64).ravel()
    values = np.asarray(seg_values.array).astype(np.int64).ravel()
    inside = (ids > 0) & (values > 0)
    if not inside.any():
        return result
    n_values = len(anatomy.VESSEL_REGIONS) * len(anatomy.VESSEL_SIDES) + 1
    counts = np.bincount(ids[inside] * n_values + values[inside], minlength=(ids.max() + 1) * n_values)
    counts = counts.reshape(-1, n_values)
    changed = False
    for row in result.vessels:
        vid = int(row["vessel_id"])
        if vid >= len(counts) or counts[vid].sum() == 0:
            continue
        region, side = region_side_of_value(int(np.argmax(counts[vid])))
        if (region, side) != (row["region"], row["side"]):
            row["region"], row["side"] = region, side
            changed = True
    if changed:
        import pandas as pd

        result.summary = {**result.summary, **dict(_engine().summarize(pd.DataFrame(result.vessels)))}
    return result


def _curves_folder(scene, outputs: VesselsOutputNodes) -> int:
    sh = _sh(scene)
    item = sh.GetItemChildWithName(outputs.folder_item, "centrelines") if outputs.folder_item else 0
    if not item:
        item = sh.CreateFolderItem(outputs.folder_item or sh.GetSceneItemID(), "centrelines")
    return int(item)


# ----------------------------------------------------------------------------- reading results
def summary_from_table(table_node) -> dict:
    """The summary row of a summary table node as a dict (NaN -> None)."""
    rows = nbmrml.rows_from_table_node(table_node)
    if len(rows) != 1:
        raise InputError(f"summary table '{table_node.GetName()}': expected one row, got {len(rows)}")
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in rows[0].items()}


def vessel_rows(table_node) -> list[dict]:
    return nbmrml.rows_from_table_node(table_node)


def vessel_id_of_row(table_node, row: int) -> int:
    """Vessel id in ``row`` (0-based) of a vessel table node."""
    column = table_node.GetTable().GetColumnByName("vessel_id")
    if column is None or not 0 <= row < table_node.GetNumberOfRows():
        raise InputError(f"vessel table '{table_node.GetName()}': no vessel in row {row}")
    return int(column.GetValue(row))


def first_vessel_id(outputs: VesselsOutputNodes, region: str = "dmv", isolated: bool = False) -> int:
    """Smallest vessel id of ``region`` in the current vessel table.

    ``isolated``: prefer vessels that form a connected component of their own
    (26-connectivity) in the vessel-id labelmap, i.e. touch no other vessel; if there is
    none, the smallest id of the region.
    """
    ids = sorted(int(r["vessel_id"]) for r in vessel_rows(outputs.vessel_table) if r.get("region") == region)
    if isolated and ids:
        import cc3d

        labels = np.asarray(nbmrml.volume_from_node(outputs.vessel_ids).array)
        components = cc3d.connected_components((labels > 0).astype(np.uint8), connectivity=26)
        pairs = np.unique(np.stack([components[labels > 0], labels[labels > 0]]), axis=1)
        comp_count = np.bincount(pairs[0])
        own = {int(v) for c, v in pairs.T if comp_count[c] == 1}
        ids = [i for i in ids if i in own] or ids
    if not ids:
        raise InputError(f"vessel table '{outputs.vessel_table.GetName()}': no vessel of region '{region}'")
    return ids[0]


def segment_id_of_vessel(outputs: VesselsOutputNodes, vessel_id: int) -> str:
    """Segment ID of the region/side segment holding ``vessel_id`` (per the current vessel table)."""
    for r in vessel_rows(outputs.vessel_table):
        if int(r["vessel_id"]) == int(vessel_id):
            name = segment_name(r["region"], r["side"])
            segmentation = outputs.segmentation.GetSegmentation()
            sid = segmentation.GetSegmentIdBySegmentName(name)
            if sid:
                return sid
            raise InputError(f"segmentation '{outputs.segmentation.GetName()}': no segment '{name}'")
    raise InputError(f"vessel {vessel_id}: not in table '{outputs.vessel_table.GetName()}'")


def vessel_mask_kji(outputs: VesselsOutputNodes, vessel_id: int) -> np.ndarray:
    """Boolean mask ``[k, j, i]`` (slicer.util array order) of the voxels of ``vessel_id``."""
    ids = nbmrml.volume_from_node(outputs.vessel_ids)
    return (np.asarray(ids.array) == int(vessel_id)).transpose(2, 1, 0)


def vessel_center_ras(outputs: VesselsOutputNodes, vessel_id: int) -> np.ndarray:
    """RAS mm point halfway along the vessel's centreline (by arc length): a point on the vessel."""
    node = outputs.curves.get(int(vessel_id))
    if node is None:
        raise InputError(f"vessel {vessel_id}: no centreline curve in result '{outputs.segmentation.GetName()}'")
    points = nbmrml.points_from_curve_node(node)
    if len(points) == 1:
        return points[0]
    s = centerline.cumulative_arc_mm(points)
    half = s[-1] / 2.0
    return np.array([np.interp(half, s, points[:, d]) for d in range(3)])


def jump_slices_to(scene, ras) -> None:
    """Centre every slice view of ``scene`` on ``ras`` (RAS mm)."""
    import slicer

    x, y, z = (float(c) for c in ras)
    slicer.vtkMRMLSliceNode.JumpAllSlices(scene, x, y, z, slicer.vtkMRMLSliceNode.CenteredJumpSlice)


def summary_text(outputs: VesselsOutputNodes) -> str:
    s = summary_from_table(outputs.summary_table)

    def fmt(v, unit=""):
        return "n/a" if v is None else (f"{v:.2f}{unit}" if isinstance(v, float) else f"{v}{unit}")

    return (f"DMVs: {fmt(s.get('dmv_count'))} (left {fmt(s.get('dmv_count_left'))}, "
            f"right {fmt(s.get('dmv_count_right'))}); mean width {fmt(s.get('dmv_width_mm'), ' mm')}, "
            f"tortuosity {fmt(s.get('dmv_tortuosity'))}, curvature {fmt(s.get('dmv_curvature_per_mm'), ' /mm')}"
            + (f" [metrics v{outputs.version}]" if outputs.version > 1 else "")
            + (f".  Warning: {s['warnings']}" if isinstance(s.get("warnings"), str) and s["warnings"] else ""))


# ----------------------------------------------------------------------------- export
def _file_prefix(outputs: VesselsOutputNodes) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", outputs.name).strip("_") or "vessels"


def export_file_names(outputs: VesselsOutputNodes, screenshot: bool = True) -> dict[str, str]:
    """What :func:`export_results` writes: kind -> file name."""
    p = _file_prefix(outputs)
    names = {"summary": f"{p}_vessel_summary.csv", "vessels": f"{p}_vessel_metrics.csv",
             "segmentation": f"{p}_vessels.seg.nrrd", "centerlines": f"{p}_centerlines.mrk.json"}
    if screenshot:
        names["screenshot"] = f"{p}_screenshot.png"
    return names


def existing_export_files(outputs: VesselsOutputNodes, folder, screenshot: bool = True) -> list[Path]:
    """Files in ``folder`` that an export would overwrite (including Slicer's .schema.csv side files)."""
    folder = Path(folder)
    out = []
    for name in export_file_names(outputs, screenshot).values():
        candidates = [folder / name]
        if name.endswith(".csv"):
            candidates.append(folder / (name[:-4] + ".schema.csv"))
        out += [c for c in candidates if c.exists()]
    return out


def export_results(outputs: VesselsOutputNodes, folder, overwrite: bool = False,
                   screenshot_png: bytes | None = None) -> list[Path]:
    """Write the current result to ``folder``; returns the written paths.

    Files (``<input>`` = the input node name): ``<input>_vessel_summary.csv`` (one row,
    the summary), ``<input>_vessel_metrics.csv`` (one row per vessel), both with a
    ``.schema.csv`` beside them (column types, units, descriptions);
    ``<input>_vessels.seg.nrrd`` (the segmentation as edited);
    ``<input>_centerlines.mrk.json`` (all centreline curves in one Slicer markups file);
    ``<input>_screenshot.png`` when ``screenshot_png`` (PNG bytes) is given.
    Raises :class:`OutputExistsError` if any of them exists and ``overwrite`` is False;
    then nothing is written.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"export folder {folder}: exists and is not a folder")
    existing = existing_export_files(outputs, folder, screenshot=screenshot_png is not None)
    if existing and not overwrite:
        raise OutputExistsError(f"export to {folder}: {', '.join(p.name for p in existing)} already exist; "
                                "not overwritten (choose another folder or confirm overwriting)")
    folder.mkdir(parents=True, exist_ok=True)
    names = export_file_names(outputs, screenshot=screenshot_png is not None)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=folder) as tmp:
        tmp = Path(tmp)
        nbmrml.save_table_csv(outputs.summary_table, tmp / names["summary"])
        nbmrml.save_table_csv(outputs.vessel_table, tmp / names["vessels"])
        nbmrml.save_segmentation(outputs.segmentation, tmp / names["segmentation"])
        _save_curves_json(outputs, tmp / names["centerlines"], tmp)
        if screenshot_png is not None:
            (tmp / names["screenshot"]).write_bytes(screenshot_png)
        written = []
        for item in sorted(tmp.iterdir()):
            if item.is_file() and not item.name.startswith(".curve-"):
                target = folder / item.name
                os.replace(item, target)
                written.append(target)
    return written


def _save_curves_json(outputs: VesselsOutputNodes, path: Path, tmp: Path) -> Path:
    """All curves in one Slicer ``.mrk.json`` (Slicer loads every entry as a node named by "name").

    Entries are those of :func:`NeonatalBrainLib.slicerfiles.write_markups_curves_json` (LPS,
    locked), with the curve nodes' world RAS points, colours and visibility."""
    from NeonatalBrainLib import slicerfiles

    entries = []
    for vid in sorted(outputs.curves):
        node = outputs.curves[vid]
        points = nbmrml.points_from_curve_node(node)
        if len(points) < 2:
            continue
        display = node.GetDisplayNode()
        color = display.GetSelectedColor() if display is not None else anatomy.VESSEL_REGION_COLORS["other"]
        visible = bool(display.GetVisibility()) if display is not None else True
        entries.append(slicerfiles._curve_entry(node.GetName(), points, color, "LPS", True, visible))
    path.write_text(slicerfiles._markups_document(entries))
    return path


# ----------------------------------------------------------------------------- batch
def run_batch(cases, out_dir, progress=None, jobs: int = 1, executor=None, runner=None, params=None) -> list[dict]:
    """Run the engine over a cases CSV or folder with the project's batch runner (as ``neonatal-brain vessels-batch``).

    ``cases``: a cases CSV (``case_id,swi[,brain_mask,ventricles,labels]``) or a folder of
    case sub-folders holding ``swi.nii.gz``.  Writes ``out_dir/<case_id>/`` per case and
    the cohort ``out_dir/metrics.csv``; resumable (finished cases are skipped), a failing
    case is logged in ``errors.csv`` without stopping the others.  ``params``: the engine's
    ``VesselParams`` (None: its defaults, as on the command line without ``--params``); a batch
    folder resumes only with the parameters it was started with.  ``executor``: a ``concurrent.futures``
    executor (default: ``jobs`` local processes).  ``runner`` as in
    :func:`analyze_volume_node`.  Returns the runner's per-case results
    (``case_id``, ``status`` done/skipped/failed, ``error``).
    """
    from NeonatalBrainLib import batch

    from . import cli

    case_list = cli.read_cases(cases)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"batch output {out}: exists and is not a folder")
    worker, settings = cli.batch_worker(params)
    return (runner or _direct)(lambda: batch.run_batch(case_list, worker, out, executor=executor, jobs=jobs,
                                                       progress=progress, settings=settings))


def batch_text(results: Sequence[Mapping]) -> str:
    """'3 cases done, 1 already done, 1 failed (case_x: error)'."""
    done = sum(r["status"] == "done" for r in results)
    skipped = sum(r["status"] == "skipped" for r in results)
    failed = [r for r in results if r["status"] == "failed"]
    text = f"{done} cases done, {skipped} already done, {len(failed)} failed"
    if failed:
        text += " (" + "; ".join(f"{r['case_id']}: {r['error']}" for r in failed[:5]) + ")"
    return text
