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


def _simple_path(skel: np.ndarray) -> np.ndarray | None:
    """Ordered voxels of a skeleton that is one unbranched open curve, else None (use skan)."""
    pts = np.argwhere(skel)
    if len(pts) < 2 or len(pts) > 5000:
        return None
    nb = ndimage.convolve(skel.astype(np.uint8), np.ones((3, 3, 3), np.uint8), mode="constant")[skel] - 1
    if nb.max() > 2 or int((nb == 1).sum()) != 2:
        return None
    index = {tuple(p): n for n, p in enumerate(pts)}
    start = int(np.flatnonzero(nb == 1)[0])
    order = [start]
    seen = {start}
    offsets = [np.array(o) for o in np.ndindex(3, 3, 3) if o != (1, 1, 1)]
    cur = start
    while True:
        nxt = None
        for o in offsets:
            q = tuple(pts[cur] + o - 1)
            n = index.get(q)
            if n is not None and n not in seen:
                nxt = n
                break
        if nxt is None:
            break
        order.append(nxt)
        seen.add(nxt)
        cur = nxt
    if len(order) != len(pts):
        return None
    return pts[order]


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
        simple = _simple_path(skel)
        if simple is None and skel.sum() >= 3:
            skel = _prune(skel, spacing, min_spur_mm)
            simple = _simple_path(skel)
        local_paths: list[np.ndarray] = []
        if simple is not None:
            local_paths.append(simple)
        elif skel.sum() >= 2:
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


def paths_from_labels(labels: np.ndarray, spacing_mm) -> VesselPaths:
    """One vessel per label value of a vessel-id labelmap (e.g. an edited ``vessel_labels``).

    The centreline of each label is the longest path of its skeleton (skan), so the
    user's vessel identities are kept: erasing one label removes exactly one vessel.
    """
    from skan import Skeleton

    spacing = tuple(float(s) for s in spacing_mm)
    labels = np.asarray(labels).astype(np.int64)
    out = np.zeros(labels.shape, np.int32)
    paths: dict[int, np.ndarray] = {}
    for value, box in enumerate(ndimage.find_objects(labels), start=0):
        vid = value + 1
        if box is None:
            continue
        box = tuple(slice(max(0, s.start - 1), min(dim, s.stop + 1)) for s, dim in zip(box, labels.shape))
        comp = labels[box] == vid
        out[box][comp] = vid
        skel = _skeletonize(comp)
        offset = np.array([s.start for s in box])
        if skel.sum() < 2:
            pts = np.argwhere(comp)
            paths[vid] = pts[[0, -1]] + offset if len(pts) >= 2 else pts + offset
            continue
        simple = _simple_path(skel)
        if simple is None:
            try:
                sk = Skeleton(skel, spacing=spacing)
                lengths = np.asarray(sk.path_lengths())
                simple = sk.path_coordinates(int(np.argmax(lengths))).astype(int)
            except (ValueError, IndexError):
                simple = np.argwhere(skel)
        paths[vid] = simple + offset
    return VesselPaths(out, paths)


def _end_direction(p: np.ndarray, at_end: bool, span_mm: float = 2.0) -> np.ndarray:
    """Unit vector pointing out of the polyline at its first (``at_end=False``) or last point."""
    q = p[::-1] if not at_end else p
    s = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(q[::-1], axis=0), axis=1))])
    k = int(np.searchsorted(s, span_mm))
    k = min(max(k, 1), len(q) - 1)
    d = q[-1] - q[-1 - k]
    n = np.linalg.norm(d)
    return d / n if n > 1e-9 else np.zeros(3)


def merge_fragments(centrelines: dict[int, np.ndarray], labels: np.ndarray, *, max_gap_mm: float = 3.0,
                    max_angle_deg: float = 30.0, can_join=None,
                    gap_ok=None) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Join collinear pieces of one vein that thresholding broke apart.

    Two centrelines are joined end to end when their ends are at most ``max_gap_mm``
    apart and both end directions and the gap vector agree within ``max_angle_deg``.
    Optional vetoes: ``can_join[id]`` False keeps that piece out of every join (e.g.
    a piece not dark enough to be a vein); ``gap_ok(a, b)`` (end points in mm) False
    refuses a gap (e.g. bright tissue between the ends).
    Greedy, closest gap first.  Returns the new centrelines (the joined one keeps the
    smaller id) and the relabelled labelmap.
    """
    from scipy.spatial import cKDTree

    cos_max = np.cos(np.deg2rad(max_angle_deg))
    lines = {k: np.asarray(v, float) for k, v in centrelines.items() if len(v) >= 2}
    others = {k: v for k, v in centrelines.items() if len(v) < 2}
    remap: dict[int, int] = {}
    ends, dirs, owner = [], [], []     # owner[e] = (line id, at_end) -- updated as lines merge
    ends_of: dict[int, list[int]] = {}  # line id -> indices of its end points in `ends`
    for vid, p in lines.items():
        for at_end in (False, True):
            ends_of.setdefault(vid, []).append(len(ends))
            ends.append(p[-1] if at_end else p[0])
            dirs.append(_end_direction(p, at_end))
            owner.append([vid, at_end])
    if len(ends) >= 4:
        ends_a = np.asarray(ends)
        pairs = cKDTree(ends_a).query_pairs(max_gap_mm, output_type="ndarray")
        if len(pairs):
            gaps = np.linalg.norm(ends_a[pairs[:, 0]] - ends_a[pairs[:, 1]], axis=1)
            pairs = pairs[np.argsort(gaps, kind="stable")]
        used = np.zeros(len(ends), bool)
        for a, b in pairs:
            if used[a] or used[b]:
                continue
            (va, ea), (vb, eb) = owner[a], owner[b]
            if va == vb:
                continue
            if can_join is not None and not (can_join.get(va, True) and can_join.get(vb, True)):
                continue
            da, db = dirs[a], dirs[b]
            if np.dot(da, -db) < cos_max:
                continue
            gap = ends_a[b] - ends_a[a]
            g = np.linalg.norm(gap)
            if g > 0.75 and (np.dot(gap / g, da) < cos_max or np.dot(-gap / g, db) < cos_max):
                continue
            if gap_ok is not None and not gap_ok(ends_a[a], ends_a[b]):
                continue
            pa, pb = lines[va], lines[vb]
            first = pa if ea else pa[::-1]
            second = pb[::-1] if eb else pb
            keep, drop = min(va, vb), max(va, vb)
            lines[keep] = np.vstack([first, second])
            del lines[drop]
            remap[drop] = keep
            used[a] = used[b] = True
            # the two free ends of the joined line: start of `first`, end of `second`
            free_a = [e for e in ends_of.pop(va) if not used[e]]
            free_b = [e for e in ends_of.pop(vb) if not used[e]]
            for e in free_a:
                owner[e] = [keep, False]   # `first` starts at va's other end
            for e in free_b:
                owner[e] = [keep, True]    # `second` ends at vb's other end
            ends_of[keep] = free_a + free_b
    if remap:
        def root(x):
            while x in remap:
                x = remap[x]
            return x
        lut = np.arange(int(labels.max()) + 1, dtype=labels.dtype)
        for k in remap:
            lut[k] = root(k)
        labels = lut[labels]
    lines.update(others)
    return lines, labels
