"""ROI-centred 2D axial slices of a T1 volume: the network's input, and the way back.

Definitions
-----------
* **ROI set**: ``"globus_pallidus"`` (default: bilateral globus pallidus) or
  ``"basal_ganglia"`` (the three lenticulostriate-supplied structures: caudate,
  putamen, globus pallidus, left and right).
* **Slice planes** are *axial in RAS* (constant superior coordinate z), whatever the
  T1's voxel order or obliquity: every pixel is sampled from the T1 through its
  affine (trilinear interpolation), so the same anatomy gives the same slices.
* **Slice positions**: ``n_slices`` planes at z = the quantiles
  ``(s + 0.5) / n_slices`` (s = 0..n-1) of the RAS z coordinates of the ROI voxels,
  so the planes cut through the ROI whatever its size or the slice thickness.
* **Field of view**: ``image_size x image_size`` pixels of ``spacing_mm`` centred on
  the ROI centroid (x, y) (default 48 x 48 at 1 mm: both globus pallidus and putamen
  of a term neonate, +-24 mm from the midline).  Image rows run from anterior (row 0) to posterior, columns from the
  patient's left (column 0, smaller x) to the right.
* **Intensity normalisation** (per slice, robust to scanner scaling):
  ``(value - median) / (p90 - p10)`` over the slice's pixels, clipped to [-5, 5].
* **Way back** (:func:`paint_back`): a T1 voxel belongs to slice s when the plane
  z = z_s passes through the voxel box (``|z_voxel - z_s| <= h / 2`` with ``h`` the
  voxel's extent along z); it receives the slice map bilinearly interpolated at its
  (x, y).  Voxels of no slice stay zero.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from NeonatalBrainLib import anatomy
from NeonatalBrainLib.imageio import InputError, Volume

#: ROI sets a model can be trained on: name -> ROI label names.
ROI_SETS: dict[str, tuple[str, ...]] = {
    "globus_pallidus": ("globus_pallidus_left", "globus_pallidus_right"),
    "basal_ganglia": tuple(f"{s}_{side}" for s in ("caudate", "putamen", "globus_pallidus")
                           for side in ("left", "right")),
}


@dataclass
class SliceSpec:
    """Input specification of a slice classifier (stored in the model card)."""

    roi: str = "globus_pallidus"
    image_size: int = 48
    spacing_mm: float = 1.0
    n_slices: int = 3
    channels: tuple[str, ...] = ("t1",)  # "t1" and optionally "roi" (binary ROI mask)

    def __post_init__(self) -> None:
        if self.roi not in ROI_SETS:
            raise InputError(f"ROI set '{self.roi}' unknown; choose one of {sorted(ROI_SETS)}")
        if int(self.image_size) < 16:
            raise InputError(f"image size must be >= 16 px, got {self.image_size}")
        if not float(self.spacing_mm) > 0:
            raise InputError(f"slice pixel spacing must be > 0 mm, got {self.spacing_mm}")
        if int(self.n_slices) < 1:
            raise InputError(f"number of slices must be >= 1, got {self.n_slices}")
        self.image_size, self.n_slices = int(self.image_size), int(self.n_slices)
        self.spacing_mm = float(self.spacing_mm)
        self.channels = tuple(self.channels)
        bad = set(self.channels) - {"t1", "roi"}
        if bad or not self.channels or self.channels[0] != "t1":
            raise InputError(f"channels must start with 't1' and may add 'roi', got {self.channels}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SliceSpec":
        keys = {"roi", "image_size", "spacing_mm", "n_slices", "channels"}
        return cls(**{k: v for k, v in d.items() if k in keys})


@dataclass
class SliceStack:
    """Slices of one subject.

    ``images``: (n_slices, channels, H, W) float32 network input (normalised);
    ``raw``: (n_slices, H, W) T1 intensities before normalisation;
    ``roi_mask``: (n_slices, H, W) bool, pixels inside the ROI set;
    ``z_mm``: RAS z of each plane; ``k_index``: the T1 voxel index (along the voxel
    axis closest to superior) of each plane's centre; ``centre_ras``: FOV centre
    (x, y, and ROI centroid z) in RAS mm.
    """

    images: np.ndarray
    raw: np.ndarray
    roi_mask: np.ndarray
    z_mm: np.ndarray
    k_index: np.ndarray
    centre_ras: np.ndarray
    spec: SliceSpec = field(default_factory=SliceSpec)

    def pixel_ras(self, s: int) -> np.ndarray:
        """RAS mm of every pixel of slice ``s``: (H, W, 3)."""
        return _pixel_ras(self.centre_ras, float(self.z_mm[s]), self.spec)


def roi_mask_of(labels: Volume, names: dict[int, str], roi: str,
                roi_names: tuple[str, ...] | None = None) -> np.ndarray:
    """Boolean mask of the labels that make up ROI set ``roi`` (or of the labels named
    ``roi_names``); InputError if one is missing or empty."""
    wanted = tuple(roi_names) if roi_names else ROI_SETS[roi]
    by_name = {v: k for k, v in names.items()}
    missing = [n for n in wanted if n not in by_name]
    if missing:
        raise InputError(f"ROI labels: missing {', '.join(missing)} (label table has {sorted(by_name)})")
    values = [by_name[n] for n in wanted]
    mask = np.isin(labels.array, values)
    empty = [n for n in wanted if not np.any(labels.array == by_name[n])]
    if empty:
        raise InputError(f"ROI labels: {', '.join(empty)} contain no voxel")
    return mask


def _pixel_ras(centre: np.ndarray, z: float, spec: SliceSpec) -> np.ndarray:
    n = spec.image_size
    offs = (np.arange(n) - (n - 1) / 2.0) * spec.spacing_mm
    x = centre[0] + offs[None, :]           # columns: left -> right (increasing x)
    y = centre[1] - offs[:, None]           # rows: anterior -> posterior (decreasing y)
    ras = np.empty((n, n, 3))
    ras[..., 0] = np.broadcast_to(x, (n, n))
    ras[..., 1] = np.broadcast_to(y, (n, n))
    ras[..., 2] = z
    return ras


def normalise_slice(raw: np.ndarray) -> np.ndarray:
    """Robust per-slice scaling ``(v - median) / (p90 - p10)`` clipped to [-5, 5]."""
    p10, p50, p90 = np.percentile(raw, [10, 50, 90])
    scale = p90 - p10
    if not scale > 0:
        scale = float(np.abs(raw).max()) or 1.0
    return np.clip((raw - p50) / scale, -5.0, 5.0).astype(np.float32)


def _superior_axis(affine: np.ndarray) -> int:
    return int(np.argmax(np.abs(affine[2, :3]) / np.linalg.norm(affine[:3, :3], axis=0)))


def extract_slices(t1: Volume, labels: Volume, names: dict[int, str],
                   spec: SliceSpec | None = None, roi_names: tuple[str, ...] | None = None) -> SliceStack:
    """ROI-centred axial slices of ``t1`` (see module docstring for the definitions).

    ``labels`` must lie on the T1 grid (``names``: value -> label name).  ``roi_names``
    overrides the spec's ROI set (used to place slices through other structures).
    """
    spec = spec or SliceSpec()
    if labels.shape != t1.shape or not np.allclose(labels.affine, t1.affine, atol=1e-3):
        raise InputError("ROI labels are on another grid than the T1 (shape or affine differ)")
    mask = roi_mask_of(labels, names, spec.roi, roi_names)
    ijk = np.argwhere(mask)
    ras = t1.ijk_to_ras(ijk)
    centre = ras.mean(axis=0)
    qs = (np.arange(spec.n_slices) + 0.5) / spec.n_slices
    z_planes = np.quantile(ras[:, 2], qs)
    data = np.asarray(t1.array, dtype=np.float32)
    inv = np.linalg.inv(t1.affine)
    kaxis = _superior_axis(t1.affine)
    n = spec.image_size
    raw = np.empty((spec.n_slices, n, n), np.float32)
    rmask = np.empty((spec.n_slices, n, n), bool)
    kidx = np.empty(spec.n_slices, int)
    for s, z in enumerate(z_planes):
        pr = _pixel_ras(centre, float(z), spec).reshape(-1, 3)
        vox = pr @ inv[:3, :3].T + inv[:3, 3]
        raw[s] = ndimage.map_coordinates(data, vox.T, order=1, mode="nearest").reshape(n, n)
        rmask[s] = ndimage.map_coordinates(mask.astype(np.uint8), vox.T, order=0,
                                           mode="constant", cval=0).reshape(n, n) > 0
        c = np.array([centre[0], centre[1], z])
        kidx[s] = int(np.rint((c @ inv[:3, :3].T + inv[:3, 3])[kaxis]))
    images = np.empty((spec.n_slices, len(spec.channels), n, n), np.float32)
    for s in range(spec.n_slices):
        images[s, 0] = normalise_slice(raw[s])
        if "roi" in spec.channels:
            images[s, spec.channels.index("roi")] = rmask[s]
    return SliceStack(images=images, raw=raw, roi_mask=rmask, z_mm=np.asarray(z_planes, float),
                      k_index=kidx, centre_ras=centre, spec=spec)


def slice_voxels(stack: SliceStack, t1: Volume) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each slice: (voxel indices (m, 3) the plane passes through inside the FOV,
    their fractional (row, col) pixel coordinates (m, 2))."""
    spec = stack.spec
    n = spec.image_size
    half = (n - 1) / 2.0 * spec.spacing_mm
    a = t1.affine
    h = float(np.abs(a[2, :3]).sum())  # extent of a voxel box along z
    # bounding box in voxel space of the FOV slab (8 corners of all planes)
    cx, cy = stack.centre_ras[0], stack.centre_ras[1]
    zlo, zhi = stack.z_mm.min() - h, stack.z_mm.max() + h
    corners = np.array([[x, y, z] for x in (cx - half - 1, cx + half + 1)
                        for y in (cy - half - 1, cy + half + 1) for z in (zlo, zhi)])
    cij = t1.ras_to_ijk(corners)
    lo = np.clip(np.floor(cij.min(axis=0)).astype(int) - 1, 0, None)
    hi = np.minimum(np.ceil(cij.max(axis=0)).astype(int) + 2, np.array(t1.shape))
    if np.any(hi <= lo):
        return [(np.zeros((0, 3), int), np.zeros((0, 2))) for _ in stack.z_mm]
    grid = np.stack(np.meshgrid(*[np.arange(l, u) for l, u in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3)
    ras = t1.ijk_to_ras(grid)
    col = (ras[:, 0] - cx) / spec.spacing_mm + (n - 1) / 2.0
    row = (cy - ras[:, 1]) / spec.spacing_mm + (n - 1) / 2.0
    inside = (col >= -0.5) & (col <= n - 0.5) & (row >= -0.5) & (row <= n - 0.5)
    out = []
    for z in stack.z_mm:
        sel = inside & (np.abs(ras[:, 2] - z) <= h / 2.0)
        out.append((grid[sel], np.stack([row[sel], col[sel]], axis=1)))
    return out


def paint_back(maps: np.ndarray, stack: SliceStack, t1: Volume) -> np.ndarray:
    """Paint per-slice 2D maps (n_slices, H, W) back into a float32 array on the T1 grid.

    Each voxel a plane passes through gets the map bilinearly interpolated at its
    (x, y); where planes share a voxel the maximum is kept; other voxels are 0.
    """
    out = np.zeros(t1.shape, np.float32)
    for s, (vox, rc) in enumerate(slice_voxels(stack, t1)):
        if len(vox) == 0:
            continue
        vals = ndimage.map_coordinates(np.asarray(maps[s], np.float32), rc.T, order=1, mode="nearest")
        idx = tuple(vox.T)
        out[idx] = np.maximum(out[idx], vals)
    return out


def roi_labels_from_volume(labels: Volume, names: dict[int, str] | None = None) -> tuple[Volume, dict[int, str]]:
    """(labels, names) with the project's label table as default names."""
    return labels, dict(names) if names else dict(anatomy.LABELS)
