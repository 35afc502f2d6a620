"""The thalamostriate vein joined along the ventricle wall (NeonatalVesselsLib.wallveins)."""
from __future__ import annotations

import numpy as np
import pytest

from NeonatalVesselsLib.wallveins import PieceLinks, farthest_pair, wall_vein_path

SPACING = np.array([0.5, 0.5, 1.0])
AFFINE = np.diag([*SPACING, 1.0])


def _scene():
    """Tissue (1.0) on a 0.5 x 0.5 x 1 mm grid, a vein (0.5) running along y with a bend in x,
    at z = 10 mm; everything allowed except a bright slab standing in for the ventricle."""
    shape = (60, 80, 20)
    norm = np.ones(shape, np.float32)
    y = np.arange(shape[1]) * SPACING[1]
    x_mm = 12.0 + 3.0 * np.sin(y / 40.0 * np.pi)          # bends 3 mm sideways over 40 mm
    i = np.rint(x_mm / SPACING[0]).astype(int)
    norm[i, np.arange(shape[1]), 10] = 0.5
    norm[i + 1, np.arange(shape[1]), 10] = 0.5
    allowed = np.ones(shape, bool)
    allowed[:10] = False                                   # the "ventricle"
    truth = np.c_[(i + 0.5) * SPACING[0], y, np.full(len(y), 10.0)]
    return norm, allowed, truth


def test_pieces_of_one_vein_are_joined_along_it():
    norm, allowed, truth = _scene()
    pieces = [truth[5:20], truth[35:45], truth[60:75]]
    found = wall_vein_path(norm, AFFINE, pieces, allowed)
    assert found is not None
    path, joined = found
    assert joined == [0, 1, 2]
    # from one far end to the other, always on the vein (within one voxel of it)
    d = np.min(np.linalg.norm(path[:, None] - truth[None], axis=-1), axis=1)
    assert d.max() <= 0.75
    ends = sorted([path[0], path[-1]], key=lambda q: q[1])
    assert np.linalg.norm(ends[0] - truth[5]) <= 0.75 and np.linalg.norm(ends[1] - truth[74]) <= 0.75
    assert np.isin(np.round(path[:, 1], 3), np.round(truth[20:35, 1], 3)).sum() >= 10   # the gap is filled


def test_a_piece_reached_only_across_tissue_is_left_out():
    norm, allowed, truth = _scene()
    stray = truth[40:55] + np.array([0.0, 0.0, -6.0])       # a dark line 6 mm below the vein
    norm[np.rint(stray[:, 0] / 0.5).astype(int) - 1, np.rint(stray[:, 1] / 0.5).astype(int),
         np.rint(stray[:, 2]).astype(int)] = 0.5
    assert wall_vein_path(norm, AFFINE, [truth[5:30], stray], allowed) is None
    # with a second true piece the vein is joined and the stray line stays out
    found = wall_vein_path(norm, AFFINE, [truth[5:30], stray, truth[55:70]], allowed)
    assert found is not None and found[1] == [0, 2]
    assert np.all(np.abs(found[0][:, 2] - 10.0) <= 1.0)


def test_least_cost_path_avoids_forbidden_voxels_and_reports_unreachable_ends():
    allowed = np.ones((5, 9, 1), bool)
    allowed[2, 1:, 0] = False                               # a wall with a gap at j = 0
    norm = np.ones(allowed.shape, np.float32)
    pieces = [np.array([[0.0, 8.0, 0.0]]), np.array([[4.0, 8.0, 0.0]])]   # one voxel each (identity affine)
    path = PieceLinks(norm, np.eye(4), pieces, allowed).path([0, 1])
    assert path is not None and tuple(path[0]) == (0, 8, 0) and tuple(path[-1]) == (4, 8, 0)
    assert not np.any((path[:, 0] == 2) & (path[:, 1] >= 1))
    allowed[2, 0, 0] = False
    assert PieceLinks(norm, np.eye(4), pieces, allowed).path([0, 1]) is None


def test_farthest_pair():
    pts = np.array([[0.0, 0, 0], [1, 0, 0], [5, 5, 0], [-2, 0, 0]])
    assert set(farthest_pair(pts)) == {2, 3}


@pytest.mark.parametrize("n", [0, 1])
def test_fewer_than_two_pieces_give_none(n):
    norm, allowed, truth = _scene()
    assert wall_vein_path(norm, AFFINE, [truth[:10]] * n, allowed) is None
