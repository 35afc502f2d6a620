"""Unit tests of the vessel engine's parts on synthetic tubes with known geometry (fast)."""
from __future__ import annotations

import json
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from scipy import ndimage

from NeonatalBrainLib import centerline as cl
from NeonatalBrainLib.batch import append_row, read_rows, run_batch
from NeonatalBrainLib.imageio import InputError, Volume
from NeonatalVesselsLib import measure as ms
from NeonatalVesselsLib import pipeline as pl
from NeonatalVesselsLib.skeleton import join_end_to_end, merge_fragments, paths_from_labels, split_vessels
from NeonatalVesselsLib.vesselness import vesselness


def tube_image(shape, spacing, p0, p1, diameter_mm, contrast=0.85, sub=4, noise=0.0, seed=0):
    """Tissue 1.0 with a dark straight tube (partial-volume rendered by sub-sampling)."""
    spacing = np.asarray(spacing, float)
    img = np.zeros(shape, np.float32)
    offs = (np.arange(sub) + 0.5) / sub - 0.5
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    axis = (p1 - p0) / np.linalg.norm(p1 - p0)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3).astype(float)
    frac = np.zeros(len(grid))
    for a in offs:
        for b in offs:
            for c in offs:
                x = (grid + [a, b, c]) * spacing
                t = np.clip((x - p0) @ axis, 0, np.linalg.norm(p1 - p0))
                d = np.linalg.norm(x - (p0 + t[:, None] * axis), axis=1)
                frac += d <= diameter_mm / 2
    frac /= sub ** 3
    img = (1.0 - contrast * frac).reshape(shape).astype(np.float32)
    if noise:
        img += np.random.default_rng(seed).normal(0, noise, shape).astype(np.float32)
    return img


def test_vesselness_responds_to_dark_tube_not_background():
    sp = (0.5, 0.5, 0.5)
    img = tube_image((40, 40, 30), sp, (2, 10, 7.5), (18, 10, 7.5), 0.8)
    v = vesselness(img, sp, (0.3, 0.5))
    assert v[20, 20, 15] > 0.3          # on the tube axis
    assert v[20, 30, 15] < 0.01         # 5 mm away in tissue
    # a bright tube gives no dark-tube response
    v_bright = vesselness(2.0 - img, sp, (0.3, 0.5))
    assert v_bright.max() < 0.01


def test_vesselness_detects_tube_in_thick_slices():
    """A 1 mm vein lying in 2 mm slices still gives a clear response (thick-slice mode)."""
    b = tube_image((40, 40, 8), (0.5, 0.5, 2.0), (2, 10, 7.5), (18, 10, 7.5), 1.0)
    v = vesselness(b, (0.5, 0.5, 2.0), (0.4, 0.6))
    assert v[20, 20, 3:5].max() > 0.5
    assert v[20, 32, :].max() < 0.01


def test_vesselness_in_box_only_evaluates_the_given_voxels_with_the_masks_smoothing():
    from NeonatalVesselsLib.vesselness import vesselness_in_box

    sp = (0.5, 0.5, 0.75)
    img = tube_image((40, 40, 30), sp, (2, 10, 7.5), (18, 12, 9.5), 0.8, noise=0.05)
    mask = np.zeros(img.shape, bool)
    mask[6:34, 5:36, 4:26] = True
    full = vesselness(img, sp, (0.3, 0.5), mask=mask)
    only = np.random.default_rng(2).random(img.shape) < 0.3
    box, sub = vesselness_in_box(img, sp, (0.3, 0.5), mask=mask, only=only)
    got = np.zeros(img.shape, np.float32)
    got[box] = sub
    assert full.max() > 0.3 and np.array_equal(got, np.where(only, full, 0))


@pytest.mark.parametrize("diameter", [0.6, 1.0, 1.5])
def test_width_fit_recovers_diameter_of_straight_tube(diameter):
    sp = (0.5, 0.5, 0.5)
    img = tube_image((40, 40, 30), sp, (2, 10.2, 7.3), (18, 9.8, 7.6), diameter, noise=0.02)
    affine = np.diag([*sp, 1.0])
    pts = cl.resample_polyline(np.array([[4.0, 10.15, 7.34], [16.0, 9.85, 7.56]]), 0.25)
    fit = ms.fit_width(img, affine, pts)
    c = ms.subject_contrast([fit] * 3, default=0.85)
    (w,) = ms.finalize_widths([fit], c)
    assert abs(w - diameter) < 0.15


def test_faint_resolved_fit_is_measured_by_its_dark_area():
    # a fit 1.2 mm wide at 0.3 contrast in a scan whose veins have 0.8: the same dark area
    # (contrast x cross-section) as a 0.73 mm vein at full contrast; a fit at 0.7 keeps its 1.2 mm
    def fit(d, c):
        return ms.WidthFit(diameter_mm=d, contrast=c, dark_area_mm2=c * np.pi * d * d / 4, resolved=True,
                           n_sections=10)

    faint, clear = fit(1.2, 0.3), fit(1.2, 0.7)
    w_faint, w_clear = ms.finalize_widths([faint, clear], 0.8, faint_fraction=0.6)
    assert abs(w_faint - 1.2 * np.sqrt(0.3 / 0.8)) < 1e-9 and w_clear == 1.2
    assert ms.width_method(faint, 0.8, 0.6) == "dark_area" and ms.width_method(clear, 0.8, 0.6) == "model_fit"
    assert ms.finalize_widths([faint], 0.8)[0] == 1.2 and ms.width_method(faint, 0.8) == "model_fit"   # off by default
    unresolved = ms.WidthFit(diameter_mm=0.4, contrast=2.0, dark_area_mm2=0.2, resolved=False, n_sections=10)
    assert ms.finalize_widths([unresolved], 0.8, faint_fraction=0.6)[0] == pytest.approx(np.sqrt(0.8 / (np.pi * 0.8)))


def test_width_fit_median_of_cross_sections_ignores_a_misplaced_stretch():
    sp = (0.5, 0.5, 0.5)
    img = tube_image((40, 40, 30), sp, (2, 10.2, 7.3), (18, 9.8, 7.6), 1.0, noise=0.02)
    affine = np.diag([*sp, 1.0])
    pts = cl.resample_polyline(np.array([[4.0, 10.15, 7.34], [16.0, 9.85, 7.56]]), 0.25)
    clean = ms.fit_width(img, affine, pts).diameter_mm
    off = pts.copy()
    off[18:30, 1] += 1.2       # the centreline 1.2 mm off the vein over 3 mm (a jog, a junction)
    fits = {how: ms.fit_width(img, affine, off, cross_section_average=how).diameter_mm for how in ("median", "mean")}
    assert abs(clean - 1.0) < 0.1
    assert abs(fits["median"] - clean) < 0.07
    assert fits["mean"] - clean > 0.08       # the averaged profile is blurred: wider
    with pytest.raises(ValueError, match="cross_section_average"):
        ms.fit_width(img, affine, pts, cross_section_average="max")


@pytest.mark.parametrize("diameter", [1.0, 1.4])
def test_width_fit_of_a_wall_vein_leaves_out_the_ventricle_and_the_sloping_background(diameter):
    # a thalamostriate-like vein: the bright ventricle 1.6 mm beside its axis, the tissue on the
    # other side darkening away from the wall
    sp = (0.5, 0.5, 0.5)
    img = tube_image((40, 40, 30), sp, (2, 10.2, 7.3), (18, 9.8, 7.6), diameter, noise=0.02)
    y_mm = (np.arange(40) * 0.5)[None, :, None]
    img = img * (1.0 + 0.12 * (y_mm - 10.0)).astype(np.float32)
    ventricle = np.broadcast_to(y_mm >= 11.6, img.shape).astype(np.float32)
    img = np.where(ventricle > 0, 1.7, img).astype(np.float32)
    affine = np.diag([*sp, 1.0])
    pts = cl.resample_polyline(np.array([[4.0, 10.15, 7.34], [16.0, 9.85, 7.56]]), 0.25)
    plain = ms.fit_width(img, affine, pts).diameter_mm
    wall = ms.fit_width(img, affine, pts, exclude=ventricle, detrend=True).diameter_mm
    assert plain - diameter > 0.15          # the constant-background fit reads the vein too wide
    assert abs(wall - diameter) < 0.1
    # nothing left to fit: no width
    assert ms.fit_width(img, affine, pts, exclude=np.ones_like(img)) is None
    # the pipeline fits on threads: pixels left out of every section (beyond the wall) raise no
    # warning and leave the process's warning filters as they were (warnings.catch_warnings is
    # not thread-safe), and every thread gets the same width
    filters_before = list(warnings.filters)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with ThreadPoolExecutor(4) as pool:
            widths = list(pool.map(lambda _: ms.fit_width(img, affine, pts, exclude=ventricle,
                                                          detrend=True).diameter_mm, range(16)))
    assert widths == [wall] * 16
    assert warnings.filters == filters_before


