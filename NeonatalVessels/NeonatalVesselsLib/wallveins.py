"""The thalamostriate (thalamic) vein of one side as one centreline: a minimal path along the ventricle wall.

The thalamostriate vein runs in the caudothalamic groove, 1-4 mm from the lateral
ventricle, for 20-30 mm, forward to the foramen of Monro.  Tributaries (deep medullary,
caudate veins) join it all along and deep grey matter edges border it, so the
segmentation's skeleton breaks it into pieces of 5-10 mm at each junction, some of them
leaving along a tributary.  Measured piece by piece, its width is a mean of partial, off-
centre cross-sections.

:func:`wall_vein_path` joins the pieces of one side that the region rules called
thalamic (those linked to the darkest of them by dark paths; the others are not the
vein): the path of least cost between the two of their voxels farthest apart, through the
voxels of the periventricular band (``allowed``: within the wall distance of the
ventricles, outside them, on that side of the midline), with the cost of a voxel
``clip(norm, 0.05, 2) ** power`` (``norm``: intensity over the local white-matter level,
~1 in tissue, 0.3-0.7 in a vein) per mm of path (``skimage.graph.MCP_Geometric``: 26-
connected steps, each costing its length in mm times the mean cost of its two voxels).
With ``power = 4`` a voxel of white matter (norm 1) costs 8-120 times one of a vein (norm
0.6-0.3), so the path keeps to the dark groove between the pieces and does not cut corners
through tissue.

Reference: minimal paths for vessel centrelines as in T. Deschamps and L. D. Cohen,
"Fast extraction of minimal paths in 3D images and applications to virtual endoscopy",
Med. Image Anal. 5 (2001) 281-299 (here on the voxel graph, Dijkstra's algorithm).
"""
from __future__ import annotations

import numpy as np


def farthest_pair(points: np.ndarray) -> tuple[int, int]:
    """Indices ``i < j`` of the two points (rows of ``points``, at least two) farthest apart."""
    from scipy.spatial.distance import pdist

    k = int(np.argmax(pdist(points)))       # pdist's order: (0, 1), (0, 2), ..., (1, 2), ...
    rows, cols = np.triu_indices(len(points), 1)
    return int(rows[k]), int(cols[k])


def _least_cost_path(mcp, start: tuple[int, ...], end: tuple[int, ...]) -> np.ndarray | None:
    """Voxel path (n, 3) of least total cost x step length (mm) from ``start`` to ``end`` on an
    ``MCP_Geometric`` graph (built once per cost array, searched again per call), or None when
    ``end`` cannot be reached."""
    total, _ = mcp.find_costs([tuple(start)], [tuple(end)])
    if not np.isfinite(total[tuple(end)]):
        return None
    return np.asarray(mcp.traceback(tuple(end)), np.intp)


def _voxels(points_ras: np.ndarray, inv: np.ndarray, shape) -> np.ndarray:
    ijk = np.rint(points_ras @ inv[:3, :3].T + inv[:3, 3]).astype(np.intp)
    return np.unique(ijk[np.all((ijk >= 0) & (ijk < np.asarray(shape)), axis=1)], axis=0)


