"""MRML adapter: NeonatalBrain data <-> 3D Slicer nodes (the one place both modules convert).

Works in the Slicer application and headless on slicer-core (``pip install
slicer-core``).  ``slicer`` and ``vtk`` are imported inside the functions, so
importing this module needs neither.  Every function takes the scene (or the
node) explicitly.

Conventions
-----------
* Volumes are :class:`NeonatalBrainLib.imageio.Volume` (``array[i, j, k]``,
  ``affine`` voxel -> RAS mm).  A volume node stores the same geometry as its
  IJK-to-RAS matrix, so ``volume_from_node(node).affine == IJKToRAS``.  VTK image
  data are ordered with i fastest, i.e. a C-ordered ``[k, j, i]`` array.
* Slicer's volume reader makes every grid right-handed: a file whose voxel axes
  are left-handed (det of the direction matrix < 0, e.g. the common LAS NIfTI)
  loads with its k axis reversed -- the same image in world coordinates, but
  ``array[:, :, ::-1]`` of what ``imageio.load_volume`` returns.  Code must go
  through the affine; :func:`match_voxel_order` puts a volume back into a
  reference's voxel order.
* If a node sits under a linear transform, ``volume_from_node`` and
  ``points_from_curve_node`` return world (transformed) coordinates; a
  non-linear transform raises :class:`InputError` (harden it first).
* Segmentations: one segment per label value; the segment ID *and* name are the
  label's name, the value is kept in the segment's ``LabelValue`` and in the tag
  ``NeonatalBrain.LabelValue`` so an export gives the values back.
* Saving never overwrites an existing file unless ``overwrite=True``.

Slicer file formats written without Slicer live in :mod:`NeonatalBrainLib.slicerfiles`.
"""
from __future__ import annotations

import colorsys
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .imageio import InputError, Volume
from .outputs import OutputExistsError

#: Segment tag holding the label value a segment was created from.
LABEL_VALUE_TAG = "NeonatalBrain.LabelValue"

#: Column-name suffix -> unit label shown by Slicer's table view (longest suffix first).
COLUMN_UNIT_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("_per_mm", "1/mm"),
    ("_mm3", "mm3"),
    ("_mm2", "mm2"),
    ("_ml", "mL"),
    ("_mm", "mm"),
    ("_weeks", "weeks"),
    ("_g", "g"),
    ("_s", "s"),
    ("_percent", "%"),
)


# ----------------------------------------------------------------------------- helpers
def _slicer():
    import slicer

    return slicer


def _vtk_matrix(m: np.ndarray):
    import vtk

    out = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            out.SetElement(r, c, float(m[r, c]))
    return out


