"""Volume I/O and input validation shared by both modules.

Conventions used everywhere in NeonatalBrain
--------------------------------------------
* A :class:`Volume` holds ``array`` indexed ``[i, j, k]`` (the NIfTI/nibabel
  voxel order, *not* SimpleITK's ``[k, j, i]``) and ``affine``, the 4x4 matrix
  that maps homogeneous voxel indices ``(i, j, k, 1)`` to **RAS millimetres**.
* RAS (NIfTI, 3D Slicer): +x points to the patient's Right, +y Anterior,
  +z Superior.  So the patient's left hemisphere has smaller (more negative) x
  than the midline, the right hemisphere larger x.  DICOM/ITK/SimpleITK use
  LPS, which flips the signs of x and y.

All readers go through SimpleITK (NIfTI, NRRD, MetaImage, DICOM series
folders), then convert LPS to RAS, so one code path handles every format,
voxel order and oblique direction.  Writers also use SimpleITK; its gzip
output has a fixed header, so the same volume gives the same bytes.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

#: Matrix converting LPS world coordinates to RAS (and back: it is its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: File name endings the readers accept (besides a folder holding one DICOM series).
SUPPORTED_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


class InputError(ValueError):
    """Bad input: the message names the input and the problem."""


@dataclass
class Volume:
    """A 3D image on a grid: ``array[i, j, k]`` plus ``affine`` (voxel -> RAS mm)."""

    array: np.ndarray
    affine: np.ndarray

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=float)
        if self.affine.shape != (4, 4):
            raise InputError(f"affine must be 4x4, got shape {self.affine.shape}")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def spacing_mm(self) -> np.ndarray:
        """Voxel size along i, j, k in mm (norms of the affine's columns)."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix of unit column vectors: RAS direction of the i, j, k axes."""
        return self.affine[:3, :3] / self.spacing_mm

    def ijk_to_ras(self, ijk: np.ndarray) -> np.ndarray:
        """Voxel indices (N x 3, may be fractional) -> RAS mm (N x 3)."""
        ijk = np.atleast_2d(np.asarray(ijk, dtype=float))
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def ras_to_ijk(self, ras: np.ndarray) -> np.ndarray:
        """RAS mm (N x 3) -> fractional voxel indices (N x 3)."""
        ras = np.atleast_2d(np.asarray(ras, dtype=float))
        inv = np.linalg.inv(self.affine)
        return ras @ inv[:3, :3].T + inv[:3, 3]

    def with_array(self, array: np.ndarray) -> "Volume":
        """A new volume on the same grid holding ``array``."""
        if tuple(array.shape) != self.shape:
            raise InputError(f"array shape {array.shape} does not match grid {self.shape}")
        return Volume(array, self.affine.copy())

    def same_grid(self, other: "Volume", atol_mm: float = 1e-3) -> bool:
        return self.shape == other.shape and np.allclose(self.affine, other.affine, atol=atol_mm)


# ----------------------------------------------------------------------------- reading
def _sitk():
    import SimpleITK as sitk  # imported lazily: keeps `import NeonatalBrainLib` light

    return sitk


def affine_from_sitk(image) -> np.ndarray:
    """RAS affine (voxel i,j,k -> RAS mm) of a SimpleITK image."""
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    origin = np.asarray(image.GetOrigin(), dtype=float)
    lps = np.eye(4)
    lps[:3, :3] = direction * spacing
    lps[:3, 3] = origin
    return LPS_TO_RAS @ lps


def volume_from_sitk(image) -> Volume:
    sitk = _sitk()
    if image.GetDimension() != 3:
        raise InputError(f"expected a 3D image, got {image.GetDimension()}D")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"expected a scalar image, got {image.GetNumberOfComponentsPerPixel()} components per voxel"
        )
    array = np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0))
    return Volume(array, affine_from_sitk(image))


def volume_to_sitk(volume: Volume):
    """SimpleITK image (LPS) of a :class:`Volume`; the affine must have no shear."""
    sitk = _sitk()
    array = np.asarray(volume.array)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    lps = LPS_TO_RAS @ volume.affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise InputError("affine has shear; only rotations and scalings can be stored")
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(d) for d in direction.ravel()])
    image.SetOrigin([float(o) for o in lps[:3, 3]])
    return image


