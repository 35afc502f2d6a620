"""Anatomical label table, vessel regions and their display colours (one definition for all).

Label values are those of the phantom's ``labels.nii.gz`` and of
``roi_labels.nii.gz``; names follow ``<structure>_<side>`` where side is the
patient's side (left = negative x in RAS).  Colours are RGB in 0..1, taken
from 3D Slicer's GenericAnatomyColors where a matching entry exists.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

#: value -> name of the anatomical labels written by the phantom.
LABELS: dict[int, str] = {
    1: "cortical_gm_left",
    2: "cortical_gm_right",
    3: "white_matter_left",
    4: "white_matter_right",
    5: "lateral_ventricle_left",
    6: "lateral_ventricle_right",
    7: "third_ventricle",
    8: "extracerebral_csf",
    9: "caudate_left",
    10: "caudate_right",
    11: "putamen_left",
    12: "putamen_right",
    13: "globus_pallidus_left",
    14: "globus_pallidus_right",
    15: "thalamus_left",
    16: "thalamus_right",
    17: "plic_left",
    18: "plic_right",
    19: "brainstem",
    20: "cerebellum",
}
LABEL_VALUES: dict[str, int] = {v: k for k, v in LABELS.items()}

#: The eight deep grey-matter ROIs of NeonatalClassify (left and right of each structure).
DEEP_GREY_STRUCTURES = ("globus_pallidus", "putamen", "caudate", "thalamus")
DEEP_GREY_ROIS = tuple(f"{s}_{side}" for s in DEEP_GREY_STRUCTURES for side in ("left", "right"))

#: RGB colours (0..1) per structure (both sides share one colour).
STRUCTURE_COLORS: dict[str, tuple[float, float, float]] = {
    "cortical_gm": (0.694, 0.478, 0.396),
    "white_matter": (0.961, 0.961, 0.961),
    "lateral_ventricle": (0.345, 0.416, 0.843),
    "third_ventricle": (0.345, 0.416, 0.843),
    "extracerebral_csf": (0.345, 0.416, 0.843),
    "caudate": (0.118, 0.565, 1.0),
    "putamen": (1.0, 0.753, 0.796),
    "globus_pallidus": (0.051, 0.831, 0.024),
    "thalamus": (0.0, 0.463, 0.055),
    "plic": (0.863, 0.973, 0.643),
    "brainstem": (0.467, 0.624, 0.690),
    "cerebellum": (0.902, 0.580, 0.133),
}

#: Vessel regions reported by NeonatalVessels, in display order.
VESSEL_REGIONS = ("dmv", "thalamic", "anterior_caudate", "internal_cerebral", "other")
VESSEL_SIDES = ("left", "right", "midline")

#: RGB colours (0..1) of the vessel regions (segmentation, overlays, report).
VESSEL_REGION_COLORS: dict[str, tuple[float, float, float]] = {
    "dmv": (0.0, 0.75, 1.0),
    "thalamic": (1.0, 0.55, 0.0),
    "anterior_caudate": (0.85, 0.2, 0.85),
    "internal_cerebral": (0.95, 0.85, 0.1),
    "other": (0.6, 0.6, 0.6),
}


def structure_of(name: str) -> str:
    """'globus_pallidus_left' -> 'globus_pallidus'."""
    for suffix in ("_left", "_right"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def color_of(name: str) -> tuple[float, float, float]:
    return STRUCTURE_COLORS.get(structure_of(name), (0.8, 0.8, 0.2))


def write_label_table(path: str | os.PathLike, labels: dict[int, str] | None = None) -> Path:
    """Write ``value,name`` CSV (header included)."""
    path = Path(path)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["value", "name"])
        for value, name in sorted((labels or LABELS).items()):
            w.writerow([value, name])
    return path


def read_label_table(path: str | os.PathLike) -> dict[int, str]:
    """Read a ``value,name`` CSV; raises ValueError naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"label table {path}: file not found")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"value", "name"} <= set(reader.fieldnames):
            raise ValueError(f"label table {path}: needs the header 'value,name', got {reader.fieldnames}")
        table = {}
        for row in reader:
            try:
                table[int(row["value"])] = row["name"].strip()
            except (TypeError, ValueError):
                raise ValueError(f"label table {path}: bad row {row}") from None
    return table