def _np_matrix(vm) -> np.ndarray:
    return np.array([[vm.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=float)


def _node_label(node) -> str:
    return f"node '{node.GetName()}' ({node.GetClassName()})" if node is not None else "node None"


def _to_world_matrix(node) -> np.ndarray:
    """4x4 node-local -> world (RAS) matrix; identity if the node is not transformed."""
    slicer = _slicer()
    parent = node.GetParentTransformNode()
    if parent is None:
        return np.eye(4)
    if not parent.IsTransformToWorldLinear():
        raise InputError(f"{_node_label(node)} is under a non-linear transform; harden the transform first")
    import vtk

    m = vtk.vtkMatrix4x4()
    slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(parent, None, m)
    return _np_matrix(m)


def _check_new_file(path: str | os.PathLike, overwrite: bool) -> Path:
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; not overwritten (pass overwrite=True)")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _read_with_storage_node(scene, storage_class: str, node, path: Path, what: str):
    """Read ``path`` into ``node`` through a storage node added to ``scene``."""
    storage = scene.AddNewNodeByClass(storage_class)
    storage.SetFileName(str(path))
    ok = storage.ReadData(node)
    if not ok:
        scene.RemoveNode(storage)
        raise InputError(f"{what} ({path}): Slicer could not read the file")
    node.SetAndObserveStorageNodeID(storage.GetID())
    return storage


def _write_with_storage_node(node, storage_class: str, path: Path, what: str) -> Path:
    slicer = _slicer()
    storage = getattr(slicer, storage_class)()
    if node.GetScene() is not None:
        storage.SetScene(node.GetScene())
    storage.SetFileName(str(path))
    if hasattr(storage, "SetUseCompression"):
        storage.SetUseCompression(1)
    if not storage.WriteData(node):
        path.unlink(missing_ok=True)  # a partial file of ours (the caller checked it was new)
        raise OSError(f"{what}: writing {path} failed")
    return path


# ----------------------------------------------------------------------------- volumes
def load_volume_node(scene, path: str | os.PathLike, name: str | None = None, labelmap: bool = False):
    """Read a NIfTI/NRRD/MetaImage file into a new scalar (or labelmap) volume node.

    Uses the Volumes module logic registered on ``scene``'s application logic when
    there is one (Slicer, or the headless test fixture), else a
    ``vtkMRMLVolumeArchetypeStorageNode``; either way LPS files become RAS nodes.
    Raises :class:`InputError` for a missing or unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"volume file {path}: file not found")
    node_name = name or path.name.split(".")[0]
    logic = _volumes_logic(scene)
    if logic is not None:
        node = logic.AddArchetypeVolume(str(path), node_name, 1 if labelmap else 0)
        if node is None:
            raise InputError(f"volume file {path}: Slicer could not read it as an image")
        return node
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode", node_name)
    try:
        _read_with_storage_node(scene, "vtkMRMLVolumeArchetypeStorageNode", node, path, "volume file")
    except InputError:
        scene.RemoveNode(node)
        raise
    _ensure_volume_display(scene, node)
    return node


def _volumes_logic(scene):
    """The Volumes module logic on ``scene`` (Slicer or the test fixture), or None."""
    try:
        slicer = _slicer()
        app = getattr(slicer, "app", None)
        logic = None
        if app is not None and hasattr(app, "applicationLogic"):
            logic = app.applicationLogic().GetModuleLogic("Volumes")
        if logic is None and hasattr(slicer, "modules") and hasattr(slicer.modules, "volumes"):
            logic = slicer.modules.volumes.logic()
    except Exception:  # noqa: BLE001 - any failure here means "no logic available"
        return None
    if logic is None or logic.GetMRMLScene() is not scene:
        return None
    return logic


def _ensure_volume_display(scene, node) -> None:
    if node.GetDisplayNode() is not None:
        return
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if display is None:
        return
    if node.IsA("vtkMRMLLabelMapVolumeNode"):
        for color_id in ("vtkMRMLColorTableNodeFileGenericAnatomyColors.txt", "vtkMRMLColorTableNodeLabels"):
            if scene.GetNodeByID(color_id) is not None:
                display.SetAndObserveColorNodeID(color_id)
                break
    else:
        if scene.GetNodeByID("vtkMRMLColorTableNodeGrey") is not None:
            display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeGrey")
        display.AutoWindowLevelOn()


def volume_from_node(node) -> Volume:
    """:class:`Volume` (a copy of the voxels, ``[i, j, k]``) of a scalar or labelmap volume node.

    ``affine`` = the node's IJK-to-RAS matrix (times its parent transform, if linear).
    """
    from vtk.util import numpy_support

    if node is None or not node.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(f"{_node_label(node)}: expected a scalar or labelmap volume node")
    image = node.GetImageData()
    if image is None or image.GetPointData().GetScalars() is None:
        raise InputError(f"{_node_label(node)}: volume node has no voxel data")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(f"{_node_label(node)}: expected one component per voxel, got "
                         f"{image.GetNumberOfScalarComponents()}")
    ni, nj, nk = image.GetDimensions()
    flat = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    array = np.array(flat.reshape(nk, nj, ni).transpose(2, 1, 0), order="C", copy=True)
    import vtk

    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    affine = _to_world_matrix(node) @ _np_matrix(ijk_to_ras)
    return Volume(array, affine)


def match_voxel_order(volume: Volume, reference: Volume, atol_mm: float = 1e-3) -> Volume:
    """``volume`` with its axes permuted/reversed so that its affine equals ``reference``'s.

    For two descriptions of the same grid that differ only in voxel order (e.g.
    a left-handed file read by Slicer vs by :func:`imageio.load_volume`).
    Raises :class:`InputError` when the grids are not the same up to axis order.
    """
    m = np.linalg.inv(volume.affine) @ reference.affine  # reference ijk -> volume ijk
    rot = np.rint(m[:3, :3])
    if not np.allclose(m[:3, :3], rot, atol=1e-3) or sorted(np.abs(rot).sum(axis=0)) != [1, 1, 1] \
            or sorted(np.abs(rot).sum(axis=1)) != [1, 1, 1]:
        raise InputError("volumes are not on the same grid up to axis order (different spacing or rotation)")
    perm = [int(np.flatnonzero(rot[:, a])[0]) for a in range(3)]  # volume axis for each reference axis
    shape_v = np.asarray(volume.shape)
    expected_t = np.array([0.0 if rot[perm[a], a] > 0 else shape_v[perm[a]] - 1.0 for a in range(3)])
    t = np.array([m[perm[a], 3] for a in range(3)])
    spacing = volume.spacing_mm[perm]
    if np.abs((t - expected_t) * spacing).max() > atol_mm:
        raise InputError("volumes are not on the same grid up to axis order (grids are offset)")
    array = np.transpose(np.asarray(volume.array), perm)
    for a in range(3):
        if rot[perm[a], a] < 0:
            array = np.flip(array, axis=a)
    if array.shape != reference.shape:
        raise InputError(f"volumes are not on the same grid: shape {array.shape} vs {reference.shape} after reordering")
    return Volume(np.ascontiguousarray(array), reference.affine.copy())


def _image_data_from_array(array: np.ndarray):
    """vtkImageData (origin 0, spacing 1) holding ``array[i, j, k]`` (deep copy)."""
    import vtk
    from vtk.util import numpy_support

    a = np.asarray(array)
    if a.ndim != 3:
        raise InputError(f"expected a 3D array, got shape {a.shape}")
    if a.dtype == bool:
        a = a.astype(np.uint8)
    if a.dtype == np.float16:
        a = a.astype(np.float32)
    flat = np.ascontiguousarray(a.transpose(2, 1, 0)).ravel()
    image = vtk.vtkImageData()
    image.SetDimensions(*[int(s) for s in a.shape])
    vtk_array = numpy_support.numpy_to_vtk(flat, deep=1)
    vtk_array.SetName("ImageScalars")
    image.GetPointData().SetScalars(vtk_array)
    return image


def volume_node_from_volume(scene, volume: Volume, name: str, labelmap: bool = False, node=None,
                            reference_node=None):
    """Create (or, with ``node``, update in place) a volume node holding ``volume``.

    The IJK-to-RAS matrix is set to ``volume.affine`` exactly.  ``reference_node``
    (optional) is a volume node whose display settings (window/level, colour
    table) are copied onto a new scalar node.  Returns the node.
    """
    if not isinstance(volume, Volume):
        raise InputError(f"volume for '{name}': expected a NeonatalBrainLib.imageio.Volume, got {type(volume).__name__}")
    array = np.asarray(volume.array)
    if labelmap and not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        rounded = np.rint(array)
        if not np.array_equal(rounded, array):
            raise InputError(f"labelmap '{name}': values must be integers, got {array.dtype} with fractions")
        array = rounded.astype(np.int32)
    cls = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    if node is None:
        node = scene.AddNewNodeByClass(cls, name)
    elif not node.IsA(cls) and not (not labelmap and node.IsA("vtkMRMLScalarVolumeNode")):
        raise InputError(f"{_node_label(node)}: cannot hold a {'labelmap' if labelmap else 'scalar volume'}")
    node.SetIJKToRASMatrix(_vtk_matrix(volume.affine))
    node.SetAndObserveImageData(_image_data_from_array(array))
    new_display = node.GetDisplayNode() is None
    _ensure_volume_display(scene, node)
    if new_display and reference_node is not None and reference_node.GetDisplayNode() is not None \
            and not labelmap and reference_node.GetDisplayNode().IsA("vtkMRMLScalarVolumeDisplayNode"):
        node.GetDisplayNode().CopyContent(reference_node.GetDisplayNode())
    node.Modified()
    return node


# ----------------------------------------------------------------------------- segmentations
def _default_color(name: str, index: int) -> tuple[float, float, float]:
    from . import anatomy

    if anatomy.structure_of(name) in anatomy.STRUCTURE_COLORS:
        return anatomy.color_of(name)
    if name in anatomy.VESSEL_REGION_COLORS:
        return anatomy.VESSEL_REGION_COLORS[name]
    hue = (index * 0.618033988749895) % 1.0  # golden-ratio hues: distinct neighbours
    return colorsys.hsv_to_rgb(hue, 0.75, 0.95)


def _oriented_image(volume: Volume, array: np.ndarray):
    """vtkOrientedImageData holding ``array`` on ``volume``'s grid."""
    slicer = _slicer()
    image = _image_data_from_array(array)
    oriented = slicer.vtkOrientedImageData()
    oriented.ShallowCopy(image)
    oriented.SetImageToWorldMatrix(_vtk_matrix(volume.affine))
    return oriented


def segmentation_node_from_labels(scene, labels: Volume, names: Mapping[int, str],
                                  colors: Mapping[Any, Sequence[float]] | None = None,
                                  name: str = "Segmentation", node=None, reference_volume_node=None):
    """Segmentation node with one named, coloured segment per label value in ``names``.

    ``labels``: integer :class:`Volume`; every non-zero value must be a key of ``names``.
    ``names``: value -> segment name (also the segment ID; names must be unique).
    ``colors``: RGB 0..1 by value or by name; default: :mod:`anatomy` colours, else
    distinct hues.  All segments share one binary-labelmap layer (Slicer's shared
    labelmap), each with its value as ``LabelValue``.  The reference geometry is
    the labels grid (or ``reference_volume_node``'s if given).  With ``node``, its
    segments are replaced.  Returns the node.
    """
    slicer = _slicer()
    if not isinstance(labels, Volume):
        raise InputError(f"labels for '{name}': expected a Volume, got {type(labels).__name__}")
    a = np.asarray(labels.array)
    if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
        if not np.array_equal(np.rint(a), a):
            raise InputError(f"labels for '{name}': values must be integers, got {a.dtype} with fractions")
    a = np.rint(a).astype(np.int64) if not np.issubdtype(a.dtype, np.integer) else a.astype(np.int64)
    names = {int(k): str(v) for k, v in names.items()}
    if any(v <= 0 for v in names):
        raise InputError(f"labels for '{name}': label values must be positive, got {sorted(names)}")
    if len(set(names.values())) != len(names):
        raise InputError(f"labels for '{name}': segment names must be unique, got {sorted(names.values())}")
    present = set(np.unique(a).tolist()) - {0}
    unnamed = sorted(present - set(names))
    if unnamed:
        raise InputError(f"labels for '{name}': values {unnamed[:20]} have no name in `names`")
    max_value = max(names) if names else 1
    dtype = np.uint8 if max_value < 256 else (np.uint16 if max_value < 65536 else np.int32)
    shared = _oriented_image(labels, a.astype(dtype))

    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    segmentation = node.GetSegmentation()
    segmentation.RemoveAllSegments()
    binary_name = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    if hasattr(segmentation, "SetSourceRepresentationName"):  # Slicer >= 5.4
        segmentation.SetSourceRepresentationName(binary_name)
    else:
        segmentation.SetMasterRepresentationName(binary_name)
    geometry_param = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    if reference_volume_node is not None:
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node)
    else:
        segmentation.SetConversionParameter(
            geometry_param, slicer.vtkSegmentationConverter.SerializeImageGeometry(shared))
    colors = dict(colors or {})
    for index, (value, seg_name) in enumerate(sorted(names.items())):
        rgb = colors.get(value, colors.get(seg_name))
        if rgb is None:
            rgb = _default_color(seg_name, index)
        segment = slicer.vtkSegment()
        segment.SetName(seg_name)
        segment.SetColor(*[float(c) for c in rgb[:3]])
        segment.SetLabelValue(int(value))
        segment.SetNameAutoGenerated(False)  # else Slicer may rename/recolour it from terminology
        segment.SetColorAutoGenerated(False)
        segment.SetTag(LABEL_VALUE_TAG, str(int(value)))
        segment.AddRepresentation(binary_name, shared)
        if not segmentation.AddSegment(segment, seg_name):
            raise RuntimeError(f"segmentation '{name}': adding segment '{seg_name}' failed")
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    node.Modified()
    return node


def _segment_value(segment) -> int | None:
    """The label value a segment stands for: its NeonatalBrain tag, else its LabelValue (> 0), else None."""
    import vtk

    tag = vtk.reference("")
    if segment.GetTag(LABEL_VALUE_TAG, tag):
        try:
            return int(str(tag.get()))
        except ValueError:
            pass
    value = int(segment.GetLabelValue())
    return value if value > 0 else None


def labels_from_segmentation_node(seg_node, reference: Volume) -> tuple[Volume, dict[int, str]]:
    """Export all segments onto ``reference``'s grid: (integer labels Volume, value -> segment name).

    Each segment gets the value it was created with (tag/``LabelValue``) when that
    is unique among the segments, else the next free value.  Where segments
    overlap, the later segment (in segment order) wins.
    """
    slicer = _slicer()
    if seg_node is None or not seg_node.IsA("vtkMRMLSegmentationNode"):
        raise InputError(f"{_node_label(seg_node)}: expected a segmentation node")
    scene = seg_node.GetScene()
    if scene is None:
        raise InputError(f"{_node_label(seg_node)}: segmentation node is not in a scene")
    segmentation = seg_node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    wanted = [_segment_value(segmentation.GetSegment(sid)) for sid in ids]
    values: list[int] = []
    used: set[int] = set()
    counts = {v: wanted.count(v) for v in wanted}
    for v in wanted:
        if v is not None and counts[v] == 1 and v not in used:
            values.append(v)
            used.add(v)
        else:
            values.append(-1)
    next_free = 1
    for i, v in enumerate(values):
        if v == -1:
            while next_free in used or next_free in wanted:
                next_free += 1
            values[i] = next_free
            used.add(next_free)
    table = {values[i]: segmentation.GetSegment(sid).GetName() for i, sid in enumerate(ids)}
    out_dtype = np.uint8 if max(values, default=0) < 256 else (np.uint16 if max(values) < 65536 else np.int32)
    if not ids:
        return reference.with_array(np.zeros(reference.shape, out_dtype)), {}

    ref_node = volume_node_from_volume(scene, reference.with_array(np.zeros(reference.shape, np.uint8)),
                                       "__neonatal_reference__", labelmap=True)
    out_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__neonatal_export__")
    try:
        import vtk

        id_array = vtk.vtkStringArray()
        for sid in ids:
            id_array.InsertNextValue(sid)
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            seg_node, id_array, out_node, ref_node)
        if not ok:
            raise RuntimeError(f"{_node_label(seg_node)}: export to labelmap failed")
        exported = volume_from_node(out_node)
    finally:
        for tmp in (out_node, ref_node):
            display = tmp.GetDisplayNode()
            color = display.GetColorNode() if display is not None else None
            scene.RemoveNode(tmp)
            if color is not None and color.GetName().startswith("__neonatal"):
                scene.RemoveNode(color)
    if exported.shape != reference.shape or not np.allclose(exported.affine, reference.affine, atol=1e-4):
        raise RuntimeError("segmentation export did not land on the reference grid")
    # exported values are 1..N in the order of `ids`; map them to the wanted values
    lut = np.zeros(len(ids) + 1, dtype=out_dtype)
    lut[1:] = values
    array = lut[np.asarray(exported.array).astype(np.int64)]
    return Volume(array, reference.affine.copy()), table


