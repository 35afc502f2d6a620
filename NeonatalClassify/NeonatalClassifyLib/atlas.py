"""Labelled neonatal T1 atlases for deep grey-matter ROI segmentation.

An atlas is one or several labelled neonates ("atlas subjects"): a T1 image and
an integer labelmap on the same grid, plus a label table ``value -> name``.

Folder format (user atlases and the built-in ones alike)::

    ATLAS/
      atlas.csv    header subject_id,t1,labels  (paths relative to ATLAS/)
      labels.csv   header value,name            (names as in NeonatalBrainLib.anatomy,
                                                 e.g. globus_pallidus_left; others allowed)
      <files named in atlas.csv>                (NIfTI/NRRD/MetaImage, any voxel order)

The label table must name the eight deep grey-matter ROIs
(``anatomy.DEEP_GREY_ROIS``: globus_pallidus, putamen, caudate, thalamus, each
``_left``/``_right``, left = the subject's left = negative RAS x).  Label values
may be anything; they are mapped by *name* onto ``anatomy.LABEL_VALUES``.

Built-in atlases (:data:`BUILTIN_ATLASES`) live in ``Resources/Atlases/<name>/``
of the extension.  The folder is searched in, in order: the folders listed in the
environment variable ``NEONATALBRAIN_ATLAS_PATH`` (``os.pathsep``-separated
folders that contain ``<name>/``), the repository's ``Resources/Atlases`` (source
checkout or editable install), and ``NeonatalClassifyLib/Atlases`` (where a
packaged install may ship them).

``atlas_checksum`` is the SHA-256 over the atlas files (atlas.csv, labels.csv,
then every referenced image in atlas.csv order, each preceded by its relative
path), so a trained model can record exactly which atlas it used.
"""
from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from NeonatalBrainLib import anatomy
from NeonatalBrainLib.imageio import InputError, Volume, check_same_grid, load_volume, validate_scalar_volume

#: Built-in atlases: name -> one-line description.
BUILTIN_ATLASES: dict[str, str] = {
    "neonatal-phantom": (
        "SYNTHETIC atlas built by scripts/build_atlas.py from the project's digital neonatal "
        "phantom (term neonates, 1 mm, no noise or bias field); not derived from any real subject"),
}

DEFAULT_ATLAS = "neonatal-phantom"

#: Names every atlas label table must contain.
REQUIRED_LABEL_NAMES: tuple[str, ...] = anatomy.DEEP_GREY_ROIS

_ENV_PATH = "NEONATALBRAIN_ATLAS_PATH"


@dataclass
class Atlas:
    """A labelled atlas.

    ``subjects``: list of ``(t1, labels)`` Volume pairs (each pair on one grid);
    ``label_table``: atlas label value -> name; ``name``: display name (folder
    name or built-in name); ``checksum``: SHA-256 (see :func:`atlas_checksum`);
    ``subject_ids``: one id per subject; ``folder``: where it was read from.
    """

    name: str
    subjects: list[tuple[Volume, Volume]]
    label_table: dict[int, str]
    checksum: str = ""
    subject_ids: list[str] = field(default_factory=list)
    folder: Path | None = None

    def __post_init__(self) -> None:
        if not self.subject_ids:
            self.subject_ids = [f"atlas{i + 1:02d}" for i in range(len(self.subjects))]
        if not self.checksum:
            self.checksum = atlas_checksum(self)

    def roi_values(self) -> dict[str, int]:
        """Required ROI name -> this atlas's label value."""
        by_name = {name: value for value, name in self.label_table.items()}
        return {name: by_name[name] for name in REQUIRED_LABEL_NAMES}


# ----------------------------------------------------------------------------- locating
def atlas_search_path() -> list[Path]:
    """Folders searched for built-in atlases, in order (see module docstring)."""
    paths = [Path(p) for p in os.environ.get(_ENV_PATH, "").split(os.pathsep) if p]
    here = Path(__file__).resolve().parent
    paths.append(here.parent.parent / "Resources" / "Atlases")  # repository / extension root
    paths.append(here / "Atlases")  # packaged install
    return paths


