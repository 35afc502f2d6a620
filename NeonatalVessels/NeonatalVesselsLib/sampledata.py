"""The digital neonatal phantom as the module's sample data (generated locally, never downloaded).

Used by the Slicer SampleData entry and the module's self-test: :func:`ensure_phantom`
writes the phantom file contract (docs/architecture.md) into a folder once and
reuses it afterwards.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

#: Files of the phantom contract this module uses (kind -> file name).
PHANTOM_FILES = {
    "swi": "swi.nii.gz",
    "brain_mask": "swi_brain_mask.nii.gz",
    "ventricles": "swi_ventricles.nii.gz",
    "vessel_labels": "vessel_labels.nii.gz",
    "vessels_json": "vessels.json",
}


def phantom_paths(folder: str | os.PathLike) -> dict[str, Path]:
    """Paths of the phantom files in ``folder`` (kind -> path; they may not exist yet)."""
    folder = Path(folder)
    return {kind: folder / name for kind, name in PHANTOM_FILES.items()}


def ensure_phantom(folder: str | os.PathLike, seed: int = 0, preset: str = "term_3t",
                   progress=None) -> dict[str, Path]:
    """Generate the SWI phantom into ``folder`` unless it is already there; returns :func:`phantom_paths`.

    A folder that exists but lacks the SWI files is not touched (raises
    ``OutputExistsError`` through ``write_phantom`` if it is not empty).
    """
    paths = phantom_paths(folder)
    if all(p.is_file() for p in paths.values()):
        return paths
    from NeonatalBrainLib.phantom import write_phantom

    write_phantom(folder, seed=seed, preset=preset, modalities=("swi",), progress=progress)
    return paths


def truth_dmv_counts(vessels_json: str | os.PathLike) -> dict[str, int]:
    """True DMV count per hemisphere from a phantom ``vessels.json``: {'left': n, 'right': n}."""
    data = json.loads(Path(vessels_json).read_text())
    dmv = [v for v in data["vessels"] if v["region"] == "dmv"]
    return {side: sum(v["side"] == side for v in dmv) for side in ("left", "right")}