def save_segmentation(node, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a segmentation node to a Slicer ``.seg.nrrd`` file."""
    path = Path(path)
    if not path.name.endswith(".seg.nrrd"):
        raise InputError(f"segmentation file {path}: name must end with .seg.nrrd")
    path = _check_new_file(path, overwrite)
    return _write_with_storage_node(node, "vtkMRMLSegmentationStorageNode", path, _node_label(node))


def load_segmentation(scene, path: str | os.PathLike, name: str | None = None):
    """Read a ``.seg.nrrd`` (or a labelmap NRRD/NIfTI read as segmentation) into a new segmentation node."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"segmentation file {path}: file not found")
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name or path.name.split(".")[0])
    try:
        _read_with_storage_node(scene, "vtkMRMLSegmentationStorageNode", node, path, "segmentation file")
    except InputError:
        scene.RemoveNode(node)
        raise
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


# ----------------------------------------------------------------------------- tables
def _unit_of(column: str) -> str | None:
    for suffix, unit in COLUMN_UNIT_SUFFIXES:
        if column.endswith(suffix):
            return unit
    return None


def _rows_to_columns(rows) -> dict[str, list]:
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):  # pandas DataFrame
        return {str(c): list(rows[c].tolist()) for c in rows.columns}
    rows = list(rows)
    columns: dict[str, list] = {}
    for row in rows:
        for key in row:
            columns.setdefault(str(key), [])
    for key in columns:
        columns[key] = [row.get(key) for row in rows]
    return columns


