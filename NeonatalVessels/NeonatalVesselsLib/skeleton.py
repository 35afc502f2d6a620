"""Vessel mask -> individual vessels: skeleton graph, vessels traced through junctions, labelmap.

* The mask is thinned to a one-voxel skeleton (``skimage.morphology.skeletonize``,
  Lee et al. 1994 thinning in 3D).
* :func:`skeleton_graph` (numba) turns the skeleton into a graph: skeleton voxels
  with 26-connected neighbour count 2 lie on a branch; end points (count <= 1) and
  clusters of adjacent junction voxels (count >= 3) are its nodes; every branch is
  the ordered voxel chain between two nodes (closed loops without a node get one).
* Free-ended side branches shorter than ``min_spur_mm`` are pruned (thinning
  artefacts of a thick or noisy mask), repeatedly.
* Vessels are traced **through** junctions: at a node the incident branches are
  paired greedily, straightest continuation first, when the angle between one
  branch's direction into the node and the other's direction out of it is at most
  ``junction_angle_deg`` (each branch's direction over its first / last
  ``direction_span_mm``, in mm through the voxel spacing); a node left with two
  branches always joins them.  A vein crossed or touched by a side branch or a
  noise piece thus stays one vessel instead of being cut at every contact; the
  side branch becomes a vessel of its own.  ``junction_angle_deg=None`` splits at
  every junction (each branch one vessel).
* Every mask voxel is given to the vessel whose path is nearest (Euclidean distance in
  mm through the voxel spacing, k-d tree, within its connected component), so the
  labelmap covers the mask exactly.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

import cc3d
import numpy as np
from numba import njit
from scipy import ndimage
from scipy.spatial import cKDTree

from NeonatalBrainLib import centerline as cl
from NeonatalBrainLib.filters import THREADS

from .vesselness import bounding_box


@dataclass
class VesselPaths:
    """Output of :func:`split_vessels`."""

    labels: np.ndarray                 #: int32 vessel id per mask voxel (0 = background)
    paths_ijk: dict[int, np.ndarray]   #: vessel id -> (N, 3) voxel indices of its skeleton path, in order


@dataclass
class SkeletonGraph:
    """Graph of a one-voxel skeleton (see :func:`skeleton_graph`)."""

    points: np.ndarray        #: (P, 3) int voxel indices of the skeleton voxels
    branches: list            #: branch -> (n,) indices into ``points``, ordered from its first to its last node
    ends: np.ndarray          #: (B, 2) node id at the first / last point of each branch
    node_xyz_mm: np.ndarray   #: (N, 3) node position, voxel index x spacing (mm)


def _skeletonize(mask: np.ndarray) -> np.ndarray:
    from skimage.morphology import skeletonize

    return skeletonize(mask).astype(bool)


_OFFSETS = np.array([o for o in np.ndindex(3, 3, 3) if o != (1, 1, 1)], np.int64) - 1


@njit(cache=True)
def _neighbours(points, index, offsets):
    """CSR adjacency (26-connectivity) of the skeleton voxels ``points`` (index: voxel -> point, -1 = none)."""
    n = points.shape[0]
    shape = index.shape
    count = np.zeros(n + 1, np.int64)
    for p in range(n):
        c = 0
        for o in range(offsets.shape[0]):
            i = points[p, 0] + offsets[o, 0]
            j = points[p, 1] + offsets[o, 1]
            k = points[p, 2] + offsets[o, 2]
            if 0 <= i < shape[0] and 0 <= j < shape[1] and 0 <= k < shape[2] and index[i, j, k] >= 0:
                c += 1
        count[p + 1] = c
    indptr = np.cumsum(count)
    nbr = np.empty(indptr[-1], np.int64)
    for p in range(n):
        m = indptr[p]
        for o in range(offsets.shape[0]):
            i = points[p, 0] + offsets[o, 0]
            j = points[p, 1] + offsets[o, 1]
            k = points[p, 2] + offsets[o, 2]
            if 0 <= i < shape[0] and 0 <= j < shape[1] and 0 <= k < shape[2] and index[i, j, k] >= 0:
                nbr[m] = index[i, j, k]
                m += 1
    return indptr, nbr


@njit(cache=True)
def _find(parent, x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


@njit(cache=True)
def _nodes(indptr, nbr):
    """Node id per point (-1 on a branch): end points one each, adjacent junction voxels one per cluster."""
    n = indptr.shape[0] - 1
    deg = indptr[1:] - indptr[:-1]
    parent = np.arange(n)
    for p in range(n):
        if deg[p] >= 3:
            for m in range(indptr[p], indptr[p + 1]):
                q = nbr[m]
                if deg[q] >= 3:
                    a, b = _find(parent, p), _find(parent, q)
                    if a != b:
                        parent[max(a, b)] = min(a, b)
    node = -np.ones(n, np.int64)
    root_id = -np.ones(n, np.int64)
    n_nodes = 0
    for p in range(n):
        if deg[p] != 2:
            r = _find(parent, p) if deg[p] >= 3 else p
            if root_id[r] < 0:
                root_id[r] = n_nodes
                n_nodes += 1
            node[p] = root_id[r]
    return node, n_nodes


@njit(cache=True)
def _room(flat, used):
    """``flat`` with room for one more entry after ``used`` (doubled when full)."""
    if used < flat.shape[0]:
        return flat
    grown = np.empty(2 * flat.shape[0], np.int64)
    for i in range(used):       # element by element: a slice assignment compiles numba's shape-error path
        grown[i] = flat[i]
    return grown


@njit(cache=True)
def _trace(indptr, nbr, node, n_nodes):
    """Ordered branches between nodes; returns (flat point list, offsets, end nodes, node count)."""
    n = indptr.shape[0] - 1
    visited = np.zeros(nbr.shape[0], np.bool_)
    on_path = np.zeros(n, np.bool_)
    flat = np.empty(2 * n + 16, np.int64)
    starts = [0]
    end_a = []
    end_b = []
    used = 0
    for sweep in range(2):
        for u in range(n):
            if sweep == 1:
                # closed loops of branch voxels: make their first unvisited voxel a node
                if node[u] >= 0 or on_path[u]:
                    continue
                node[u] = n_nodes
                n_nodes += 1
            elif node[u] < 0:
                continue
            for e in range(indptr[u], indptr[u + 1]):
                v = nbr[e]
                if visited[e] or (node[v] >= 0 and node[v] == node[u]):
                    continue
                visited[e] = True
                flat = _room(flat, used)
                flat[used] = u
                used += 1
                on_path[u] = True
                prev, cur = u, v
                while True:
                    flat = _room(flat, used)
                    flat[used] = cur
                    used += 1
                    on_path[cur] = True
                    if node[cur] >= 0:
                        # do not walk this branch again from its other end
                        for f in range(indptr[cur], indptr[cur + 1]):
                            if nbr[f] == prev:
                                visited[f] = True
                        break
                    nxt = -1
                    for f in range(indptr[cur], indptr[cur + 1]):
                        if nbr[f] != prev:
                            nxt = nbr[f]
                            visited[f] = True
                            break
                    if nxt < 0:
                        break
                    prev, cur = cur, nxt
                starts.append(used)
                end_a.append(node[u])
                end_b.append(node[cur] if node[cur] >= 0 else node[u])
    return flat[:used], np.array(starts), np.array(end_a), np.array(end_b), n_nodes


def skeleton_graph(skel: np.ndarray, spacing_mm, *, offset=(0, 0, 0)) -> SkeletonGraph:
    """Graph of a boolean one-voxel skeleton (see module docstring); positions in mm = index x spacing.

    ``offset``: voxel index of ``skel[0, 0, 0]`` when ``skel`` is a crop of a larger array
    (points and positions are then those of the larger array).
    """
    spacing = np.asarray(spacing_mm, float)
    points = np.argwhere(skel).astype(np.int64) + np.asarray(offset, np.int64)
    if len(points) == 0:
        return SkeletonGraph(points, [], np.zeros((0, 2), np.int64), np.zeros((0, 3)))
    lo = points.min(axis=0)
    local = points - lo
    # point number per voxel of the skeleton's box (-1: none); int32 unless there are more points
    index = np.full(tuple(local.max(axis=0) + 1), -1, np.int32 if len(points) < 2 ** 31 else np.int64)
    index[tuple(local.T)] = np.arange(len(points))
    indptr, nbr = _neighbours(local, index, _OFFSETS)
    node, n_nodes = _nodes(indptr, nbr)
    flat, starts, end_a, end_b, n_nodes = _trace(indptr, nbr, node, n_nodes)
    branches = [flat[starts[b]:starts[b + 1]] for b in range(len(starts) - 1)]
    ends = [(int(a), int(b)) for a, b in zip(end_a, end_b)]
    # nodes without any branch (an isolated voxel, a compact clump of junction voxels):
    # a branch of their own points, so that every skeleton voxel belongs to a branch
    has_branch = np.zeros(n_nodes, bool)
    has_branch[np.asarray(end_a, np.int64)] = True
    has_branch[np.asarray(end_b, np.int64)] = True
    for nid in np.flatnonzero(~has_branch):
        branches.append(np.flatnonzero(node == nid))
        ends.append((int(nid), int(nid)))
    ends = np.asarray(ends, np.int64).reshape(-1, 2)
    xyz = points * spacing
    has = node >= 0
    sums = np.zeros((n_nodes, 3))
    np.add.at(sums, node[has], xyz[has])
    cnt = np.bincount(node[has], minlength=n_nodes).astype(float)
    node_xyz = sums / np.maximum(cnt, 1)[:, None]
    return SkeletonGraph(points, branches, ends, node_xyz)


def _unit(d: np.ndarray) -> np.ndarray:
    n = np.sqrt(d.dot(d))
    return d / n if n > 1e-9 else np.zeros(3)


@njit(cache=True)
def _branch_geometry(xyz, flat, starts, span_mm):
    """Per branch (its points ``xyz[flat[starts[b]:starts[b + 1]]]``): the arc length (mm) and the
    unit directions out of its first and out of its last point into the branch: from that end to
    the first point at least ``span_mm`` of arc length away (the far end if the branch is shorter);
    zero for fewer than two points."""
    n_b = starts.size - 1
    length = np.zeros(n_b)
    out = np.zeros((n_b, 2, 3))
    for b in range(n_b):
        n = starts[b + 1] - starts[b]
        if n == 0:
            continue
        p = np.empty((n, 3))
        for i in range(n):
            for d in range(3):     # element by element (a row assignment compiles numba's shape-error path)
                p[i, d] = xyz[flat[starts[b] + i], d]
        seg = cl._segments(p)
        length[b] = cl._pairwise_sum(seg)
        if n < 2:
            continue
        for slot in range(2):
            # the cumulative arc from the end the direction leaves (as on the reversed points)
            s = np.empty(n)
            s[0] = 0.0
            for i in range(n - 1):
                s[i + 1] = s[i] + (seg[i] if slot == 0 else seg[n - 2 - i])
            k = min(max(np.searchsorted(s, span_mm), 1), n - 1)
            a, c = (0, k) if slot == 0 else (n - 1, n - 1 - k)
            d0, d1, d2 = p[c, 0] - p[a, 0], p[c, 1] - p[a, 1], p[c, 2] - p[a, 2]
            norm = math.sqrt(d0 * d0 + d1 * d1 + d2 * d2)
            if norm > 1e-9:
                out[b, slot, 0], out[b, slot, 1], out[b, slot, 2] = d0 / norm, d1 / norm, d2 / norm
    return length, out


def trace_vessels(graph: SkeletonGraph, spacing_mm, *, min_spur_mm: float = 1.5,
                  junction_angle_deg: float | None = 40.0, direction_span_mm: float = 2.0,
                  prune_iterations: int = 3) -> list[np.ndarray]:
    """Vessels of a skeleton graph as ordered point-index chains (see module docstring)."""
    spacing = np.asarray(spacing_mm, float)
    xyz = graph.points * spacing
    alive = [len(b) > 0 for b in graph.branches]
    sizes = np.array([len(b) for b in graph.branches], np.int64)
    starts = np.zeros(len(sizes) + 1, np.int64)
    np.cumsum(sizes, out=starts[1:])
    flat = np.concatenate(graph.branches).astype(np.int64) if len(sizes) else np.zeros(0, np.int64)
    length, direction = _branch_geometry(xyz, flat, starts, float(direction_span_mm))
    length = length.tolist()
    ends = graph.ends

    def incident():
        inc: dict[int, list[tuple[int, int]]] = {}
        for b, ok in enumerate(alive):
            if ok and len(graph.branches[b]) > 1:
                inc.setdefault(int(ends[b, 0]), []).append((b, 0))
                inc.setdefault(int(ends[b, 1]), []).append((b, 1))
        return inc

    for _ in range(prune_iterations):
        inc = incident()
        deg = {k: len(v) for k, v in inc.items()}
        changed = False
        for b, ok in enumerate(alive):
            if not ok or len(graph.branches[b]) < 2 or ends[b, 0] == ends[b, 1]:
                continue
            da, db = deg.get(int(ends[b, 0]), 0), deg.get(int(ends[b, 1]), 0)
            if length[b] < min_spur_mm and min(da, db) == 1 and max(da, db) >= 3:
                alive[b] = False
                deg[int(ends[b, 0])] -= 1
                deg[int(ends[b, 1])] -= 1
                changed = True
        if not changed:
            break
    # pair branch ends at every node
    partner: dict[tuple[int, int], tuple[int, int]] = {}
    cos_max = np.cos(np.deg2rad(junction_angle_deg)) if junction_angle_deg is not None else 2.0
    for node_id, items in incident().items():
        if len(items) < 2:
            continue
        dirs = [direction[b, slot] for b, slot in items]
        cand = []
        for a in range(len(items)):
            for c in range(a + 1, len(items)):
                if items[a][0] == items[c][0]:
                    continue   # the two ends of one loop
                # straight continuation: the out-directions of the two branches are opposite
                cand.append((float(np.dot(dirs[a], dirs[c])), a, c))
        cand.sort()
        taken = set()
        for cosang, a, c in cand:
            if a in taken or c in taken:
                continue
            if len(items) == 2 or -cosang >= cos_max:
                partner[items[a]] = items[c]
                partner[items[c]] = items[a]
                taken.update((a, c))
    # chains: walk from a branch end that has no partner; then the remaining closed cycles
    seen = [False] * len(graph.branches)
    chains: list[np.ndarray] = []

    def walk(b: int, slot_in: int) -> np.ndarray:
        parts = []
        while True:
            seen[b] = True
            pts = graph.branches[b]
            parts.append(pts if slot_in == 0 else pts[::-1])
            nxt = partner.get((b, 1 - slot_in))
            if nxt is None or seen[nxt[0]]:
                break
            b, slot_in = nxt
        out = [parts[0]]
        for p in parts[1:]:
            out.append(p[1:] if p[0] == out[-1][-1] else p)
        return np.concatenate(out)

    for b, ok in enumerate(alive):
        if not ok or seen[b]:
            continue
        if (b, 0) not in partner:
            chains.append(walk(b, 0))
        elif (b, 1) not in partner:
            chains.append(walk(b, 1))
    for b, ok in enumerate(alive):
        if ok and not seen[b]:
            chains.append(walk(b, 0))
    return chains


def split_vessels(mask: np.ndarray, spacing_mm, *, min_spur_mm: float = 1.5, min_path_mm: float = 0.0,
                  junction_angle_deg: float | None = None) -> VesselPaths:
    """Split a binary vessel mask into individual vessels (see module docstring).

    Vessels shorter than ``min_path_mm`` get no id of their own: their voxels go to
    the nearest kept vessel of the same connected component (or are dropped if none).
    Thinning depends on the voxel order: the pipeline calls this in
    :func:`NeonatalBrainLib.imageio.canonical_axes` order.
    """
    spacing = np.asarray(spacing_mm, float)
    mask = np.asarray(mask, bool)
    labels_out = np.zeros(mask.shape, np.int32)
    paths_out: dict[int, np.ndarray] = {}
    # everything happens in the mask's bounding box (components, skeletons, labels are the same
    # there, cc3d numbers the components in the same scan order); voxel indices and positions in
    # mm stay those of the whole array
    crop = bounding_box(mask)
    if crop[0].stop <= crop[0].start:
        return VesselPaths(labels_out, paths_out)
    corner = np.array([s.start for s in crop], np.int64)
    mask = mask[crop]
    comps, n = cc3d.connected_components(mask.astype(np.uint8), connectivity=26, return_N=True)
    if n == 0:
        return VesselPaths(labels_out, paths_out)
    boxes = ndimage.find_objects(comps)
    skel = np.zeros(mask.shape, bool)

    def thin(comp_id: int) -> np.ndarray:
        comp = comps[boxes[comp_id - 1]] == comp_id
        sk = _skeletonize(comp)
        if not sk.any():
            sk[tuple(np.argwhere(comp)[0])] = True   # thinner than the thinning's minimum: one voxel
        return sk

    # components are thinned independently (scikit-image's thinning releases the GIL): on threads
    ids = [comp_id for comp_id, box in enumerate(boxes, start=1) if box is not None]
    with ThreadPoolExecutor(THREADS) if THREADS > 1 and len(ids) > 1 else nullcontext() as pool:
        for comp_id, sk in zip(ids, map(thin, ids) if pool is None else pool.map(thin, ids)):
            skel[boxes[comp_id - 1]] |= sk
    graph = skeleton_graph(skel, spacing, offset=corner)
    chains = trace_vessels(graph, spacing, min_spur_mm=min_spur_mm, junction_angle_deg=junction_angle_deg)
    by_comp: dict[int, list[np.ndarray]] = {}
    for ch in chains:
        pts = graph.points[ch]
        if len(pts) >= 2 and cl.arc_length_mm(pts * spacing) < min_path_mm:
            continue
        by_comp.setdefault(int(comps[tuple(pts[0] - corner)]), []).append(pts)
    # ids in component order; a component with one path is labelled with it through a lookup table
    single = np.zeros(n + 1, np.int32)
    several: list[tuple[int, int]] = []     # (component, id of its first path)
    next_id = 1
    for comp_id in sorted(by_comp):
        first = next_id
        for pts in by_comp[comp_id]:
            paths_out[next_id] = pts
            next_id += 1
        if len(by_comp[comp_id]) == 1:
            single[comp_id] = first
        else:
            several.append((comp_id, first))
    labels = single[comps]
    if several:
        wanted = np.zeros(n + 1, np.bool_)
        wanted[[c for c, _ in several]] = True
        flat, starts = _voxels_by_label(comps.reshape(-1), wanted)
        flat_labels = labels.reshape(-1)
        for comp_id, first in several:
            box = boxes[comp_id - 1]
            box_start = np.array([s.start for s in box], np.int64)
            seeds = np.zeros(tuple(s.stop - s.start for s in box), np.int32)
            for k, pts in enumerate(by_comp[comp_id]):     # later paths win their shared (junction) voxels
                seeds[tuple((pts - corner - box_start).T)] = first + k
            # the component's voxels in C order, as indices in its box: nearest path voxel in mm
            # (exact Euclidean nearest neighbour, k-d tree)
            at = flat[starts[comp_id]:starts[comp_id + 1]]
            vox = np.stack(np.unravel_index(at, comps.shape), axis=1) - box_start
            seed_idx = np.argwhere(seeds)
            _, nn = cKDTree(seed_idx * spacing).query(vox * spacing, workers=THREADS if len(vox) > 20000 else 1)
            flat_labels[at] = seeds[tuple(seed_idx[nn].T)]
    labels_out[crop] = labels
    return VesselPaths(labels_out, paths_out)


@njit(cache=True)
def _voxels_by_label(labels_flat, wanted):
    """Flat indices of the voxels of each wanted label, grouped by label, ascending within it:
    those of label ``c`` are ``flat[starts[c]:starts[c + 1]]`` (a counting sort, one pass to count,
    one to place)."""
    counts = np.zeros(wanted.size + 1, np.int64)
    for i in range(labels_flat.size):
        c = labels_flat[i]
        if wanted[c]:
            counts[c + 1] += 1
    starts = np.cumsum(counts)
    flat = np.empty(starts[-1], np.int64)
    fill = starts[:-1].copy()
    for i in range(labels_flat.size):
        c = labels_flat[i]
        if wanted[c]:
            flat[fill[c]] = i
            fill[c] += 1
    return flat, starts


def paths_from_labels(labels: np.ndarray, spacing_mm, *, junction_angle_deg: float | None = 40.0,
                      max_gap_mm: float = 12.0, guides: dict[int, np.ndarray] | None = None,
                      previous_labels: np.ndarray | None = None) -> VesselPaths:
    """One vessel per label value of a vessel-id labelmap (e.g. an edited ``vessel_labels``).

    The centreline of each label is the longest vessel traced through its skeleton
    (:func:`trace_vessels`), so the user's vessel identities are kept: erasing one
    label removes exactly one vessel.  A label in several pieces (26-connected
    components) is one vessel crossed by others: the automatic run's tracking and joins
    label only the voxels on their paths that no other vessel holds, which left gaps of
    1-10 mm on the phantoms.  The longest vessel of each piece is then joined end to end
    (:func:`join_end_to_end`, gaps up to ``max_gap_mm``).

    ``guides``: label -> the centreline it had before an edit (voxel indices, float), with
    ``previous_labels`` the labelmap before it (same grid): the stretches of the centreline
    still on the label's voxels (:func:`guided_pieces`) are kept as they were and joined
    with the longest vessel of each piece of the voxels painted with that label since.
    """
    spacing = np.asarray(spacing_mm, float)
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
        guided = guides is not None and previous_labels is not None and vid in guides
        kept = guided_pieces(np.asarray(guides[vid], float) - offset, comp, spacing) if guided else []
        if kept:
            painted = comp & (np.asarray(previous_labels)[box] != vid)
            traced = _longest_per_piece(painted, _skeletonize(painted), spacing, junction_angle_deg)
        else:
            traced = _longest_per_piece(comp, skel, spacing, junction_angle_deg)
        paths[vid] = join_end_to_end(kept + traced, spacing, max_gap_mm=max_gap_mm) + offset
    return VesselPaths(out, paths)


def _longest_per_piece(comp: np.ndarray, skel: np.ndarray, spacing: np.ndarray,
                       junction_angle_deg: float | None) -> list[np.ndarray]:
    """The longest vessel traced through ``skel`` (the skeleton of ``comp``) in each 26-connected
    piece of ``comp``."""
    if skel.sum() < 2:
        return []
    graph = skeleton_graph(skel, spacing)
    chains = trace_vessels(graph, spacing, min_spur_mm=0.0, junction_angle_deg=junction_angle_deg)
    pieces = cc3d.connected_components(comp.astype(np.uint8), connectivity=26)
    longest: dict[int, tuple[float, np.ndarray]] = {}    # piece -> (length mm, its longest chain, voxel indices)
    for ch in chains:
        pts = graph.points[ch]
        k = int(pieces[tuple(pts[0])])
        length = cl.arc_length_mm(pts * spacing)
        if k not in longest or length > longest[k][0]:
            longest[k] = (length, pts)
    return [pts for _length, pts in longest.values()]


def guided_pieces(guide_ijk: np.ndarray, comp: np.ndarray, spacing_mm, *, within_voxels: float = 1.0,
                  min_points: int = 4) -> list[np.ndarray]:
    """The stretches of a centreline (voxel indices, float) that still lie on the voxels ``comp``:
    runs of consecutive points within ``within_voxels`` x the largest voxel side (mm) of a voxel
    of ``comp``, of at least ``min_points`` points."""
    spacing = np.asarray(spacing_mm, float)
    g = np.asarray(guide_ijk, float)
    vox = np.argwhere(comp)
    if len(g) < 2 or len(vox) == 0:
        return []
    on = cKDTree(vox * spacing).query(g * spacing)[0] <= within_voxels * float(spacing.max())
    cuts = np.flatnonzero(np.diff(on.astype(np.int8))) + 1
    runs = np.split(np.arange(len(g)), cuts)
    return [g[r] for r in runs if on[r[0]] and len(r) >= min_points]


def join_end_to_end(pieces: list[np.ndarray], spacing_mm, *, max_gap_mm: float,
                    beside_mm: float = 2.0) -> np.ndarray:
    """One path through ordered pieces of one vessel (voxel indices; distances in mm
    through ``spacing_mm``).

    A piece with more than half its points within ``beside_mm`` of a longer piece lies
    beside the vessel (a fragment along it) and is left out.  Starting from the longest
    piece, the piece whose nearer end is closest to a free end of the path is attached
    there (oriented to continue it), while that gap is at most ``max_gap_mm`` and the
    piece extends the path: its far end lies farther from the path's other end than
    the free end does.
    """
    spacing = np.asarray(spacing_mm, float)
    rest = sorted((np.asarray(q) for q in pieces if len(q)), key=lambda q: -cl.arc_length_mm(q * spacing))
    if not rest:
        return np.zeros((0, 3), np.int64)
    kept = [rest[0]]
    for q in rest[1:]:
        near = cKDTree(np.vstack(kept) * spacing).query(q * spacing, distance_upper_bound=beside_mm)[0]
        if np.mean(np.isfinite(near)) <= 0.5:
            kept.append(q)
    rest = kept
    path = rest.pop(0)
    while rest:
        best = None
        head, tail = path[0] * spacing, path[-1] * spacing
        for i, q in enumerate(rest):
            a, b = q[0] * spacing, q[-1] * spacing
            for at_tail, free, other in ((True, tail, head), (False, head, tail)):
                for near, far, flip in ((a, b, False), (b, a, True)):
                    gap = float(np.linalg.norm(near - free))
                    extends = np.linalg.norm(far - other) > np.linalg.norm(free - other)
                    if gap <= max_gap_mm and extends and (best is None or gap < best[0]):
                        best = (gap, i, at_tail, flip)
        if best is None:
            break
        _, i, at_tail, flip = best
        q = rest.pop(i)
        q = q[::-1] if flip else q
        path = np.vstack([path, q]) if at_tail else np.vstack([q[::-1], path])
    return path


def _end_direction(p: np.ndarray, at_end: bool, span_mm: float = 2.0) -> np.ndarray:
    """Unit vector pointing out of the polyline at its first (``at_end=False``) or last point."""
    q = p[::-1] if not at_end else p
    s = cl.cumulative_arc_mm(q[::-1])
    k = int(s.searchsorted(span_mm))
    k = min(max(k, 1), len(q) - 1)
    return _unit(q[-1] - q[-1 - k])


def merge_fragments(centrelines: dict[int, np.ndarray], labels: np.ndarray, *, max_gap_mm: float = 3.0,
                    max_angle_deg: float = 30.0, max_gap_angle_deg: float | None = None, can_join=None,
                    gap_ok=None, join_ok=None, metric=None) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Join collinear pieces of one vein that thresholding broke apart.

    Two centrelines are joined end to end when their ends are at most ``max_gap_mm``
    apart, the two end directions agree within ``max_angle_deg`` and the gap vector
    agrees with both within ``max_gap_angle_deg`` (default: ``max_angle_deg``; a larger
    value accepts a sideways jog between the ends, e.g. one slice in thick-slice data).
    Optional vetoes: ``can_join[id]`` False keeps that piece out of every join (e.g.
    a piece not dark enough to be a vein); ``gap_ok(a, b)`` (end points in mm) False
    refuses a gap (e.g. bright tissue between the ends); ``join_ok(first, second)``
    (the two polylines in joining order) False refuses the join (e.g. a zig-zag).
    ``metric`` (3x3, optional): the end points are mapped by it before the gaps and
    directions are measured (e.g. ``I - (1 - w) n n^T`` shrinks the component along
    the slice normal ``n`` of thick-slice data by ``w``, where a vein's voxel path jogs
    by a whole slice); ``gap_ok`` still gets the true end points.
    Greedy, closest gap first.  Returns the new centrelines (the joined one keeps the
    smaller id) and the relabelled labelmap.
    """
    from scipy.spatial import cKDTree

    cos_max = np.cos(np.deg2rad(max_angle_deg))
    cos_gap = np.cos(np.deg2rad(max_angle_deg if max_gap_angle_deg is None else max_gap_angle_deg))
    lines = {k: np.asarray(v, float) for k, v in centrelines.items() if len(v) >= 2}
    others = {k: v for k, v in centrelines.items() if len(v) < 2}
    remap: dict[int, int] = {}
    ends, real_ends, dirs, owner = [], [], [], []     # owner[e] = (line id, at_end) -- updated as lines merge
    ends_of: dict[int, list[int]] = {}  # line id -> indices of its end points in `ends`
    for vid, p in lines.items():
        q = p if metric is None else p @ np.asarray(metric, float).T
        for at_end in (False, True):
            ends_of.setdefault(vid, []).append(len(ends))
            ends.append(q[-1] if at_end else q[0])
            real_ends.append(p[-1] if at_end else p[0])
            dirs.append(_end_direction(q, at_end))
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
            if g > 0.75 and (np.dot(gap / g, da) < cos_gap or np.dot(-gap / g, db) < cos_gap):
                continue
            if gap_ok is not None and not gap_ok(real_ends[a], real_ends[b]):
                continue
            pa, pb = lines[va], lines[vb]
            first = pa if ea else pa[::-1]
            second = pb[::-1] if eb else pb
            if join_ok is not None and not join_ok(first, second):
                continue
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
        # a line may own no voxel (ids above labels.max(): e.g. a piece cut off at a sharp bend)
        lut = np.arange(max(int(labels.max()), max(remap)) + 1, dtype=labels.dtype)
        for k in remap:
            lut[k] = root(k)
        labels = relabelled(labels, lut)
    lines.update(others)
    return lines, labels