def test_flank_contrast_of_a_vein_beside_the_ventricle_and_of_a_grey_matter_edge():
    # a 1 mm vein (contrast 0.5) with the bright ventricle 1.6 mm beside its axis: darker than the
    # tissue all round it; the same line along the border of a darker region (grey matter at 0.85
    # of white matter, the line 0.3 mm inside it) has that region on one side: ~0
    sp = (0.5, 0.5, 0.5)
    affine = np.diag([*sp, 1.0])
    pts = cl.resample_polyline(np.array([[4.0, 10.15, 7.34], [16.0, 9.85, 7.56]]), 0.25)
    vein = tube_image((40, 40, 30), sp, (2, 10.2, 7.3), (18, 9.8, 7.6), 1.0, contrast=0.5, noise=0.02)
    y_mm = (np.arange(40) * 0.5)[None, :, None]
    vein = np.where(np.broadcast_to(y_mm >= 11.6, vein.shape), 1.7, vein).astype(np.float32)
    edge = np.broadcast_to(np.where(y_mm < 10.3, 0.85, 1.0), vein.shape).astype(np.float32)
    edge = edge + np.random.default_rng(1).normal(0, 0.02, edge.shape).astype(np.float32)
    inv = np.linalg.inv(affine)
    along_vein, along_edge = ms.flank_contrast(vein, inv, pts), ms.flank_contrast(edge, inv, pts)
    assert 0.25 < along_vein < 0.5         # blurred by the voxels: the centre voxel is partly tissue
    assert abs(along_edge) < 0.03
    assert along_edge < pl.VesselParams().min_wall_vein_flank_contrast < along_vein
    # the median over the points: a stretch off the vein does not decide
    off = pts.copy()
    off[:8, 1] -= 2.0
    assert ms.flank_contrast(vein, inv, off) > 0.25
    assert ms.flank_contrast(vein, inv, pts[:1]) == 0.0


def test_split_at_bends_cuts_a_v_of_two_veins_not_a_gentle_arc():
    t = np.linspace(0, 1, 81)[:, None]
    arm1 = np.array([0.0, 0, 0]) + t * [10.0, 10, 0]          # 14 mm, 45 degrees
    arm2 = np.array([10.0, 10, 0]) + t * [10.0, -10, 0]       # back down: a 90 degree V
    v = np.vstack([arm1, arm2[1:]])
    ang = ms.bend_angles_deg(v, 3.0)
    assert np.nanmax(ang) == pytest.approx(90.0, abs=1.0) and np.isnan(ang[0]) and np.isnan(ang[-1])
    parts = ms.split_at_bends(v, max_bend_deg=60.0)
    assert len(parts) == 2 and np.allclose(parts[0][-1], [10, 10, 0]) and np.allclose(parts[1][0], [10, 10, 0])
    phi = np.linspace(0, np.deg2rad(40), 100)                  # a 40 degree arc of radius 20 mm
    arc = np.column_stack([20 * np.sin(phi), 20 * (1 - np.cos(phi)), np.zeros_like(phi)])
    assert len(ms.split_at_bends(arc, max_bend_deg=60.0)) == 1


def test_relabel_pieces_gives_each_voxel_to_the_nearest_piece():
    from NeonatalVesselsLib.skeleton import relabel_pieces

    labels = np.zeros((20, 20, 3), np.int32)
    labels[2:18, 5, 1] = 3
    labels[10, 10, 1] = 4
    affine = np.diag([0.5, 0.5, 0.5, 1.0])
    first = np.column_stack([np.linspace(1, 4.5, 8), np.full(8, 2.5), np.full(8, 0.5)])
    second = np.column_stack([np.linspace(5, 9, 8), np.full(8, 2.5), np.full(8, 0.5)])
    out = relabel_pieces(labels, affine, {3: {3: first, 7: second}})
    assert set(out[2:10, 5, 1]) == {3} and set(out[10:18, 5, 1]) == {7}
    assert out[10, 10, 1] == 4 and (out > 0).sum() == (labels > 0).sum()


def test_split_vessels_gives_each_branch_its_own_id_and_covers_mask():
    mask = np.zeros((40, 40, 10), bool)
    mask[5:35, 18:21, 3:6] = True        # a long straight vessel
    mask[19:22, 21:35, 3:6] = True       # a branch from its middle
    res = split_vessels(mask, (0.5, 0.5, 0.5))
    assert len(res.paths_ijk) == 3       # trunk split at the junction + branch
    assert np.array_equal(res.labels > 0, mask)
    assert set(np.unique(res.labels)) - {0} == set(res.paths_ijk)


def test_split_vessels_can_trace_a_vein_through_a_side_branch():
    mask = np.zeros((40, 40, 10), bool)
    mask[5:35, 18:21, 3:6] = True
    mask[19:22, 21:35, 3:6] = True
    res = split_vessels(mask, (0.5, 0.5, 0.5), junction_angle_deg=40.0)
    assert len(res.paths_ijk) == 2
    trunk = max(res.paths_ijk.values(), key=len)
    assert trunk[:, 0].min() <= 7 and trunk[:, 0].max() >= 32   # one path along the whole trunk
    assert np.array_equal(res.labels > 0, mask)


def test_split_vessels_works_in_the_mask_box_with_whole_array_indices():
    # the mask placed at an offset in a larger array: same vessels, same labels, paths
    # shifted by the offset (spacings that are powers of two keep the mm arithmetic exact)
    rng = np.random.default_rng(4)
    mask = np.zeros((40, 40, 12), bool)
    mask[5:35, 18:21, 3:6] = True
    mask[19:22, 21:35, 3:6] = True
    mask[8:30, 5:7, 8:10] = True
    mask[30:33, 30:33, 8:11] = True      # a blob
    mask |= ndimage.binary_dilation(rng.random(mask.shape) < 0.01)
    sp = (0.5, 0.25, 1.0)
    small = split_vessels(mask, sp, min_spur_mm=1.5, min_path_mm=1.0)
    big = np.zeros((61, 47, 30), bool)
    off = np.array([13, 2, 9])
    big[13:53, 2:42, 9:21] = mask
    res = split_vessels(big, sp, min_spur_mm=1.5, min_path_mm=1.0)
    assert len(small.paths_ijk) > 3
    assert np.array_equal(res.labels[13:53, 2:42, 9:21], small.labels) and res.labels.sum() == small.labels.sum()
    assert res.paths_ijk.keys() == small.paths_ijk.keys()
    for vid, p in small.paths_ijk.items():
        assert np.array_equal(res.paths_ijk[vid], p + off)
    assert split_vessels(np.zeros((5, 6, 7), bool), sp).labels.shape == (5, 6, 7)


def test_split_vessels_gives_each_voxel_to_a_nearest_path_of_its_component():
    import cc3d

    rng = np.random.default_rng(7)
    mask = np.zeros((36, 30, 14), bool)
    mask[4:32, 12:15, 5:8] = True                   # a trunk ...
    mask[15:18, 15:28, 5:8] = True                  # ... with a branch: one component, several paths
    mask[6:26, 3:5, 9:12] = True
    mask |= ndimage.binary_dilation(rng.random(mask.shape) < 0.006)
    sp = np.array([0.5, 0.4, 1.0])
    res = split_vessels(mask, sp, min_spur_mm=1.5, min_path_mm=1.0, junction_angle_deg=40.0)
    comps = cc3d.connected_components(mask.astype(np.uint8), connectivity=26)
    several = [c for c in np.unique(comps[res.labels > 0])
               if len(set(np.unique(res.labels[comps == c])) - {0}) > 1]
    assert several                                  # the check below is about those
    for c in several:
        ids = [vid for vid, p in res.paths_ijk.items() if comps[tuple(p[0])] == c]
        vox = np.argwhere(comps == c)
        dist = np.stack([np.min(np.linalg.norm((vox[:, None, :] - res.paths_ijk[vid][None]) * sp, axis=2), axis=1)
                         for vid in ids], axis=1)
        got = res.labels[tuple(vox.T)]
        own = dist[np.arange(len(vox)), [ids.index(int(v)) for v in got]]
        assert np.all(own <= dist.min(axis=1) + 1e-9)