def _column_kind(values: list) -> str:
    """'int', 'float' or 'str' for a column (None/NaN allowed among numbers)."""
    kinds = set()
    for v in values:
        if v is None:
            continue
        if isinstance(v, (bool, np.bool_)):
            kinds.add("int")
        elif isinstance(v, (int, np.integer)):
            kinds.add("int")
        elif isinstance(v, (float, np.floating)):
            kinds.add("float")
        else:
            kinds.add("str")
    if "str" in kinds:
        return "str"
    if "float" in kinds or None in values:
        return "float" if kinds else "str"
    return "int" if kinds else "str"


def table_node_from_rows(scene, rows, name: str, node=None):
    """Table node from a list of dicts (or a pandas DataFrame); returns the node.

    Numeric columns become numeric VTK arrays (``vtkLongLongArray`` for integers,
    ``vtkDoubleArray`` for floats, None/NaN -> NaN), others ``vtkStringArray``.
    Column names are kept as given (e.g. ``width_mm``); a unit label is set
    from the name's suffix (:data:`COLUMN_UNIT_SUFFIXES`).  With ``node``, its
    content is replaced.
    """
    import vtk

    columns = _rows_to_columns(rows)
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = vtk.vtkTable()
    for col, values in columns.items():
        kind = _column_kind(values)
        if kind == "int":
            arr = vtk.vtkLongLongArray()
            for v in values:
                arr.InsertNextValue(int(v))
        elif kind == "float":
            arr = vtk.vtkDoubleArray()
            for v in values:
                arr.InsertNextValue(float("nan") if v is None else float(v))
        else:
            arr = vtk.vtkStringArray()
            for v in values:
                arr.InsertNextValue("" if v is None else str(v))
        arr.SetName(col)
        table.AddColumn(arr)
    node.SetAndObserveTable(table)
    for col in columns:
        unit = _unit_of(col)
        if unit:
            node.SetColumnUnitLabel(col, unit)
    node.Modified()
    return node