def find_builtin_atlas(name: str) -> Path:
    """Folder of the built-in atlas ``name``; InputError if unknown or not installed."""
    if name not in BUILTIN_ATLASES:
        raise InputError(
            f"atlas {name!r}: not a built-in atlas ({', '.join(sorted(BUILTIN_ATLASES))}) "
            "and not an existing folder")
    for base in atlas_search_path():
        folder = base / name
        if (folder / "atlas.csv").is_file():
            return folder
    searched = ", ".join(str(p) for p in atlas_search_path())
    raise InputError(f"atlas {name!r}: built-in atlas files not found (searched {searched}); "
                     f"set {_ENV_PATH} to the folder holding {name}/")


# ----------------------------------------------------------------------------- reading
def _read_atlas_csv(folder: Path) -> list[tuple[str, Path, Path]]:
    path = folder / "atlas.csv"
    if not path.is_file():
        raise InputError(f"atlas {folder}: atlas.csv not found (need subject_id,t1,labels)")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in ("subject_id", "t1", "labels") if c not in cols]
        if missing:
            raise InputError(f"atlas {path}: missing column(s) {', '.join(missing)} (header is {cols})")
        rows = []
        for n, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            if not row["subject_id"] or not row["t1"] or not row["labels"]:
                raise InputError(f"atlas {path}: line {n} has an empty subject_id, t1 or labels")
            t1, labels = folder / row["t1"], folder / row["labels"]
            for kind, p in (("t1", t1), ("labels", labels)):
                if not p.is_file():
                    raise InputError(f"atlas {path}: line {n} ({row['subject_id']}): {kind} file {p} not found")
            rows.append((row["subject_id"], t1, labels))
    if not rows:
        raise InputError(f"atlas {path}: lists no subjects")
    ids = [r[0] for r in rows]
    if len(set(ids)) != len(ids):
        raise InputError(f"atlas {path}: duplicate subject_id")
    return rows