def test_voxels_by_label_and_branch_geometry_kernels():
    from NeonatalVesselsLib.skeleton import _branch_geometry, _voxels_by_label

    labels = np.random.default_rng(3).integers(0, 6, 500).astype(np.uint16)
    wanted = np.array([False, True, False, True, True, False])
    flat, starts = _voxels_by_label(labels, wanted)
    for c in range(6):
        expected = np.flatnonzero(labels == c) if wanted[c] else np.zeros(0, np.int64)
        assert np.array_equal(flat[starts[c]:starts[c + 1]], expected)
    # an L-shaped branch: 3 mm along x, then 3 mm along y (points every 1 mm), and a one-point branch
    xyz = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0], [3, 1, 0], [3, 2, 0], [3, 3, 0], [9, 9, 9]], float)
    length, direction = _branch_geometry(xyz, np.arange(8, dtype=np.int64), np.array([0, 7, 8], np.int64), 2.0)
    assert np.allclose(length, [6.0, 0.0])
    assert np.allclose(direction[0, 0], [1, 0, 0]) and np.allclose(direction[0, 1], [0, -1, 0])
    _, long_span = _branch_geometry(xyz, np.arange(8, dtype=np.int64), np.array([0, 7, 8], np.int64), 4.0)
    assert np.allclose(long_span[0, 0], np.array([3, 1, 0]) / np.sqrt(10))   # 4 mm along: the corner passed
    assert np.all(direction[1] == 0)


def test_skeleton_graph_nodes_branches_and_loops():
    from NeonatalVesselsLib.skeleton import skeleton_graph, trace_vessels

    skel = np.zeros((30, 30, 3), bool)
    skel[2:20, 10, 1] = True           # a line ...
    skel[10, 11:20, 1] = True          # ... with a side branch: a junction at (10, 10)
    ring = np.zeros((30, 30), bool)
    yy, xx = np.mgrid[:30, :30]
    r = np.hypot(yy - 22, xx - 22)
    ring[(r >= 4.5) & (r < 5.5)] = True
    from skimage.morphology import skeletonize
    skel[:, :, 1] |= skeletonize(ring)  # a closed loop without any node
    g = skeleton_graph(skel, (1.0, 1.0, 1.0))
    covered = np.zeros(len(g.points), bool)
    for b in g.branches:
        covered[b] = True
    # every voxel lies on a branch, except inner voxels of the junction cluster
    assert np.abs(g.points[~covered] - [10, 10, 1]).max(initial=0) <= 1
    loops = [b for b, (a, c) in enumerate(g.ends) if a == c]
    assert len(loops) == 1               # the ring, closed on its own node
    assert len(g.branches) == 4          # 2 halves of the line + side branch + ring
    # split everywhere: 4 vessels; traced through the straight junction: 3 (line, branch, ring)
    assert len(trace_vessels(g, (1, 1, 1), min_spur_mm=0.0, junction_angle_deg=None)) == 4
    assert len(trace_vessels(g, (1, 1, 1), min_spur_mm=0.0, junction_angle_deg=30.0)) == 3
    # a short free side branch is a spur: pruned, the line becomes one vessel
    assert len(trace_vessels(g, (1, 1, 1), min_spur_mm=12.0, junction_angle_deg=None)) == 2
    # the branch buffer grows when full and keeps what it held
    from NeonatalVesselsLib.skeleton import _room

    full = np.array([7, 8], np.int64)
    grown = _room(full, 2)
    assert len(grown) == 4 and grown[:2].tolist() == [7, 8]
    assert _room(grown, 2) is grown


def test_local_contrast_is_vein_darkness_not_edges_or_wide_regions():
    from NeonatalVesselsLib.segmentation import local_contrast

    sp = (0.5, 0.5, 0.5)
    img = tube_image((40, 40, 30), sp, (2, 10, 7.5), (18, 10, 7.5), 1.0, contrast=0.5)
    img[:, :, :8] = 0.6                  # a wide dark region (deep grey matter) ...
    img[:, :, 22:] = 1.4                 # ... and a bright one (CSF)
    c = local_contrast(img, sp, background_mm=3.0, smoothing_mm=0.5)
    assert c[20, 20, 15] > 0.12          # vein centre (1 mm, contrast 0.5, after 0.5 mm smoothing)
    assert abs(c[20, 30, 3]) < 0.02      # interior of the wide dark region
    assert abs(c[20, 30, 20]) < 0.02     # tissue beside the bright region (a Hessian halo there)
    assert abs(c[20, 30, 12]) < 0.02     # plain tissue


def test_merge_fragments_joins_collinear_gap_only():
    a = np.array([[0, 0, 0], [5, 0, 0.0]])
    b = np.array([[7, 0.2, 0], [12, 0.3, 0.0]])
    c = np.array([[5, 2, 0], [5, 8, 0.0]])     # perpendicular: not joined
    labels = np.array([0, 1, 2, 3])
    lines, lab = merge_fragments({1: a, 2: b, 3: c}, labels, max_gap_mm=3.0)
    assert sorted(lines) == [1, 3]
    assert lab.tolist() == [0, 1, 1, 3]
    assert cl.arc_length_mm(lines[1]) > 11.9


def test_merge_fragments_chains_three_pieces_and_respects_vetoes():
    a = np.array([[0, 0, 0], [5, 0, 0.0]])
    b = np.array([[6.5, 0, 0], [11, 0, 0.0]])
    c = np.array([[12.5, 0, 0], [18, 0, 0.0]])
    labels = np.array([0, 1, 2, 3])
    lines, lab = merge_fragments({1: a, 2: b, 3: c}, labels, max_gap_mm=2.0)
    assert sorted(lines) == [1] and lab.tolist() == [0, 1, 1, 1]
    assert abs(cl.arc_length_mm(lines[1]) - 18.0) < 1e-6
    # a vetoed piece is joined to nothing; a refused gap is not crossed
    lines, lab = merge_fragments({1: a, 2: b, 3: c}, labels, max_gap_mm=2.0, can_join={2: False})
    assert sorted(lines) == [1, 2, 3]
    lines, lab = merge_fragments({1: a, 2: b, 3: c}, labels, max_gap_mm=2.0,
                                 gap_ok=lambda p, q: min(p[0], q[0]) > 8)
    assert sorted(lines) == [1, 2] and lab.tolist() == [0, 1, 2, 2]


def test_merge_fragments_refuses_a_zigzag_join():
    a = np.array([[0, 0, 0], [5, 0, 0.0]])
    b = np.array([[6, 0, 0], [11, 0, 0.0]])
    labels = np.array([0, 1, 2])
    veto = lambda first, second: cl.tortuosity(np.vstack([first, second])) <= 1.01
    lines, _ = merge_fragments({1: a, 2: b}, labels, max_gap_mm=2.0, join_ok=veto)
    assert sorted(lines) == [1]            # straight: joined
    lines, _ = merge_fragments({1: a, 2: b}, labels, max_gap_mm=2.0, join_ok=lambda f, s: False)
    assert sorted(lines) == [1, 2]         # vetoed


def test_dmv_rule_needs_clearance_from_sulcal_csf():
    from NeonatalVesselsLib.regions import classify_vessels

    shape, affine = (80, 60, 40), np.eye(4)
    vent = np.zeros(shape, bool)
    vent[5:15, 20:40, 15:25] = True
    from scipy import ndimage
    vdist = ndimage.distance_transform_edt(~vent).astype(np.float32)
    depth = np.full(shape, 30.0, np.float32)
    line = np.column_stack([np.linspace(16, 40, 50), np.full(50, 30.0), np.full(50, 20.0)])  # radial from the wall
    far = np.full(shape, 10.0, np.float32)
    near = np.full(shape, 1.0, np.float32)
    kw = dict(vent_dist_mm=vdist, depth_mm=depth, midline_x=-50.0, foramen_y_mm=30.0)
    assert classify_vessels({1: line}, affine, csf_dist_mm=far, **kw)[1][0] == "dmv"
    assert classify_vessels({1: line}, affine, csf_dist_mm=near, **kw)[1][0] == "other"
    assert classify_vessels({1: line}, affine, **kw)[1][0] == "dmv"   # no CSF map given: rule not applied


def test_dmv_rule_keeps_clear_of_the_midline():
    # a radial dark line from the medial wall of a ventricle towards the falx is not a DMV; the
    # same line 10 mm further out in the hemisphere is
    from scipy import ndimage

    from NeonatalVesselsLib.regions import RegionRules, classify_vessels

    shape, affine = (80, 60, 40), np.eye(4)
    vent = np.zeros(shape, bool)
    vent[20:30, 20:40, 15:25] = True        # a ventricle whose medial wall is 8 mm from the midline x = 12
    vdist = ndimage.distance_transform_edt(~vent).astype(np.float32)
    medial = np.column_stack([np.linspace(19, 13, 25), np.full(25, 30.0), np.full(25, 20.0)])   # median |dx| 4 mm
    lateral = np.column_stack([np.linspace(31, 40, 25), np.full(25, 30.0), np.full(25, 20.0)])
    kw = dict(vent_dist_mm=vdist, depth_mm=np.full(shape, 30.0, np.float32), midline_x=12.0, foramen_y_mm=30.0)
    assert classify_vessels({1: medial, 2: lateral}, affine, **kw) == {1: ("other", "right"), 2: ("dmv", "right")}
    off = RegionRules(dmv_midline_mm=0.0)
    assert classify_vessels({1: medial}, affine, rules=off, **kw)[1][0] == "dmv"   # the rule, not another one