def relabelled(labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """``lut[labels]`` (a new array of ``lut``'s dtype): each voxel's id mapped through the lookup
    table ``lut`` (old id -> new id).  With ``lut[0] == 0`` (background stays background) only the
    labelled voxels are looked up: vessel labels are sparse, and a whole-box lookup cost ~3x more."""
    labels = np.asarray(labels)
    lut = np.asarray(lut)
    if lut[0] != 0:
        return lut[labels]
    out = np.zeros(labels.shape, lut.dtype)
    flat = labels.reshape(-1)
    at = np.flatnonzero(flat)
    out.reshape(-1)[at] = lut[flat[at]]
    return out


def voxel_counts(labels: np.ndarray, minlength: int = 0) -> np.ndarray:
    """``np.bincount(labels.ravel(), minlength=minlength)`` for the labels >= 1 (the count of label
    0, the background, is left 0): the labelled voxels only, which are few."""
    labels = np.asarray(labels)
    counts = np.bincount(labels[labels != 0], minlength=minlength)
    if len(counts):
        counts[0] = 0
    return counts


def relabel_pieces(labels: np.ndarray, affine: np.ndarray, pieces: dict[int, dict[int, np.ndarray]]) -> np.ndarray:
    """Give the voxels of split vessels to their pieces.

    ``pieces``: old vessel id -> {new id: centreline (N, 3) RAS mm} (the old id may be
    one of the new ones).  Each voxel labelled with an old id gets the id of the piece
    whose centreline is nearest (mm).  Returns the new labelmap.
    """
    if not pieces:
        return labels
    labels = np.array(labels, copy=True)
    boxes = ndimage.find_objects(labels)
    for old, new in pieces.items():
        if old > len(boxes) or boxes[old - 1] is None or not new:
            continue
        box = boxes[old - 1]
        sub = labels[box]
        vox = np.argwhere(sub == old)
        ras = (vox + [s.start for s in box]) @ affine[:3, :3].T + affine[:3, 3]
        ids = np.concatenate([np.full(len(p), vid, labels.dtype) for vid, p in new.items()])
        pts = np.vstack([np.asarray(p, float) for p in new.values()])
        _, nn = cKDTree(pts).query(ras)
        sub[tuple(vox.T)] = ids[nn]
    return labels