def _read_dicom_series(folder: Path):
    sitk = _sitk()
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise InputError(f"{folder}: folder holds no DICOM series")
    if len(series) > 1:
        raise InputError(f"{folder}: folder holds {len(series)} DICOM series; give one series per folder")
    files = reader.GetGDCMSeriesFileNames(str(folder), series[0])
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    image = reader.Execute()
    # every image this product analyses is MR (SWI, T1): a CT or PET series is refused by name
    modality = reader.GetMetaData(0, "0008|0060").strip() if reader.HasMetaDataKey(0, "0008|0060") else ""
    if modality and modality.upper() != "MR":
        raise InputError(f"{folder}: DICOM modality {modality}, not MR (an SWI or T1 series is expected)")
    return image


def load_volume(path: str | os.PathLike, name: str | None = None) -> Volume:
    """Read a NIfTI (-1 or -2) / NRRD / MetaImage file or a DICOM series folder into RAS.

    ``name`` (e.g. "SWI") is used in error messages.  Raises :class:`InputError`
    for a missing, unreadable, corrupt, non-3D or non-scalar input.
    """
    sitk = _sitk()
    path = Path(path)
    label = f"{name} ({path})" if name else str(path)
    if not path.exists():
        raise InputError(f"{label}: file not found")
    if not path.is_dir() and _is_nifti2(path):
        return _load_nifti2(path, label)
    if not path.is_dir():
        _check_nifti1_complete(path, label)
    try:
        image = _read_dicom_series(path) if path.is_dir() else sitk.ReadImage(str(path))
    except InputError:
        raise
    except RuntimeError as exc:  # SimpleITK reports corrupt/unknown files this way
        first = str(exc).strip().splitlines()
        detail = next((ln for ln in first if "ERROR" in ln or "rror" in ln), first[-1] if first else "")
        if "orthonormal direction cosines" in detail:
            raise InputError(f"{label}: the image axes are not orthogonal (a sheared affine, e.g. a gantry-tilted "
                             "acquisition); resample it onto an orthogonal grid first") from exc
        raise InputError(f"{label}: cannot be read as an image (corrupt or unsupported file): {detail[:200]}") from exc
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    try:
        return volume_from_sitk(image)
    except InputError as exc:
        raise InputError(f"{label}: {exc}") from None


def _is_nifti2(path: Path) -> bool:
    """Whether ``path`` (``.nii`` / ``.nii.gz``) is a NIfTI-2 file (header size 540), which
    SimpleITK does not read."""
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return False
    import gzip
    import struct

    try:
        with (gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")) as f:
            head = f.read(4)
    except OSError:
        return False        # unreadable: SimpleITK says so below
    return len(head) == 4 and 540 in (struct.unpack("<i", head)[0], struct.unpack(">i", head)[0])


def _check_nifti1_complete(path: Path, label: str) -> None:
    """Raise :class:`InputError` when a single-file NIfTI-1 (``.nii`` / ``.nii.gz``) holds fewer
    bytes than its header declares (``vox_offset`` + the voxels x ``bitpix`` / 8): a truncated
    copy or download, which SimpleITK reads without an error, the missing voxels as 0.  A
    ``.nii.gz`` whose gzip trailer (``ISIZE``: the uncompressed size mod 2^32) equals that size is
    taken as complete; any other is decompressed to count its bytes.  Files that are not single
    NIfTI-1 files are left to the reader."""
    import gzip
    import struct
    import zlib

    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return
    gz = name.endswith(".gz")
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            head = f.read(348)
    except (OSError, EOFError, zlib.error):
        return              # unreadable: the reader says so
    if len(head) < 348:
        return
    for order in "<>":
        if struct.unpack(order + "i", head[:4])[0] == 348:
            break
    else:
        return
    dim = struct.unpack(order + "8h", head[40:56])
    bitpix = struct.unpack(order + "h", head[72:74])[0]
    vox_offset = struct.unpack(order + "f", head[108:112])[0]
    if head[344:347] != b"n+1" or not 1 <= dim[0] <= 7 or min(dim[1:dim[0] + 1]) < 1 or bitpix < 1:
        return
    expected = int(vox_offset) + int(np.prod(dim[1:dim[0] + 1], dtype=np.int64)) * bitpix // 8
    if gz:
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            if struct.unpack("<I", f.read(4))[0] == expected % 2**32:
                return
        size = 0
        try:
            with gzip.open(path, "rb") as f:
                while chunk := f.read(1 << 22):
                    size += len(chunk)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"{label}: the compressed file is truncated or corrupt ({exc}); "
                             "copy or export it again") from None
    else:
        size = path.stat().st_size
    if size < expected:
        raise InputError(f"{label}: the file is truncated: it holds {size} bytes where its header "
                         f"declares {expected}; copy or export it again")