def test_dmv_rule_near_the_midline_takes_wall_anchored_radial_lines():
    # 4-6 mm from the midline a line is a DMV only when it starts at the ventricle wall, runs
    # radially and keeps clear of the midline: a vein rising from the roof of a ventricle whose
    # medial wall is 3 mm from the midline, not the same line starting 7 mm above the roof
    from scipy import ndimage

    from NeonatalVesselsLib.regions import RegionRules, classify_vessels

    shape, affine = (80, 60, 50), np.eye(4)
    vent = np.zeros(shape, bool)
    vent[15:30, 20:40, 10:20] = True        # medial wall at x = 15, midline x = 12; roof at z = 19
    vdist = ndimage.distance_transform_edt(~vent).astype(np.float32)
    rising = np.column_stack([np.full(25, 17.0), np.full(25, 30.0), np.linspace(20, 32, 25)])   # |dx| 5 mm
    detached = rising + [0.0, 0.0, 7.0]
    kw = dict(vent_dist_mm=vdist, depth_mm=np.full(shape, 30.0, np.float32), midline_x=12.0, foramen_y_mm=30.0)
    assert classify_vessels({1: rising, 2: detached}, affine, **kw) == {1: ("dmv", "right"), 2: ("other", "right")}
    off = RegionRules(dmv_near_midline_mm=None)
    assert classify_vessels({1: rising}, affine, rules=off, **kw)[1][0] == "other"   # the exception, not another rule
    assert classify_vessels({1: rising}, affine, rules=RegionRules(dmv_near_midline_clear_mm=5.5), **kw)[1][0] == "other"
    assert classify_vessels({1: rising}, affine, rules=RegionRules(dmv_near_midline_min_radial=1.01), **kw)[1][0] == "other"


def test_long_radial_dmv_needs_less_darkness_in_noise():
    # on a noisy scan a long line running radially needs faint_dmv_darkness_noise_factor x the
    # noise SD along it, a short or non-radial one dmv_darkness_noise_factor x
    from NeonatalVesselsLib.pipeline import VesselParams, _dmv_min_darkness

    def line(length_mm):
        return np.column_stack([np.linspace(0, length_mm, 41), np.zeros(41), np.zeros(41)])

    params = VesselParams()
    need = _dmv_min_darkness(params, noise_sd=0.15)
    assert need(line(10.0), 0.9) == pytest.approx(max(params.min_dmv_darkness, params.faint_dmv_darkness_noise_factor * 0.15))
    assert need(line(10.0), 0.5) == pytest.approx(params.dmv_darkness_noise_factor * 0.15)
    assert need(line(6.0), 0.9) == pytest.approx(params.dmv_darkness_noise_factor * 0.15)
    assert need(line(10.0), 0.9) < need(line(6.0), 0.9)
    # a quiet scan: the floor min_dmv_darkness for every line
    quiet = _dmv_min_darkness(params, noise_sd=0.02)
    assert quiet(line(10.0), 0.9) == quiet(line(6.0), 0.2) == params.min_dmv_darkness
    off = _dmv_min_darkness(VesselParams(faint_dmv_darkness_noise_factor=0.0), noise_sd=0.15)
    assert off(line(10.0), 0.9) == pytest.approx(params.dmv_darkness_noise_factor * 0.15)


def test_dmv_rule_wants_deep_white_matter_away_from_the_wall():
    # a radial dark line whose middle lies < 5 mm from the brain surface or from CSF outside the
    # ventricles (cortex of a fold) and one whose middle lies < 2.5 mm from the ventricle
    # (subependymal layer) are not DMVs; the same lines deeper / further out are, and each rule
    # alone is what refuses its line
    from scipy import ndimage

    from NeonatalVesselsLib.regions import RegionRules, classify_vessels

    shape, affine = (80, 60, 40), np.eye(4)
    vent = np.zeros(shape, bool)
    vent[5:15, 20:40, 15:25] = True
    vdist = ndimage.distance_transform_edt(~vent).astype(np.float32)
    radial = np.column_stack([np.linspace(16, 26, 41), np.full(41, 30.0), np.full(41, 20.0)])   # median vd 6 mm
    depth = np.full(shape, 30.0, np.float32)
    shallow = depth.copy()
    shallow[14:30] = 4.0                     # the line's whole course lies 4 mm deep
    kw = dict(vent_dist_mm=vdist, midline_x=-50.0, foramen_y_mm=30.0)
    assert classify_vessels({1: radial}, affine, depth_mm=depth, **kw)[1][0] == "dmv"
    assert classify_vessels({1: radial}, affine, depth_mm=shallow, **kw)[1][0] == "other"
    assert classify_vessels({1: radial}, affine, depth_mm=shallow, rules=RegionRules(dmv_min_depth_mm=0.0),
                            **kw)[1][0] == "dmv"
    # deep below the brain surface but 4.5 mm from sulcal / extracerebral CSF: the nearer one
    # counts (the same whether the brain mask holds the extracerebral CSF or not)
    csf = np.full(shape, 4.5, np.float32)
    assert classify_vessels({1: radial}, affine, depth_mm=depth, csf_dist_mm=csf, **kw)[1][0] == "other"
    assert classify_vessels({1: radial}, affine, depth_mm=depth, csf_dist_mm=csf,
                            rules=RegionRules(dmv_min_depth_mm=0.0), **kw)[1][0] == "dmv"
    # 6 mm long, rising from the wall at a shallow angle: radial 0.33, median 2.2 mm from the ventricle
    hugging = np.column_stack([np.linspace(15.2, 17.2, 25), np.linspace(26, 31.7, 25), np.full(25, 20.0)])
    assert classify_vessels({1: hugging}, affine, depth_mm=depth, **kw)[1][0] != "dmv"
    assert classify_vessels({1: hugging}, affine, depth_mm=depth, rules=RegionRules(dmv_min_vent_dist_mm=0.0),
                            **kw)[1][0] == "dmv"


def test_csf_lateral_to_the_lateral_ventricles_is_not_ventricle():
    # a brain ball of radius 45 mm (1 mm voxels, x along axis 0, midline x = 0): two lateral
    # ventricles (x -20..-6 and 6..20), a third ventricle on the midline, and a deep bright blob
    # at x = 31 (insular cistern cut off from the surface CSF): ventricle only without the rule
    from NeonatalVesselsLib import masks as mk

    n = 101
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = -50.0                       # voxel 50 = RAS 0
    x, y, z = np.meshgrid(*(np.arange(n) - 50.0,) * 3, indexing="ij")
    brain = x ** 2 + y ** 2 + z ** 2 <= 45.0 ** 2
    img = np.where(brain, 1.0, 0.0).astype(np.float32)
    lateral = (np.abs(x) >= 6) & (np.abs(x) <= 20) & (np.abs(y) <= 15) & (np.abs(z) <= 3)
    third = (np.abs(x) <= 1) & (np.abs(y) <= 6) & (np.abs(z + 8) <= 4)
    insular = ((x - 31) ** 2 + y ** 2 + (z + 4) ** 2) <= 3.5 ** 2
    for m in (lateral, third, insular):
        img[m] = 2.0
    depth = mk.brain_depth_mm(brain, (1.0, 1.0, 1.0))
    assert np.median(depth[insular]) >= 8.0      # deep enough for the depth rules
    plain, _ = mk.csf_masks(img, brain, (1.0, 1.0, 1.0), depth_mm=depth)
    vent, other = mk.csf_masks(img, brain, (1.0, 1.0, 1.0), depth_mm=depth, affine=affine, midline_x_mm=0.0)
    assert plain[insular].all()
    assert not vent[insular].any() and other[insular].all()
    assert vent[lateral].all() and vent[third].all()
    # one lateral ventricle broken into six pieces (each < 0.3 x the other one): the pieces are
    # kept by the other side's reach from the midline, not by their own size
    img2 = img.copy()
    cuts = (x < 0) & np.isin(y, (-10, -5, 0, 5, 10))
    img2[cuts] = 1.0
    plain2, _ = mk.csf_masks(img2, brain, (1.0, 1.0, 1.0), depth_mm=depth)
    vent2, _ = mk.csf_masks(img2, brain, (1.0, 1.0, 1.0), depth_mm=depth, affine=affine, midline_x_mm=0.0)
    assert np.array_equal(vent2, plain2 & ~insular)
    assert vent2[lateral & (x < 0)].sum() >= 0.8 * (lateral & (x < 0)).sum()


