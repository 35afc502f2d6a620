"""Vessel mask -> individual vessels: skeleton, split at junctions, labelmap, centrelines.

* The mask's connected components (cc3d, 26-connectivity) are skeletonised one
  bounding box at a time (``skimage.morphology.skeletonize``, Lee et al. 1994
  thinning in 3D), so the cost follows the vessels, not the volume.
* ``skan.Skeleton`` turns each skeleton into a graph; every path between two
  nodes (end point or junction) is one vessel.  Side branches shorter than
  ``min_spur_mm`` ending in a free end point are pruned (thinning artefacts), then
  the skeleton is rebuilt so that the paths they split merge again.
* Every mask voxel is given to the vessel whose skeleton is nearest (in mm,
  anisotropic Euclidean distance transform with feature indices), so the
  labelmap covers the mask exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import cc3d
import numpy as np
from scipy import ndimage


@dataclass
class VesselPaths:
    """Output of :func:`split_vessels`."""

    labels: np.ndarray                 #: int32 vessel id per mask voxel (0 = background)
    paths_ijk: dict[int, np.ndarray]   #: vessel id -> (N, 3) voxel indices of its skeleton path, in order


def _skeletonize(mask: np.ndarray) -> np.ndarray:
    from skimage.morphology import skeletonize

    return skeletonize(mask).astype(bool)


def _skan_paths(skel: np.ndarray, spacing):
    from skan import Skeleton

    sk = Skeleton(skel, spacing=spacing)
    paths = [sk.path_coordinates(n).astype(int) for n in range(sk.n_paths)]
    lengths = np.asarray(sk.path_lengths())
    deg = sk.degrees
    end_degrees = [(int(deg[sk.path(n)[0]]), int(deg[sk.path(n)[-1]])) for n in range(sk.n_paths)]
    return paths, lengths, end_degrees


def _prune(skel: np.ndarray, spacing, min_spur_mm: float, iterations: int = 3) -> np.ndarray:
    """Remove free-ended side branches shorter than ``min_spur_mm`` (keeps junction voxels)."""
    skel = skel.copy()
    for _ in range(iterations):
        if skel.sum() < 3:
            break
        try:
            paths, lengths, deg = _skan_paths(skel, spacing)
        except (ValueError, IndexError):
            break
        changed = False
        for p, length, ends in zip(paths, lengths, deg):
            # a spur joins a junction (degree >= 3) at one end and is free (degree 1) at the other
            if length < min_spur_mm and min(ends) == 1 and max(ends) >= 3:
                inner = p[1:] if ends[0] >= 3 else p[:-1]
                skel[tuple(inner.T)] = False
                changed = True
        if not changed:
            break
    return skel


def split_vessels(mask: np.ndarray, spacing_mm, *, min_spur_mm: float = 1.5,
                  min_path_mm: float = 0.0) -> VesselPaths:
    """Split a binary vessel mask into individual vessels (see module docstring).

    Paths shorter than ``min_path_mm`` get no id of their own: their voxels go to
    the nearest kept path of the same component (or are dropped if none).
    """
    spacing = tuple(float(s) for s in spacing_mm)
    mask = np.asarray(mask, bool)
    labels_out = np.zeros(mask.shape, np.int32)
    paths_out: dict[int, np.ndarray] = {}
    comps, n = cc3d.connected_components(mask.astype(np.uint8), connectivity=26, return_N=True)
    if n == 0:
        return VesselPaths(labels_out, paths_out)
    next_id = 1
    for comp_id, box in enumerate(ndimage.find_objects(comps), start=1):
        if box is None:
            continue
        # pad by one voxel so the skeleton never touches the box border
        box = tuple(slice(max(0, s.start - 1), min(dim, s.stop + 1)) for s, dim in zip(box, mask.shape))
        comp = comps[box] == comp_id
        skel = _skeletonize(comp)
        if skel.sum() == 0:
            # a blob thinner than the thinning's minimum: keep its most distant voxel pair as path
            skel = np.zeros_like(comp)
            skel[tuple(np.argwhere(comp)[0])] = True
        if skel.sum() >= 3:
            skel = _prune(skel, spacing, min_spur_mm)
        local_paths: list[np.ndarray] = []
        if skel.sum() >= 2:
            try:
                paths, lengths, _deg = _skan_paths(skel, spacing)
            except (ValueError, IndexError):
                paths, lengths = [np.argwhere(skel)], [0.0]
            for p, length in zip(paths, lengths):
                if length >= min_path_mm and len(p) >= 2:
                    local_paths.append(p)
        else:
            local_paths.append(np.argwhere(skel))
        if not local_paths:
            continue
        # nearest-path assignment of the component's voxels
        seeds = np.zeros(comp.shape, np.int32)
        ids = []
        for p in local_paths:
            vid = next_id
            next_id += 1
            seeds[tuple(p.T)] = vid
            paths_out[vid] = p + np.array([s.start for s in box])
            ids.append(vid)
        _, idx = ndimage.distance_transform_edt(seeds == 0, sampling=spacing, return_indices=True)
        nearest = seeds[tuple(idx)]
        region = labels_out[box]
        region[comp] = nearest[comp]
    return VesselPaths(labels_out, paths_out)


def paths_from_labels(labels: np.ndarray, spacing_mm, *, min_spur_mm: float = 1.5) -> VesselPaths:
    """Centreline paths for an existing labelmap (one skeleton path per label value).

    Used when measuring a given (edited) segmentation: each connected component of
    the binary mask is split at junctions with :func:`split_vessels`.
    """
    return split_vessels(labels > 0, spacing_mm, min_spur_mm=min_spur_mm)