def rows_from_table_node(node) -> list[dict]:
    """Rows of a table node as dicts; numeric arrays give int/float values, others str."""
    import vtk

    if node is None or not node.IsA("vtkMRMLTableNode"):
        raise InputError(f"{_node_label(node)}: expected a table node")
    table = node.GetTable()
    n_rows = table.GetNumberOfRows()
    rows: list[dict] = [{} for _ in range(n_rows)]
    for c in range(table.GetNumberOfColumns()):
        arr = table.GetColumn(c)
        col = arr.GetName()
        if isinstance(arr, vtk.vtkStringArray) or not arr.IsNumeric():
            get = lambda r, a=arr: a.GetValue(r)  # noqa: E731
        elif arr.GetDataType() in (vtk.VTK_FLOAT, vtk.VTK_DOUBLE):
            get = lambda r, a=arr: float(a.GetValue(r))  # noqa: E731
        else:
            get = lambda r, a=arr: int(a.GetValue(r))  # noqa: E731
        for r in range(n_rows):
            rows[r][col] = get(r)
    return rows


def save_table_csv(node, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a table node to CSV (``.csv``) or TSV (``.tsv``) through Slicer's table storage.

    Slicer also writes ``<stem>.schema.csv`` beside it (column types and units).
    """
    path = Path(path)
    if path.suffix.lower() not in (".csv", ".tsv"):
        raise InputError(f"table file {path}: use a .csv or .tsv name")
    _check_new_file(path.with_name(path.stem + ".schema" + path.suffix), overwrite)
    path = _check_new_file(path, overwrite)
    return _write_with_storage_node(node, "vtkMRMLTableStorageNode", path, _node_label(node))


# ----------------------------------------------------------------------------- markups curves
def _as_points(points, what: str) -> np.ndarray:
    p = np.asarray(points, dtype=float)
    if p.ndim != 2 or p.shape[1] != 3:
        raise InputError(f"{what}: expected an (N, 3) array of RAS mm points, got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise InputError(f"{what}: points contain NaN or Inf")
    return p


def curve_node_from_points(scene, points_ras, name: str, node=None, hide_control_points: bool = True,
                           color: Sequence[float] | None = None):
    """Markups curve node through ``points_ras`` ((N, 3) RAS mm), linear interpolation.

    The curve type is *linear*, so its length is the polyline length
    (:func:`NeonatalBrainLib.centerline.arc_length_mm`).  With
    ``hide_control_points`` the points are drawn tiny and unlabeled (dense
    centrelines).  The node is locked against accidental edits.  Returns the node.
    """
    import vtk

    p = _as_points(points_ras, f"curve '{name}'")
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLMarkupsCurveNode", name)
    node.SetCurveTypeToLinear()
    vtk_points = vtk.vtkPoints()
    for x, y, z in p:
        vtk_points.InsertNextPoint(float(x), float(y), float(z))
    node.SetControlPointPositionsWorld(vtk_points)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if display is not None:
        if color is not None:
            display.SetSelectedColor(*[float(c) for c in color[:3]])
            display.SetColor(*[float(c) for c in color[:3]])
        if hide_control_points:
            display.SetPointLabelsVisibility(False)
            display.SetPropertiesLabelVisibility(False)
            display.SetUseGlyphScale(True)
            display.SetGlyphScale(0.01)  # relative to the view size: points vanish, the line stays
    node.SetLocked(True)
    return node


def points_from_curve_node(node) -> np.ndarray:
    """(N, 3) world RAS mm positions of a markups node's control points."""
    if node is None or not node.IsA("vtkMRMLMarkupsNode"):
        raise InputError(f"{_node_label(node)}: expected a markups node")
    n = node.GetNumberOfControlPoints()
    out = np.zeros((n, 3), dtype=float)
    for i in range(n):
        node.GetNthControlPointPositionWorld(i, out[i])
    return out


def save_markups(node, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a markups node to Slicer's ``.mrk.json``."""
    path = Path(path)
    if not path.name.endswith(".json"):
        raise InputError(f"markups file {path}: name must end with .mrk.json")
    path = _check_new_file(path, overwrite)
    return _write_with_storage_node(node, "vtkMRMLMarkupsJsonStorageNode", path, _node_label(node))


_MARKUPS_CLASSES = {
    "Curve": "vtkMRMLMarkupsCurveNode", "ClosedCurve": "vtkMRMLMarkupsClosedCurveNode",
    "Fiducial": "vtkMRMLMarkupsFiducialNode", "Line": "vtkMRMLMarkupsLineNode",
    "Angle": "vtkMRMLMarkupsAngleNode", "Plane": "vtkMRMLMarkupsPlaneNode", "ROI": "vtkMRMLMarkupsROINode",
}


def load_markups(scene, path: str | os.PathLike, name: str | None = None, curve_type: str | None = "linear"):
    """Read a ``.mrk.json`` into a new markups node of the file's type; returns the node.

    The markups JSON does not store a curve's interpolation (Slicer 5.x shows
    curves as Catmull-Rom splines by default); ``curve_type`` ("linear", the
    interpolation this package writes, or None to keep Slicer's default) is
    applied to curve nodes.

    A Slicer markups file may list several markups; Slicer's JSON storage node
    reads only the first one into a node, so this does the same (see
    :func:`NeonatalBrainLib.slicerfiles.read_markups_json` for all of them).
    """
    import json

    path = Path(path)
    if not path.is_file():
        raise InputError(f"markups file {path}: file not found")
    try:
        data = json.loads(path.read_text())
        kind = data["markups"][0]["type"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise InputError(f"markups file {path}: not a Slicer markups JSON file ({exc})") from None
    cls = _MARKUPS_CLASSES.get(kind)
    if cls is None:
        raise InputError(f"markups file {path}: unsupported markups type '{kind}'")
    node = scene.AddNewNodeByClass(cls, name or path.name.split(".")[0])
    try:
        _read_with_storage_node(scene, "vtkMRMLMarkupsJsonStorageNode", node, path, "markups file")
    except InputError:
        scene.RemoveNode(node)
        raise
    if name:
        node.SetName(name)
    if curve_type and node.IsA("vtkMRMLMarkupsCurveNode"):
        node.SetCurveType(node.GetCurveTypeFromString(curve_type))
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def load_all_markups(scene, path: str | os.PathLike, curve_type: str | None = "linear") -> list:
    """Read every markups entry of a ``.mrk.json`` into its own node (as Slicer's *Add Data* does).

    Node names come from each entry's ``name`` (else the file name).  Returns the nodes in file order.
    """
    import json

    path = Path(path)
    if not path.is_file():
        raise InputError(f"markups file {path}: file not found")
    try:
        count = len(json.loads(path.read_text())["markups"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"markups file {path}: not a Slicer markups JSON file ({exc})") from None
    nodes = []
    for index in range(count):
        storage = scene.AddNewNodeByClass("vtkMRMLMarkupsJsonStorageNode")
        if count == 1:
            storage.SetFileName(str(path))  # as Slicer: a shared file name would make all nodes overwrite it
        node = storage.AddNewMarkupsNodeFromFile(str(path), "", index)
        if node is None:
            scene.RemoveNode(storage)
            for n in nodes:
                scene.RemoveNode(n)
            raise InputError(f"markups file {path}: Slicer could not read markup {index}")
        if curve_type and node.IsA("vtkMRMLMarkupsCurveNode"):
            node.SetCurveType(node.GetCurveTypeFromString(curve_type))
        nodes.append(node)
    return nodes


# ----------------------------------------------------------------------------- subject hierarchy
def _sh_node(scene):
    slicer = _slicer()
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if sh is None:
        raise RuntimeError("scene has no subject hierarchy node")
    return sh


def subject_hierarchy_folder(scene, name: str, parent: int | None = None) -> int:
    """ID of the subject-hierarchy folder ``name`` under ``parent`` (default: the scene); created if missing."""
    sh = _sh_node(scene)
    parent_id = sh.GetSceneItemID() if parent is None else int(parent)
    existing = sh.GetItemChildWithName(parent_id, name)
    if existing and sh.GetItemLevel(existing) == "Folder":
        return int(existing)
    return int(sh.CreateFolderItem(parent_id, name))


def place_in_folder(scene, node, folder_item: int) -> int:
    """Put ``node`` under ``folder_item`` in the subject hierarchy (creating its item if needed); returns its item ID."""
    sh = _sh_node(scene)
    item = sh.GetItemByDataNode(node)
    if not item:
        item = sh.CreateItem(int(folder_item), node)
    else:
        sh.SetItemParent(item, int(folder_item))
    return int(item)


__all__: Sequence[str] = (
    "load_volume_node", "volume_from_node", "volume_node_from_volume", "match_voxel_order",
    "segmentation_node_from_labels", "labels_from_segmentation_node", "save_segmentation", "load_segmentation",
    "table_node_from_rows", "rows_from_table_node", "save_table_csv",
    "curve_node_from_points", "points_from_curve_node", "save_markups", "load_markups",
    "load_all_markups",
    "subject_hierarchy_folder", "place_in_folder", "LABEL_VALUE_TAG", "COLUMN_UNIT_SUFFIXES",
)