def test_slit_ventricle_pieces_beside_a_larger_third_ventricle_are_ventricle():
    # a brain ball (1 mm voxels, midline x = 0): a third ventricle on the midline (1.1 mL), each lateral
    # ventricle a row of 20-27 mm^3 pieces (slit ventricles broken by the partial volume), a deep lateral
    # blob at x = 31 (an insular cistern cut off from the surface CSF, smaller than 0.3 x a piece)
    from NeonatalVesselsLib import masks as mk

    n = 101
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = -50.0
    x, y, z = np.meshgrid(*(np.arange(n) - 50.0,) * 3, indexing="ij")
    brain = x ** 2 + y ** 2 + z ** 2 <= 45.0 ** 2
    img = np.where(brain, 1.0, 0.0).astype(np.float32)
    third = (np.abs(x) <= 2) & (np.abs(y) <= 10) & (np.abs(z + 8) <= 8)
    pieces = np.zeros_like(brain)
    for cy in range(-16, 17, 8):
        pieces |= (np.abs(np.abs(x) - 12) <= 1) & (np.abs(y - cy) <= 1 + (cy == 0)) & (np.abs(z - 4) <= 1)
    insular = (np.abs(x - 31) <= 1) & (y >= 0) & (y <= 1) & (z >= 0) & (z <= 1)     # 12 mm^3
    for m in (third, pieces, insular):
        img[m] = 2.0
    depth = mk.brain_depth_mm(brain, (1.0, 1.0, 1.0))
    kw = dict(depth_mm=depth, affine=affine, midline_x_mm=0.0)
    # the first look: the pieces are below its 50 mm^3; the third ventricle alone is < 2 mL
    first, _ = mk.csf_masks(img, brain, (1.0, 1.0, 1.0), small_ventricles_mm3=0.0, **kw)
    assert np.array_equal(first, third)
    vent, other = mk.csf_masks(img, brain, (1.0, 1.0, 1.0), **kw)
    assert vent[third].all() and vent[pieces].all() and not other[pieces].any()
    assert not vent[insular].any()
    # kept by its volume (>= 10 mm^3), dropped by the lateral rule judged by the pieces off the midline
    assert np.count_nonzero(insular) >= mk.SLIT_VENTRICLE_MIN_VOLUME_MM3
    # ventricles of >= 2 mL found at the first look are kept as they are
    big = img.copy()
    big[(np.abs(np.abs(x) - 12) <= 4) & (np.abs(y) <= 18) & (np.abs(z - 4) <= 3)] = 2.0
    assert np.array_equal(mk.csf_masks(big, brain, (1.0, 1.0, 1.0), **kw)[0],
                          mk.csf_masks(big, brain, (1.0, 1.0, 1.0), small_ventricles_mm3=0.0, **kw)[0])


def test_head_frame_finds_the_turn_of_a_symmetric_brain():
    # an ellipsoid brain (1 mm voxels, 95 x 115 x 80 mm) with a notch on the patient's left frontal
    # side mirrored on the right: turned by yaw 20 and roll -10 degrees about its centre, its
    # mirror plane is found within 1.5 degrees, and in the head's frame the mirror images of
    # points have x = 2 midline_x - x; an unturned brain keeps the RAS frame (identity)
    from scipy.spatial.transform import Rotation

    from NeonatalVesselsLib import masks as mk

    n = 131
    affine = np.eye(4)
    affine[:3, 3] = -65.0
    grid = np.stack(np.meshgrid(*(np.arange(n) - 65.0,) * 3, indexing="ij"), axis=-1)

    def brain_turned(yaw, roll):
        turn = Rotation.from_euler("zy", [yaw, roll], degrees=True).as_matrix()
        head = (grid.reshape(-1, 3) - 3.0) @ turn       # voxel centres in the head's frame (head centred at +3 mm)
        inside = ((head / (47.5, 57.5, 40.0)) ** 2).sum(1) <= 1.0
        notch = (np.abs(np.abs(head[:, 0]) - 20.0) < 6.0) & (head[:, 1] > 35.0)
        return (inside & ~notch).reshape((n,) * 3)

    yaw, roll = mk.symmetry_tilt_deg(brain_turned(20.0, -10.0), affine)
    assert abs(yaw - 20.0) <= 1.5 and abs(roll + 10.0) <= 1.5
    to_head, mid, info = mk.head_frame(brain_turned(20.0, -10.0), affine)
    assert info["turned"] and abs(info["tilt_deg"] - 22.2) < 2.0
    turn = Rotation.from_euler("zy", [20.0, -10.0], degrees=True).as_matrix()
    p = np.array([[10.0, 5.0, 0.0], [-25.0, 30.0, 12.0]]) @ turn.T + 3.0      # head points -> RAS
    mirror = (p - 3.0) @ turn * np.array([-1.0, 1.0, 1.0]) @ turn.T + 3.0      # their mirror images
    x, x_mirror = (p @ to_head[:3, :3].T + to_head[:3, 3])[:, 0], (mirror @ to_head[:3, :3].T + to_head[:3, 3])[:, 0]
    np.testing.assert_allclose(x + x_mirror, 2.0 * mid, atol=2.0)
    eye, mid0, info0 = mk.head_frame(brain_turned(0.0, 0.0), affine)
    assert not info0["turned"] and np.array_equal(eye, np.eye(4)) and abs(mid0 - 3.0) <= 0.5


def test_module_min_dmv_length_reaches_the_dmv_rule():
    # the module's "minimum DMV length" setting is the DMV rule's length (one parameter)
    from scipy import ndimage

    from NeonatalVesselsLib import mrml_logic as ml
    from NeonatalVesselsLib.regions import classify_vessels

    shape, affine = (80, 60, 40), np.eye(4)
    vent = np.zeros(shape, bool)
    vent[5:15, 20:40, 15:25] = True
    vdist = ndimage.distance_transform_edt(~vent).astype(np.float32)
    line = np.column_stack([np.linspace(16, 22, 25), np.full(25, 30.0), np.full(25, 20.0)])  # 6 mm, radial
    kw = dict(vent_dist_mm=vdist, depth_mm=np.full(shape, 30.0, np.float32), midline_x=-50.0, foramen_y_mm=30.0)
    for setting, region in ((4.0, "dmv"), (8.0, "other")):
        rules = ml.vessel_params(min_dmv_length_mm=setting).rules
        assert classify_vessels({1: line}, affine, rules=rules, **kw)[1][0] == region, setting
        # the tracking's seeds: DMVs but for their length (a line > 12 mm from the ventricles is not one)
        short: set[int] = set()
        across = np.column_stack([np.full(25, 30.0), np.linspace(42, 48, 25), np.full(25, 20.0)])
        classify_vessels({1: line, 2: across}, affine, rules=rules, dmv_but_short=short, **kw)
        assert short == (set() if region == "dmv" else {1}), setting


def test_wall_veins_split_at_the_foramen():
    from scipy import ndimage

    from NeonatalVesselsLib.regions import classify_vessels, foramen_y_mm

    shape, affine = (80, 100, 40), np.eye(4)
    vent = np.zeros(shape, bool)
    vent[20:30, 10:90, 15:25] = True          # a lateral ventricle along y = 10..89
    vdist = ndimage.distance_transform_edt(~vent).astype(np.float32)
    y = np.argwhere(vent)[:, 1].astype(float)
    yf = foramen_y_mm(y, 0.65)
    assert yf == pytest.approx(10 + 0.65 * 79, abs=0.5)   # 0.5th-99.5th percentile of y: 10..89
    assert foramen_y_mm(np.zeros(0)) is None
    kw = dict(vent_dist_mm=vdist, depth_mm=np.full(shape, 30.0, np.float32), midline_x=-50.0, foramen_y_mm=yf)
    along = lambda y0, y1: np.column_stack([np.full(20, 31.5), np.linspace(y0, y1, 20), np.full(20, 20.0)])
    out = classify_vessels({1: along(20, 50), 2: along(70, 85)}, affine, **kw)
    assert out[1][0] == "thalamic" and out[2][0] == "anterior_caudate"


def test_merge_fragments_accepts_lines_without_voxels():
    a = np.column_stack([np.linspace(0, 5, 21), np.zeros(21), np.zeros(21)])
    b = np.column_stack([np.linspace(5.5, 10, 19), np.zeros(19), np.zeros(19)])
    labels = np.zeros((4, 4, 4), np.int32)
    labels[0, 0, 0] = 1                       # line 9 owns no voxel
    lines, out = merge_fragments({1: a, 9: b}, labels, max_gap_mm=2.0)
    assert sorted(lines) == [1] and out[0, 0, 0] == 1 and out.sum() == 1


def test_merge_across_a_slice_jog_uses_the_slice_metric():
    from NeonatalVesselsLib.skeleton import merge_fragments

    # a vein rising slowly through 2 mm slices: in-plane runs joined by a one-slice jog
    a = np.column_stack([np.linspace(0, 6, 25), np.zeros(25), np.zeros(25)])
    b = np.column_stack([np.linspace(6, 12, 25), np.zeros(25), np.full(25, 2.0)])
    b[:4, 2] = np.linspace(0.5, 2.0, 4)      # the jog at the start of the second run
    labels = np.zeros((4, 4, 4), np.int32)
    labels[0, 0, 0], labels[1, 1, 1] = 1, 2
    n = np.array([0.0, 0.0, 1.0])
    plain, _ = merge_fragments({1: a, 2: b}, labels, max_gap_mm=2.0, max_angle_deg=20.0)
    assert sorted(plain) == [1, 2]            # the jog bends the end direction too much
    metric = np.eye(3) - 0.75 * np.outer(n, n)
    joined, _ = merge_fragments({1: a, 2: b}, labels, max_gap_mm=2.0, max_angle_deg=20.0, metric=metric)
    assert sorted(joined) == [1] and len(joined[1]) == 50