class PieceLinks:
    """Pieces of veins (polylines, RAS mm) grouped by the least-cost paths between them.

    ``norm``: normalised intensity, ``allowed``: bool mask, both on the grid of ``affine``
    (voxel -> RAS mm; e.g. a box around the pieces); path cost as in the module docstring.
    Two pieces are linked when the least-cost path between them crosses at most
    ``max_tissue_gap_mm`` of tissue: of voxels less dark (``1 - norm``) than
    ``gap_darkness_fraction`` x the pieces' median darkness or than ``min_gap_darkness``,
    whichever is more.  ``groups``: the linked pieces (indices into ``pieces``; pieces off
    the grid are in none), ``darkness``: index -> mean ``1 - norm`` of its voxels.
    """

    def __init__(self, norm: np.ndarray, affine: np.ndarray, pieces: list[np.ndarray], allowed: np.ndarray, *,
                 power: float = 4.0, gap_darkness_fraction: float = 0.5, min_gap_darkness: float = 0.15,
                 max_tissue_gap_mm: float = 2.0):
        from skimage.graph import MCP_Geometric

        self.affine = affine
        inv = np.linalg.inv(affine)
        self.spacing = spacing = np.linalg.norm(affine[:3, :3], axis=0)
        self.voxels = voxels = [_voxels(p, inv, norm.shape) for p in pieces]
        keep = [n for n, v in enumerate(voxels) if len(v)]
        self.darkness = {n: 1.0 - float(np.mean(norm[tuple(voxels[n].T)])) for n in keep}
        self.groups: list[list[int]] = []
        if not keep:
            return
        cost = np.where(allowed, np.clip(norm, 0.05, 2.0) ** power, np.inf)
        all_voxels = np.vstack([voxels[n] for n in keep])
        cost[tuple(all_voxels.T)] = np.where(np.isfinite(cost[tuple(all_voxels.T)]), cost[tuple(all_voxels.T)], 1.0)
        min_dark = max(min_gap_darkness, gap_darkness_fraction * (1.0 - float(np.median(norm[tuple(all_voxels.T)]))))
        group = {n: n for n in keep}        # union-find over the pieces

        def root(n: int) -> int:
            while group[n] != n:
                n = group[n]
            return n

        # one graph, searched again from each piece (the same results as a new one each time)
        self._mcp = mcp = MCP_Geometric(cost, sampling=tuple(float(x) for x in spacing))
        for a in keep[:-1]:
            others = [n for n in keep if n > a and root(n) != root(a)]
            if not others:
                continue
            total, _ = mcp.find_costs([tuple(q) for q in voxels[a]], [tuple(q) for n in others for q in voxels[n]])
            for b in others:
                reached = np.isfinite(total[tuple(voxels[b].T)])
                if not reached.any() or root(a) == root(b):     # linked meanwhile through another piece
                    continue
                near = voxels[b][reached][np.argmin(total[tuple(voxels[b][reached].T)])]
                gap = np.asarray(mcp.traceback(tuple(near)), np.intp)
                bright = (1.0 - norm[tuple(gap.T)]) < min_dark
                steps_mm = np.linalg.norm(np.diff(gap * spacing, axis=0), axis=1)
                tissue_mm = float(np.sum(steps_mm * 0.5 * (bright[1:].astype(float) + bright[:-1])))   # half a step per bright end
                if tissue_mm <= max_tissue_gap_mm:
                    group[root(b)] = root(a)
        members: dict[int, list[int]] = {}
        for n in keep:
            members.setdefault(root(n), []).append(n)
        self.groups = [sorted(g) for g in members.values()]

    def group_of(self, piece: int) -> list[int]:
        return next(g for g in self.groups if piece in g)

    def path(self, group: list[int]) -> np.ndarray | None:
        """Voxel-centre path (RAS mm, in order) of least cost between the two voxels of the
        ``group``'s pieces farthest apart, or None when there is none."""
        ends = np.vstack([self.voxels[n] for n in group])
        if len(ends) < 2:
            return None
        i, j = farthest_pair(ends * self.spacing)
        path = _least_cost_path(self._mcp, tuple(ends[i]), tuple(ends[j]))
        return None if path is None else path @ self.affine[:3, :3].T + self.affine[:3, 3]


def wall_vein_path(norm: np.ndarray, affine: np.ndarray, pieces: list[np.ndarray], allowed: np.ndarray, *,
                   power: float = 4.0, gap_darkness_fraction: float = 0.5,
                   min_gap_darkness: float = 0.15,
                   max_tissue_gap_mm: float = 2.0) -> tuple[np.ndarray, list[int]] | None:
    """``(path, joined)``: the voxel-centre path (RAS mm, in order) joining ``pieces`` (module
    docstring) and the indices of the pieces it joins, or None.

    The pieces are linked as in :class:`PieceLinks` (arguments as there); the vein is the
    path through the group of linked pieces that holds the darkest piece (mean ``1 - norm``
    of its voxels): the thalamostriate vein is the largest vein along the wall, whereas the
    dark lines beside it (a ventricle edge, the fainter tributaries) are fainter.  Pieces
    reached only across tissue are left out.  None when the darkest piece is linked to no other.
    """
    if len(pieces) < 2:
        return None
    links = PieceLinks(norm, affine, pieces, allowed, power=power, gap_darkness_fraction=gap_darkness_fraction,
                       min_gap_darkness=min_gap_darkness, max_tissue_gap_mm=max_tissue_gap_mm)
    if not links.darkness:
        return None
    best = links.group_of(max(links.darkness, key=lambda n: links.darkness[n]))
    if len(best) < 2:
        return None
    path = links.path(best)
    return None if path is None else (path, best)