def _load_nifti2(path: Path, label: str) -> Volume:
    """A NIfTI-2 file through nibabel (its affine is voxel -> RAS mm, as :class:`Volume`'s);
    a trailing axis of length 1 is dropped, as for NIfTI-1."""
    import nibabel as nib

    try:
        image = nib.load(str(path))
        array = np.asarray(image.dataobj)
    except Exception as exc:     # nibabel raises several types for corrupt files
        raise InputError(f"{label}: cannot be read as an image (corrupt or unsupported NIfTI-2 file): "
                         f"{str(exc)[:200]}") from exc
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise InputError(f"{label}: expected a 3D image, got {array.ndim}D")
    return Volume(np.ascontiguousarray(array), np.asarray(image.affine, float))


def save_volume(volume: Volume, path: str | os.PathLike) -> Path:
    """Write a volume (NIfTI ``.nii/.nii.gz``, NRRD, MetaImage), compressing where supported."""
    sitk = _sitk()
    path = Path(path)
    sitk.WriteImage(volume_to_sitk(volume), str(path), True)
    return path


# ----------------------------------------------------------------------------- validation
def validate_scalar_volume(volume: Volume, name: str = "image", *, allow_constant: bool = False) -> None:
    """Raise :class:`InputError` naming the problem unless ``volume`` is a usable 3D scalar image.

    Checks: exactly 3 dimensions, at least 2 voxels along each, numeric type, finite
    values, not empty/constant, positive finite spacing, invertible affine.
    """
    a = volume.array
    if a.ndim != 3:
        raise InputError(f"{name}: expected a 3D image, got {a.ndim}D with shape {a.shape}")
    if min(a.shape) < 2:
        one = " (a single slice: give the whole series, e.g. the DICOM folder)" if sorted(a.shape)[1] >= 2 else ""
        raise InputError(f"{name}: image is degenerate, shape {a.shape} (need >= 2 voxels along each axis){one}")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise InputError(f"{name}: voxel type {a.dtype} is not numeric")
    spacing = volume.spacing_mm
    if not np.all(np.isfinite(volume.affine)):
        raise InputError(f"{name}: affine contains NaN/Inf")
    if np.any(spacing <= 1e-6) or not np.all(np.isfinite(spacing)):
        raise InputError(f"{name}: voxel spacing must be positive, got {np.round(spacing, 6).tolist()} mm")
    if abs(np.linalg.det(volume.affine[:3, :3])) < 1e-9:
        raise InputError(f"{name}: affine is singular (missing or degenerate voxel spacing/direction)")
    if np.issubdtype(a.dtype, np.floating):
        bad = ~np.isfinite(a)
        if bad.any():
            raise InputError(f"{name}: {int(bad.sum())} voxels are NaN or Inf")
    if a.size == 0:
        raise InputError(f"{name}: image is empty")
    if not allow_constant:
        lo, hi = (float(a.min()), float(a.max()))
        if hi == lo:
            what = "empty (all zero)" if hi == 0 else f"constant (every voxel = {hi:g})"
            raise InputError(f"{name}: image is {what}")