def test_drop_short_components_uses_physical_extent():
    from NeonatalVesselsLib.segmentation import drop_short_components

    mask = np.zeros((20, 20, 10), bool)
    mask[2:4, 2, 2] = True          # 2 voxels in-plane: 0.5 mm between centres
    mask[10, 10, 2:4] = True        # 2 voxels across 2 mm slices: 2 mm
    mask[15, 3:8, 5] = True         # 5 voxels in-plane: 2 mm
    out = drop_short_components(mask, (0.5, 0.5, 2.0), 1.5)
    assert not out[2:4, 2, 2].any()
    assert out[10, 10, 2:4].all() and out[15, 3:8, 5].all()
    assert out.sum() == 7


def test_append_row_never_duplicates_header_and_drops_torn_line(tmp_path):
    f = tmp_path / "m.csv"
    append_row(f, {"case_id": "a", "x": 1.5})
    with open(f, "a") as fh:
        fh.write("b,2")            # torn line (no newline): an interrupted writer
    append_row(f, {"case_id": "c", "x": 3.0, "y": 4})
    rows = read_rows(f)
    assert [r["case_id"] for r in rows] == ["a", "c"]
    assert rows[1]["y"] == "4" and rows[0]["y"] == ""


def _square_worker(case_id, value, *, out_dir):
    import os
    from pathlib import Path

    if value == "bad":
        raise InputError(f"case {case_id}: bad value")
    os.makedirs(out_dir)
    Path(out_dir, "result.txt").write_text(str(int(value) ** 2))
    return {"square": int(value) ** 2}