def validate_label_table(table: dict[int, str], source: str) -> None:
    """InputError unless ``table`` names every required ROI exactly once."""
    names = list(table.values())
    missing = [n for n in REQUIRED_LABEL_NAMES if n not in names]
    if missing:
        raise InputError(f"{source}: label table lacks required name(s) {', '.join(missing)}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"{source}: label table names {', '.join(dup)} more than once")
    if 0 in table:
        raise InputError(f"{source}: label value 0 is reserved for background")


def validate_atlas_subject(t1: Volume, labels: Volume, table: dict[int, str], source: str) -> Volume:
    """Check one atlas subject; returns its labels as an integer Volume."""
    validate_scalar_volume(t1, f"{source} T1")
    validate_scalar_volume(labels, f"{source} labels")
    check_same_grid(t1, labels, f"{source} T1", f"{source} labels")
    lab = labels.array
    if np.issubdtype(lab.dtype, np.floating):
        if not np.allclose(lab, np.round(lab)):
            raise InputError(f"{source} labels: values are not integers")
        lab = np.round(lab)
    lab = lab.astype(np.int32)
    present = set(np.unique(lab).tolist())
    roi_values = {name: v for v, name in table.items() if name in REQUIRED_LABEL_NAMES}
    absent = [name for name, v in roi_values.items() if v not in present]
    if absent:
        raise InputError(f"{source} labels: no voxels carry {', '.join(absent)}")
    return labels.with_array(lab)


def load_atlas(name_or_folder: "str | os.PathLike | Atlas" = DEFAULT_ATLAS) -> Atlas:
    """Load a built-in atlas by name or a user atlas folder (see module docstring).

    Raises InputError naming the problem: unknown name, missing atlas.csv/labels.csv
    or referenced files, labels on another grid than their T1, label table lacking
    a required ROI name, an ROI label absent from a subject's labelmap.
    """
    if isinstance(name_or_folder, Atlas):
        return name_or_folder
    text = os.fspath(name_or_folder)
    folder = Path(text)
    if folder.is_dir():
        display = folder.resolve().name
    elif text in BUILTIN_ATLASES:
        folder, display = find_builtin_atlas(text), text
    elif folder.exists():
        raise InputError(f"atlas {folder}: is a file; give an atlas folder (atlas.csv, labels.csv) "
                         "or a built-in name")
    else:
        raise InputError(f"atlas {text!r}: no such folder and not a built-in atlas "
                         f"({', '.join(sorted(BUILTIN_ATLASES))})")
    rows = _read_atlas_csv(folder)
    table_path = folder / "labels.csv"
    if not table_path.is_file():
        raise InputError(f"atlas {folder}: labels.csv not found (need value,name)")
    try:
        table = anatomy.read_label_table(table_path)
    except ValueError as exc:
        raise InputError(f"atlas {folder}: {exc}") from None
    validate_label_table(table, f"atlas {folder} labels.csv")
    subjects = []
    for sid, t1_path, lab_path in rows:
        src = f"atlas {display} subject {sid}"
        t1 = load_volume(t1_path, f"{src} T1")
        labels = load_volume(lab_path, f"{src} labels")
        labels = validate_atlas_subject(t1, labels, table, src)
        subjects.append((t1.with_array(t1.array.astype(np.float32)), labels))
    checksum = _files_checksum(folder, rows)
    return Atlas(name=display, subjects=subjects, label_table=table, checksum=checksum,
                 subject_ids=[r[0] for r in rows], folder=folder)


# ----------------------------------------------------------------------------- checksums
def _files_checksum(folder: Path, rows: list[tuple[str, Path, Path]]) -> str:
    h = hashlib.sha256()
    files = [folder / "atlas.csv", folder / "labels.csv"]
    for _, t1, lab in rows:
        files += [t1, lab]
    for f in files:
        h.update(os.path.relpath(f, folder).replace(os.sep, "/").encode() + b"\0")
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def atlas_checksum(atlas: "Atlas | str | os.PathLike") -> str:
    """SHA-256 (hex) identifying an atlas.

    For an atlas read from a folder: over its files (atlas.csv, labels.csv, then each
    subject's T1 and labels file in atlas.csv order, each prefixed by its relative
    path).  For an in-memory atlas: over the label table and each subject's arrays
    (dtype, shape, bytes) and affines.
    """
    if not isinstance(atlas, Atlas):
        atlas = load_atlas(atlas)
        return atlas.checksum
    if atlas.folder is not None and (atlas.folder / "atlas.csv").is_file():
        return _files_checksum(atlas.folder, _read_atlas_csv(atlas.folder))
    h = hashlib.sha256()
    for value, name in sorted(atlas.label_table.items()):
        h.update(f"{value},{name}\n".encode())
    for t1, lab in atlas.subjects:
        for vol in (t1, lab):
            a = np.ascontiguousarray(vol.array)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
            h.update(np.round(vol.affine, 6).astype(np.float64).tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- writing
def write_atlas(folder: "str | os.PathLike", subjects: list[tuple[str, Volume, Volume]],
                label_table: dict[int, str] | None = None) -> Path:
    """Write an atlas folder (atlas.csv, labels.csv, ``<id>_t1.nii.gz``, ``<id>_labels.nii.gz``).

    The folder must be new or empty (nothing is overwritten).  T1 is stored as int16
    after scaling to [0, 1000] (atlas intensities are normalised anyway), labels as uint8.
    """
    from NeonatalBrainLib.imageio import save_volume
    from NeonatalBrainLib.outputs import staged_output

    table = dict(label_table or anatomy.LABELS)
    validate_label_table(table, "write_atlas")
    with staged_output(folder) as stage:
        rows = []
        for sid, t1, lab in subjects:
            a = t1.array.astype(np.float64)
            lo, hi = float(a.min()), float(np.percentile(a, 99.9))
            scaled = np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1.2) * 1000.0
            save_volume(t1.with_array(np.round(scaled).astype(np.int16)), stage / f"{sid}_t1.nii.gz")
            save_volume(lab.with_array(lab.array.astype(np.uint8)), stage / f"{sid}_labels.nii.gz")
            rows.append((sid, f"{sid}_t1.nii.gz", f"{sid}_labels.nii.gz"))
        with open(stage / "atlas.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["subject_id", "t1", "labels"])
            w.writerows(rows)
        anatomy.write_label_table(stage / "labels.csv", table)
    return Path(folder)


__all__ = ["Atlas", "BUILTIN_ATLASES", "DEFAULT_ATLAS", "REQUIRED_LABEL_NAMES", "load_atlas",
           "atlas_checksum", "atlas_search_path", "find_builtin_atlas", "write_atlas",
           "validate_label_table", "validate_atlas_subject"]