def check_same_grid(reference: Volume, other: Volume, reference_name: str, other_name: str,
                    atol_mm: float = 1e-3) -> None:
    """Raise :class:`InputError` unless ``other`` lies on exactly ``reference``'s grid."""
    if other.shape != reference.shape:
        raise InputError(
            f"{other_name} is on another grid than {reference_name}: shape {other.shape} vs {reference.shape}"
        )
    if not np.allclose(other.affine, reference.affine, atol=atol_mm):
        raise InputError(
            f"{other_name} is on another grid than {reference_name}: affines differ "
            f"(max difference {np.abs(other.affine - reference.affine).max():.4g} mm)"
        )


def load_mask(path: str | os.PathLike, reference: Volume, name: str, reference_name: str) -> np.ndarray:
    """Read a mask/label file that must lie on ``reference``'s grid; returns its array."""
    vol = load_volume(path, name)
    check_same_grid(reference, vol, reference_name, name)
    return vol.array


# ----------------------------------------------------------------------------- misc
def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (or of every file of a folder, in sorted order)."""
    h = hashlib.sha256()
    path = Path(path)
    files: Iterable[Path] = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()


def axis_codes(affine: np.ndarray) -> str:
    """Orientation code of the voxel axes, e.g. 'RAS', 'LPS', 'PSR' (nearest anatomical axis)."""
    letters = (("L", "R"), ("P", "A"), ("I", "S"))
    out = []
    for col in np.asarray(affine)[:3, :3].T:
        axis = int(np.argmax(np.abs(col)))
        out.append(letters[axis][1] if col[axis] > 0 else letters[axis][0])
    return "".join(out)


def resample_to_grid(moving: Volume, reference: Volume, *, interpolation: str = "linear",
                     default_value: float = 0.0) -> Volume:
    """Resample ``moving`` onto ``reference``'s grid through world (RAS) coordinates.

    ``interpolation``: "linear", "nearest" (labels) or "bspline".
    """
    sitk = _sitk()
    interp = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor,
              "bspline": sitk.sitkBSpline}[interpolation]
    out = sitk.Resample(volume_to_sitk(moving), volume_to_sitk(reference.with_array(
        np.zeros(reference.shape, np.uint8))), sitk.Transform(), interp, default_value)
    return volume_from_sitk(out)


def grid_summary(volume: Volume) -> dict:
    """JSON-ready description of a grid (for provenance records)."""
    return {
        "shape": [int(s) for s in volume.shape],
        "spacing_mm": [round(float(s), 6) for s in volume.spacing_mm],
        "orientation": axis_codes(volume.affine),
        "affine_ras": np.round(volume.affine, 6).tolist(),
    }


def zero_padding_box(array: np.ndarray) -> tuple[slice, slice, slice] | None:
    """The box left when the planes of exact zeros at the array's faces are taken away (a field of
    view padded with 0 when a scan was resampled onto a larger grid), or None when no face has
    such a plane (or the array is all 0).  Only whole planes count: zeros inside the box, or a
    slanted zero border from a rotated resampling, stay."""
    array = np.asarray(array)
    faces = [np.take(array, index, axis=axis) for axis in range(array.ndim) for index in (0, -1)]
    if all(np.any(face) for face in faces):         # the usual scan: only its faces are read
        return None
    nonzero = array != 0
    box = []
    for axis in range(array.ndim):
        signal = np.flatnonzero(np.any(nonzero, axis=tuple(a for a in range(array.ndim) if a != axis)))
        if signal.size == 0:
            return None
        box.append(slice(int(signal[0]), int(signal[-1]) + 1))
    return tuple(box)


def crop_volume(volume: Volume, box: tuple[slice, ...]) -> Volume:
    """The part of ``volume`` in the voxel ``box`` (slices with unit step), with the affine of
    its first voxel: every voxel keeps its RAS position."""
    affine = volume.affine.copy()
    affine[:3, 3] = volume.ijk_to_ras([[b.start for b in box]])[0]
    return Volume(np.ascontiguousarray(np.asarray(volume.array)[box]), affine)


def uncrop_array(array: np.ndarray, box: tuple[slice, ...], shape: tuple[int, ...]) -> np.ndarray:
    """``array`` (the part of a grid in ``box``, :func:`crop_volume`) put back on the whole grid of
    ``shape``, 0 outside the box."""
    out = np.zeros(shape, np.asarray(array).dtype)
    out[box] = array
    return out


__all__: Sequence[str] = (
    "InputError", "Volume", "load_volume", "save_volume", "load_mask", "validate_scalar_volume",
    "check_same_grid", "sha256_file", "axis_codes", "resample_to_grid", "grid_summary",
    "volume_from_sitk", "volume_to_sitk", "affine_from_sitk", "LPS_TO_RAS",
)


def canonical_axes(affine: np.ndarray) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """Voxel-axis permutation and flips that bring a grid closest to RAS order (R, A, S increasing).

    ``perm[r]`` is the voxel axis nearest to RAS axis ``r``; ``flip[r]`` when it runs the
    other way.  Thinning depends on the voxel order; doing it in this canonical order
    makes the skeleton depend on the anatomy, not on how the image was stored.
    """
    d = np.abs(np.asarray(affine, float)[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0))
    perm = [-1, -1, -1]
    for r, a in sorted(((r, a) for r in range(3) for a in range(3)), key=lambda ra: -d[ra[0], ra[1]]):
        if perm[r] < 0 and a not in perm:
            perm[r] = a
    flip = tuple(bool(affine[r, perm[r]] < 0) for r in range(3))
    return tuple(perm), flip


def to_canonical_order(arr: np.ndarray, perm, flip) -> np.ndarray:
    """``arr`` transposed / flipped into the order of :func:`canonical_axes` (``perm``, ``flip``)."""
    out = np.transpose(arr, perm)
    return np.ascontiguousarray(np.flip(out, [r for r in range(3) if flip[r]]) if any(flip) else out)


def from_canonical_order(arr: np.ndarray, perm, flip) -> np.ndarray:
    """Inverse of :func:`to_canonical_order`."""
    out = np.flip(arr, [r for r in range(3) if flip[r]]) if any(flip) else arr
    return np.ascontiguousarray(np.transpose(out, np.argsort(perm)))


def ras_view(arr: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(view, spacing_mm)``: ``arr`` (3-D, on the grid of ``affine``) as a view, no copy, whose
    axes run along the nearest R, A, S axes with increasing coordinate (:func:`canonical_axes`),
    and the voxel sizes along those axes.  For pictures: an oblique grid is shown on its nearest
    axes, not resampled."""
    perm, flip = canonical_axes(affine)
    out = np.transpose(np.asarray(arr), perm)
    if any(flip):
        out = np.flip(out, [r for r in range(3) if flip[r]])
    spacing = np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0)[list(perm)]
    return out, spacing