def test_run_batch_logs_failure_and_resumes_without_duplicates(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    cases = [("c1", "2"), ("c2", "bad"), ("c3", "4")]
    res = run_batch(cases, _square_worker, tmp_path, executor=ThreadPoolExecutor(2))
    assert {r["case_id"]: r["status"] for r in res} == {"c1": "done", "c2": "failed", "c3": "done"}
    errors = read_rows(tmp_path / "errors.csv")
    assert errors[0]["case_id"] == "c2" and "bad value" in errors[0]["message"]
    # restart with the failure fixed and a leftover half-written folder of a new case
    (tmp_path / "c4").mkdir()
    (tmp_path / "c4" / "partial.tmp").write_text("x")
    cases2 = [("c1", "2"), ("c2", "3"), ("c3", "4"), ("c4", "5")]
    res2 = run_batch(cases2, _square_worker, tmp_path, executor=ThreadPoolExecutor(2))
    assert {r["case_id"]: r["status"] for r in res2} == {"c1": "skipped", "c2": "done", "c3": "skipped", "c4": "done"}
    rows = read_rows(tmp_path / "metrics.csv")
    assert sorted(r["case_id"] for r in rows) == ["c1", "c2", "c3", "c4"]
    assert {r["case_id"]: int(r["square"]) for r in rows} == {"c1": 4, "c2": 9, "c3": 16, "c4": 25}
    assert not (tmp_path / "c4" / "partial.tmp").exists()     # moved aside, not mixed in
    assert any((tmp_path / ".incomplete").iterdir())


def test_run_batch_refuses_to_resume_with_other_settings(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    settings = {"analysis": "square", "parameters": {"scale": [1.0, 2.0], "rules": {"depth_mm": 5.0}}}
    run_batch([("c1", "2")], _square_worker, tmp_path, executor=ThreadPoolExecutor(1), settings=settings)
    assert json.loads((tmp_path / "batch_settings.json").read_text()) == settings
    other = {"analysis": "square", "parameters": {"scale": [1.0, 2.0], "rules": {"depth_mm": 6.0}}}
    with pytest.raises(ValueError, match=r"other settings \(different: parameters\.rules\.depth_mm\)"):
        run_batch([("c1", "2"), ("c2", "3")], _square_worker, tmp_path, executor=ThreadPoolExecutor(1),
                  settings=other)
    assert not (tmp_path / "c2").exists()      # refused before any case ran
    # a folder started by another version: the message names both versions (resuming "with the
    # recorded settings" cannot remove a setting the newer version has)
    run_batch([], _square_worker, tmp_path / "v1", executor=ThreadPoolExecutor(1), settings={**settings, "version": "1.0"})
    newer = {"analysis": "square", "version": "1.1",
             "parameters": {"scale": [1.0, 2.0], "rules": {"depth_mm": 5.0, "width_mm": 1.0}}}
    with pytest.raises(ValueError, match=r"started by version 1\.0 of this program, this is 1\.1.*parameters\.rules\.width_mm"):
        run_batch([("c1", "2"), ("c2", "3")], _square_worker, tmp_path / "v1", executor=ThreadPoolExecutor(1),
                  settings=newer)
    assert not (tmp_path / "v1" / "c2").exists()
    with pytest.raises(ValueError, match=r"other settings \(different: parameters\.rules\.width_mm, version\)"):
        run_batch([("c1", "2"), ("c2", "3")], _square_worker, tmp_path, executor=ThreadPoolExecutor(1),
                  settings=newer)
    assert not (tmp_path / "c2").exists()
    res = run_batch([("c1", "2"), ("c2", "3")], _square_worker, tmp_path, executor=ThreadPoolExecutor(1),
                    settings=json.loads(json.dumps(settings)))
    assert {r["case_id"]: r["status"] for r in res} == {"c1": "skipped", "c2": "done"}
    assert [r["case_id"] for r in read_rows(tmp_path / "metrics.csv")] == ["c1", "c2"]


def test_vessel_params_from_dict_checks_names_and_kinds():
    from NeonatalVesselsLib.pipeline import VesselParams

    default = VesselParams()
    stored = json.loads(json.dumps(default.as_dict()))          # summary.json's provenance.parameters
    assert VesselParams.from_dict(stored) == default
    p = VesselParams.from_dict({"psf_extra_sigma_mm": 0.2, "scales_mm": [0.4, 0.7], "junction_angle_deg": 30,
                                "rules": {"dmv_start_mm": 14}})
    assert (p.psf_extra_sigma_mm, p.scales_mm, p.junction_angle_deg) == (0.2, (0.4, 0.7), 30.0)
    assert p.rules.dmv_start_mm == 14.0 and p.rules.min_radial == default.rules.min_radial
    for bad, message in [({"psf_sigma_mm": 0.2}, "unknown setting.*psf_sigma_mm .did you mean psf_extra_sigma_mm"),
                         ({"rules": {"dmv_start": 1}}, r"parameters\.rules: unknown setting.*dmv_start_mm"),
                         ({"threshold_high": "0.1"}, r"parameters\.threshold_high: expected a finite number"),
                         ({"threshold_high": float("nan")}, "threshold_high: expected a finite number"),
                         ({"trim_hooks": 1}, "trim_hooks: expected true or false"),
                         ({"scales_mm": 0.4}, "scales_mm: expected a list"),
                         ({"threshold_low": None}, "threshold_low: may not be null"),
                         ({"rules": [1]}, r"parameters\.rules: expected an object"),
                         ([0.4], "parameters: expected an object")]:
        with pytest.raises(InputError, match=message):
            VesselParams.from_dict(bad)
    # settings stored by another version: unknown names are ignored
    assert VesselParams.from_dict({"retired_setting": 1, "rules": {"old_rule": 2}}, strict=False) == default


def test_run_batch_on_dask_local_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://",
                                  host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        res = run_batch([("a", "3"), ("b", "bad")], _square_worker, tmp_path, executor=client.get_executor())
    assert {r["case_id"]: r["status"] for r in res} == {"a": "done", "b": "failed"}
    assert read_rows(tmp_path / "metrics.csv")[0]["square"] == "9"


def test_hysteresis_threshold_equals_scikit_image():
    from scipy import ndimage
    from skimage.filters import apply_hysteresis_threshold

    from NeonatalVesselsLib.segmentation import hysteresis_threshold

    x = ndimage.gaussian_filter(np.random.default_rng(1).random((60, 50, 40)), 1.5).astype(np.float32)
    for low, high in ((0.5, 0.55), (0.45, 0.6), (0.9, 0.95)):
        assert np.array_equal(hysteresis_threshold(x, low, high), apply_hysteresis_threshold(x, low, high))
    assert hysteresis_threshold(x, 0.5, 0.55).any()


def test_noise_sd_is_robust_to_structure():
    from NeonatalVesselsLib.masks import noise_sd

    rng = np.random.default_rng(3)
    img = np.ones((60, 60, 20), np.float32)
    img[:, 30:, :] = 0.6                               # a tissue edge
    img[20:40, 10, 5] = 0.1                            # a vein
    img += rng.normal(0, 0.05, img.shape).astype(np.float32)
    mask = np.ones(img.shape, bool)
    assert abs(noise_sd(img, mask, (0.5, 0.5, 2.0)) - 0.05) < 0.004
    assert noise_sd(img, np.zeros(img.shape, bool), (0.5, 0.5, 2.0)) == 0.0


def test_interpolation_factors_find_zero_filled_noise_and_noise_sd_corrects_for_it():
    # a scanner's interpolation (k-space zero-filled) makes neighbours share noise: the neighbour
    # difference SD then reads x0.76 (1.5x) / x0.6 (2x) of the noise; the lag-2 / lag-1 ratio finds
    # the factor, noise_sd divides by sqrt(1 - sinc(1 / F)), and the smoothing on the acquired grid
    # gives the SD of the smoothed noise
    from NeonatalBrainLib import filters
    from NeonatalBrainLib.phantom import zero_filled
    from NeonatalVesselsLib.masks import interpolation_factors, noise_sd, smoothed_noise_factor

    rng = np.random.default_rng(11)
    spacing = np.array([0.6, 0.6, 2.0])
    white = Volume(rng.normal(10.0, 1.0, (96, 96, 30)).astype(np.float32), np.diag([*spacing, 1.0]))
    everywhere = np.ones(white.shape, bool)
    assert interpolation_factors(white.array, everywhere).tolist() == [1.0, 1.0, 1.0]
    assert noise_sd(white.array, everywhere, spacing, [1.0, 1.0, 1.0]) == noise_sd(white.array, everywhere, spacing)
    for factor in (1.5, 2.0):
        fine = zero_filled(white, factor)
        assert fine.shape == (int(96 * factor), int(96 * factor), 30)
        assert np.allclose(fine.spacing_mm, spacing / [factor, factor, 1.0])
        arr, inside = np.asarray(fine.array), np.ones(fine.shape, bool)
        true_sd = float(arr.std())
        assert abs(true_sd - 1.0) < 0.03                      # the noise per voxel is kept
        found = interpolation_factors(arr, inside)
        assert np.allclose(found[:2], factor, rtol=0.05) and found[2] == 1.0, found
        assert noise_sd(arr, inside, fine.spacing_mm) < 0.8 * true_sd
        assert abs(noise_sd(arr, inside, fine.spacing_mm, found) - true_sd) < 0.03 * true_sd
        smoothed = filters.gaussian_filter(arr, 0.5 / np.asarray(fine.spacing_mm), mode="nearest")
        measured = float(smoothed[8:-8, 8:-8, 4:-4].std())
        assert abs(smoothed_noise_factor(fine.spacing_mm * found, 0.5) * true_sd - measured) < 0.05 * measured
        assert smoothed_noise_factor(fine.spacing_mm, 0.5) * true_sd < 0.75 * measured   # the fine grid's, too small


def test_smoothed_noise_factor_matches_smoothed_white_noise():
    # the SD of white noise after the pipeline's Gaussian (filters.gaussian_filter, sigma in mm
    # / spacing), over its SD before: on thick slices the smoothing barely acts across them
    from NeonatalBrainLib import filters
    from NeonatalVesselsLib.masks import smoothed_noise_factor

    rng = np.random.default_rng(5)
    noise = rng.normal(0, 1, (120, 120, 60)).astype(np.float32)
    for spacing in [(0.6, 0.6, 2.0), (0.6, 0.6, 0.6), (0.45, 0.45, 1.0)]:
        sm = filters.gaussian_filter(noise, 0.5 / np.asarray(spacing), mode="nearest")
        measured = float(sm[10:-10, 10:-10, 10:-10].std())
        assert abs(smoothed_noise_factor(spacing, 0.5) - measured) < 0.03 * measured
    assert smoothed_noise_factor((0.6, 0.6, 0.6), 0.5) < 0.7 * smoothed_noise_factor((0.6, 0.6, 2.0), 0.5)
    assert smoothed_noise_factor((0.5, 0.5, 0.5), 0.0) == 1.0


def test_contrast_gate_counts_the_smoothed_noise():
    # the gate is in units of the noise of the image it is measured on: the same image noise
    # gives a lower gate on fine voxels (more averaging) than on thick slices, never below the floor
    from NeonatalVesselsLib.segmentation import contrast_gate

    params = pl.VesselParams()
    thick = contrast_gate(params, 0.09, (0.6, 0.6, 2.0))
    fine = contrast_gate(params, 0.09, (0.6, 0.6, 0.6))
    assert thick > fine >= params.min_local_contrast
    assert abs(thick - 1.2 * 0.09) < 0.01          # on 0.6 x 0.6 x 2 mm voxels: 1.2 x the image noise SD
    assert contrast_gate(params, 0.0, (0.6, 0.6, 2.0)) == params.min_local_contrast


def test_trim_end_hooks_cuts_a_hook_but_not_a_gentle_bend():
    straight = np.column_stack([np.arange(0, 20.01, 0.25), np.zeros(81), np.zeros(81)])
    hook = np.column_stack([np.full(9, 20.0), np.arange(0.25, 2.26, 0.25), np.zeros(9)])   # 2 mm at 90 deg
    line = np.vstack([straight, hook])
    trimmed = ms.trim_end_hooks(line)
    assert cl.tortuosity(line) > 1.01
    assert abs(cl.tortuosity(trimmed) - 1.0) < 1e-3 and len(trimmed) >= 75
    theta = np.linspace(0, 20.0 / 30.0, 81)                      # 20 mm of a 30 mm-radius arc
    arc = np.column_stack([30 * np.sin(theta), 30 * (1 - np.cos(theta)), np.zeros(81)])
    assert np.array_equal(ms.trim_end_hooks(arc), arc)
    assert np.array_equal(ms.trim_end_hooks(line[:20]), line[:20])   # too short to judge


def test_region_median_equals_numpy_median():
    from NeonatalVesselsLib.regions import _median

    rng = np.random.default_rng(7)
    for trial in range(3000):
        n = int(rng.integers(1, 40))
        dtype = (np.float32, np.float64)[trial % 2]
        v = (rng.normal(size=n) * 10.0 ** rng.uniform(-3, 3)).astype(dtype)
        if trial % 3 == 0:
            v = np.round(v)    # ties
        got, ref = _median(v), np.median(v)
        assert got.dtype == ref.dtype and got == ref, (v, got, ref)
    assert np.isnan(_median(np.array([1.0, np.nan, 2.0])))


def test_box_on_input_grid_equals_restoring_the_whole_volume():
    from NeonatalBrainLib.imageio import from_canonical_order
    from NeonatalVesselsLib.pipeline import _box_on_input_grid

    rng = np.random.default_rng(4)
    shape = (9, 7, 5)
    box = (slice(2, 6), slice(1, 7), slice(0, 3))
    values = rng.integers(1, 50, size=(4, 6, 3)).astype(np.int32)
    full = np.zeros(shape, np.int32)
    full[box] = values
    assert np.array_equal(_box_on_input_grid(values, box, shape, None), full)
    for perm in ((0, 1, 2), (2, 0, 1), (1, 2, 0)):
        for flip in ((False, False, False), (True, False, True), (False, True, False)):
            got = _box_on_input_grid(values, box, shape, (perm, flip))
            assert got.dtype == np.int32 and np.array_equal(got, from_canonical_order(full, perm, flip))


def test_minip_on_the_input_grid_when_order_free():
    from NeonatalBrainLib.imageio import Volume, from_canonical_order, reorient_to_canonical
    from NeonatalVesselsLib.pipeline import _minip_order_free, minip_slab

    img = np.random.default_rng(5).random((8, 6, 10)).astype(np.float32)
    for zs, slab in ((2.0, 8.0), (2.0, 6.0), (1.0, 5.0)):     # windows of 4 (even) and 3, 5 (odd) slices
        for flip_z in (False, True):
            aff = np.diag([-0.5, 0.6, -zs if flip_z else zs, 1.0])
            vol = Volume(img, aff)
            canon, how = reorient_to_canonical(vol)
            ref = from_canonical_order(minip_slab(canon.array, canon.affine, slab), *how)
            free = _minip_order_free(canon.affine, aff, how, slab)
            assert free == (round(slab / zs) % 2 == 1 or not flip_z)
            if free:
                assert np.array_equal(minip_slab(img, aff, slab), ref)
            else:
                assert not np.array_equal(minip_slab(img, aff, slab), ref)


def test_join_end_to_end_orders_pieces_and_leaves_side_fragments_out():
    spacing = (0.5, 0.5, 2.0)
    line = np.stack([np.arange(0, 60), np.full(60, 10), np.full(60, 3)], axis=1)      # 30 mm along i
    first, second, third = line[:18], line[24:40], line[46:]                           # gaps of 3 mm
    beside = np.stack([np.arange(20, 30), np.full(10, 13), np.full(10, 3)], axis=1)   # 1.5 mm beside the middle
    # any order, any orientation: one path from one end to the other, the side piece left out
    path = join_end_to_end([second[::-1], beside, third, first[::-1]], spacing, max_gap_mm=5.0)
    assert len(path) == len(first) + len(second) + len(third)
    assert {tuple(path[0]), tuple(path[-1])} == {tuple(line[0]), tuple(line[-1])}
    assert np.all(np.abs(np.diff(path[:, 0])) >= 1)       # monotone along the line: no back-and-forth
    # a gap wider than max_gap_mm is not crossed: the longest piece and what reaches it
    path = join_end_to_end([first, second, third], spacing, max_gap_mm=2.0)
    assert len(path) == len(first)


def test_label_in_pieces_is_retraced_across_its_gaps():
    # a vessel-id labelmap where vessel 2 crosses vessel 1 and owns the crossing voxels:
    # vessel 1 is in two pieces and must still be traced along its whole length
    lab = np.zeros((70, 30, 12), np.int32)
    lab[5:65, 14:17, 5:7] = 1
    lab[30:34, 2:28, 5:7] = 2
    paths = paths_from_labels(lab, (0.5, 0.5, 1.0))
    p1 = paths.paths_ijk[1].astype(float) * (0.5, 0.5, 1.0)
    assert np.linalg.norm(p1[-1] - p1[0]) > 0.85 * 30.0      # the tube is 30 mm long
    assert np.array_equal(paths.labels, lab)                   # voxels keep their ids


def test_edited_label_keeps_its_earlier_centreline_and_joins_the_painted_part():
    spacing = (0.5, 0.5, 1.0)
    before = np.zeros((80, 20, 10), np.int32)
    before[10:50, 9:12, 4:7] = 3
    guide = np.stack([np.linspace(10.5, 49.5, 157), np.full(157, 10.2), np.full(157, 5.1)], axis=1)  # off the voxel grid
    after = before.copy()
    after[10:16] = 0                    # erased: the first 3 mm
    after[50:70, 9:12, 4:7] = 3         # painted: 10 mm more at the other end
    p = paths_from_labels(after, spacing, guides={3: guide}, previous_labels=before).paths_ijk[3].astype(float)
    kept = guide[(guide[:, 0] >= 16) & (guide[:, 0] <= 49.5)]
    assert any(np.allclose(p[k:k + len(kept)], kept) for k in range(len(p) - len(kept) + 1))  # kept as it was
    ends = sorted([p[0, 0], p[-1, 0]])
    assert ends[0] < 17 and ends[1] > 66            # from the erased end to the painted end


def test_overlay_slab_centres_take_the_slabs_richest_in_dmvs_without_overlap():
    from NeonatalVesselsLib.report import overlay_slab_centres

    counts = np.zeros(40)
    counts[[10, 11, 12]] = [5, 50, 5]
    counts[14] = 40                          # with 10-12 the richest slab (slices 10-14, centre 12)
    counts[30] = 20                          # a second group: its slab is centred on it
    centres = overlay_slab_centres(counts, np.arange(5, 38), slab_vox=4, n_slices=4)
    assert centres.tolist() == [12, 30]      # slabs of 5 slices: 16 would overlap 12's, 28 or 32 30's
    counts[36] = 4                           # 4 of the richest slab's 100 DMV voxels: not worth a picture
    assert overlay_slab_centres(counts, np.arange(5, 38), slab_vox=4, n_slices=4).tolist() == [12, 30]
    assert overlay_slab_centres(counts, np.arange(5, 38), slab_vox=4, n_slices=4, min_share=0.0).tolist() == [12, 30, 36]
    fallback = overlay_slab_centres(np.zeros(40), np.arange(10, 30), slab_vox=4, n_slices=4)
    assert fallback.tolist() == [17, 20, 23, 26]   # no DMVs: evenly over 35-80 % of the brain


def test_overlay_slab_centres_of_a_volume_thinner_than_one_slab():
    from NeonatalVesselsLib.report import overlay_slab_centres

    counts = np.array([0.0, 3.0, 9.0, 1.0, 0.0])      # 5 slices, a slab of 20
    assert overlay_slab_centres(counts, np.arange(5), slab_vox=20, n_slices=4).tolist() == [2]


def test_voxels_per_axial_slice_match_the_radiological_view_in_any_storage_order():
    from NeonatalBrainLib.imageio import radiological_axial_view
    from NeonatalVesselsLib.report import _voxels_per_axial_slice

    labels = np.random.default_rng(3).integers(0, 6, size=(7, 8, 9)).astype(np.uint8)
    sagittal_inferior = np.array([[0, 0, 0.5, 0], [0.6, 0, 0, 0], [0, -2.0, 0, 0], [0, 0, 0, 1.0]])
    for affine in (np.diag([0.5, 0.6, 2.0, 1.0]), np.diag([-0.5, -0.6, -2.0, 1.0]), sagittal_inferior):
        view, _ = radiological_axial_view(labels, affine)
        expected = np.isin(view, [1, 2, 3]).sum(axis=(1, 2))
        assert np.array_equal(_voxels_per_axial_slice(labels, affine, [1, 2, 3]), expected)


def test_the_scans_vein_contrast_is_read_from_vein_sized_fits_not_broad_faint_bands():
    # four veins (1.1 mm, contrast 0.9) among twenty broad faint dark bands (2.4 mm at 0.12), as the
    # grey-matter edges of a real anatomy give them: all resolved fits put the 0.8 quantile among the
    # bands; the fits at most 2 mm wide give the veins' contrast.  With fewer than 3 narrow fits, all count.
    def fit(d, c):
        return ms.WidthFit(diameter_mm=d, contrast=c, dark_area_mm2=c * np.pi * d * d / 4, resolved=True,
                           n_sections=10)

    veins = [fit(1.1, 0.9 + 0.01 * i) for i in range(4)]
    bands = [fit(2.4, 0.12) for _ in range(20)]
    assert ms.subject_contrast(veins + bands, quantile=0.8) < 0.2
    assert 0.9 <= ms.subject_contrast(veins + bands, quantile=0.8, max_diameter_mm=2.0) <= 0.93
    assert ms.resolved_contrasts(veins[:2] + bands, max_diameter_mm=2.0) == [f.contrast for f in veins[:2] + bands]
    # an unresolved vein measured by its dark area: 0.6 mm at 0.9 contrast reads 0.6 mm with the veins' contrast
    thin = ms.WidthFit(diameter_mm=0.9, contrast=0.9 * (0.6 / 0.9) ** 2, dark_area_mm2=0.9 * np.pi * 0.36 / 4,
                       resolved=False, n_sections=10)
    (w,) = ms.finalize_widths([thin], ms.subject_contrast(veins + bands, quantile=0.8, max_diameter_mm=2.0))
    assert 0.58 < w < 0.61


def test_split_at_bridges_parts_two_chambers_joined_by_a_thin_channel():
    from NeonatalVesselsLib.masks import split_at_bridges

    sp = np.array([0.5, 0.5, 1.0])
    m = np.zeros((60, 40, 20), bool)
    m[5:25, 10:30, 5:15] = True         # 10 x 10 x 10 mm
    m[35:55, 10:30, 5:15] = True
    m[25:35, 19:21, 9:11] = True        # a channel 1 x 2 mm across
    labels, n = split_at_bridges(m, sp, 1.0)
    a, b = labels[15, 20, 10], labels[45, 20, 10]
    assert n == 2 and a > 0 and b > 0 and a != b
    assert (labels[m] > 0).mean() > 0.95 and not labels[~m].any()
    assert set(np.unique(labels[30, 19:21, 9:11])) == {0}        # the channel's middle is in neither
    whole, n_whole = split_at_bridges(m[:30], sp, 1.0)
    assert n_whole == 1 and (whole[m[:30]] == 1).mean() > 0.99     # one chamber and a stub: one piece


def test_closed_mask_closes_a_narrow_fissure_and_fills_holes_but_not_a_wide_gap():
    from NeonatalVesselsLib.masks import closed_mask

    sp = (0.5, 0.5, 1.0)
    m = np.zeros((80, 40, 24), bool)
    m[5:35, 5:35, 4:20] = True
    m[39:75, 5:35, 4:20] = True          # a 2 mm fissure between the two blocks ...
    m[20:24, 18:22, 10:12] = False       # ... and a hole inside the first
    c = closed_mask(m, sp, 3.0)
    assert c[37, 20, 12] and c[21, 20, 11] and not m[~c].any()        # the mask itself is kept
    assert not c[37, 20, 1] and not c[0, 20, 12]                              # nothing grows outward
    wide = m.copy()
    wide[35:51] = False                   # an 8 mm gap stays open at 3 mm
    assert not closed_mask(wide, sp, 3.0)[43, 20, 12]