def radiological_axial_view(arr: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(view, spacing_mm)``: ``arr`` as axial pictures in radiological convention, a view
    ``[slice, row, column]``: slices from inferior to superior, rows from anterior (top of the
    picture) to posterior, columns from the patient's right (left of the picture) to the
    patient's left, whatever the storage order (nearest axes, :func:`ras_view`).  ``spacing_mm``:
    voxel size along (slice, row, column)."""
    view, spacing = ras_view(arr, affine)
    return np.transpose(view, (2, 1, 0))[:, ::-1, ::-1], spacing[[2, 1, 0]]


def reorient_to_canonical(volume: "Volume") -> tuple["Volume", tuple]:
    """``volume`` in :func:`canonical_axes` order (lossless transpose / flip, matching affine).

    Returns the reoriented volume and ``(perm, flip)`` for :func:`from_canonical_order`.
    """
    perm, flip = canonical_axes(volume.affine)
    aff = np.eye(4)
    aff[:3, 3] = volume.affine[:3, 3]
    for r in range(3):
        col = volume.affine[:3, perm[r]]
        if flip[r]:
            aff[:3, 3] += col * (volume.shape[perm[r]] - 1)
            col = -col
        aff[:3, r] = col
    return Volume(to_canonical_order(np.asarray(volume.array), perm, flip), aff), (perm, flip)
