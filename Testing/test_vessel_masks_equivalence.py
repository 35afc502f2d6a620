"""The fast automatic masks of the vessel engine (cropping, per-component statistics on the
candidate voxels only, separable bias-field interpolation) equal straightforward full-volume
reference implementations (the engine's earlier code)."""
from __future__ import annotations

import cc3d
import edt as edt_lib
import numpy as np
import pytest
from scipy import ndimage

from NeonatalVesselsLib import masks as mk


# ----------------------------------------------------------------------------- references
def _otsu(values):
    from skimage.filters import threshold_otsu

    return float(threshold_otsu(values))


def _ref_largest_component(mask):
    labels, n = cc3d.connected_components(mask.astype(np.uint8), connectivity=6, return_N=True)
    if n == 0:
        return mask.astype(bool)
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    return labels == int(np.argmax(counts))


def _ref_head_object(image, spacing_mm, smoothing_mm, erosion_mm=2.5):
    spacing = np.asarray(spacing_mm, float)
    img = np.asarray(image, np.float32)
    sm = ndimage.gaussian_filter(img, sigma=smoothing_mm / spacing, mode="nearest")
    step = tuple(max(1, n // 96) for n in sm.shape)
    thr = _otsu(sm[:: step[0], :: step[1], :: step[2]].ravel())
    fg = sm > thr
    aniso = tuple(float(x) for x in spacing)
    core = edt_lib.edt(fg.astype(np.uint8), anisotropy=aniso, black_border=True) > erosion_mm + 1e-6
    if not core.any():
        core = fg
    core = _ref_largest_component(core)
    grow = edt_lib.edt((~core).astype(np.uint8), anisotropy=aniso, black_border=False) <= erosion_mm + 1e-6
    return ndimage.binary_fill_holes(grow & fg)


def _ref_brain_mask(image, spacing_mm, erosion_mm=2.5):
    """The object at 1 mm smoothing less its voxels > 1 mm from the object at 0.7 mm (round 33)."""
    mask = _ref_head_object(image, spacing_mm, 1.0, erosion_mm)
    fine = _ref_head_object(image, spacing_mm, 0.7, erosion_mm)
    dist = edt_lib.edt((~fine).astype(np.uint8), anisotropy=tuple(float(x) for x in spacing_mm), black_border=False)
    return mask & (dist <= 1.0 + 1e-6)


def _ref_depth(brain, spacing_mm):
    return edt_lib.edt(brain.astype(np.uint8), anisotropy=tuple(float(s) for s in spacing_mm),
                       black_border=True).astype(np.float32)


def _ref_normalise(image, brain, spacing_mm, bias_sigma_mm=20.0):
    spacing = np.asarray(spacing_mm, float)
    img = np.asarray(image, np.float32)
    w = brain.astype(np.float32)
    factor = np.maximum(1, np.floor(4.0 / spacing).astype(int))
    sl = tuple(slice(None, None, int(f)) for f in factor)
    sig = bias_sigma_mm / (spacing * factor)
    num = ndimage.gaussian_filter(img[sl] * w[sl], sig, mode="constant")
    den = ndimage.gaussian_filter(w[sl], sig, mode="constant")
    small = np.where(den > 1e-3, num / np.maximum(den, 1e-3), 0).astype(np.float32)
    field = ndimage.zoom(small, [n / m for n, m in zip(img.shape, small.shape)], order=1, mode="nearest")
    assert field.shape == img.shape
    med = float(np.median(img[brain]))
    out = img / np.where(field > 0.05 * med, field, med)
    return (out / np.float32(np.median(out[brain]))).astype(np.float32)


def _ref_ventricles(norm, brain, spacing_mm, depth, min_depth_mm=12.0, min_median_depth_mm=8.0,
                    min_volume_mm3=50.0):
    spacing = np.asarray(spacing_mm, float)
    sm = ndimage.gaussian_filter(norm, sigma=0.8 / spacing, mode="nearest")
    inside = sm[brain]
    hi = inside[inside > np.percentile(inside, 50)]
    cand = (sm > max(_otsu(hi), 1.2)) & brain
    labels, n = cc3d.connected_components(cand.astype(np.uint8), connectivity=6, return_N=True)
    if n == 0:
        return np.zeros(brain.shape, bool)
    counts = np.bincount(labels.ravel(), minlength=n + 1)
    index = np.arange(1, n + 1)
    max_depth = np.asarray(ndimage.maximum(depth, labels, index=index))
    med_depth = np.asarray(ndimage.median(depth, labels, index=index))
    shallow = np.asarray(ndimage.sum(depth < mk.VENTRICLE_SHALLOW_MM, labels, index=index))
    keep = np.zeros(n + 1, bool)
    keep[1:] = ((max_depth >= min_depth_mm) & (med_depth >= min_median_depth_mm)
                & (counts[1:] * float(np.prod(spacing)) >= min_volume_mm3)
                & (shallow <= mk.VENTRICLE_MAX_SHALLOW_FRACTION * counts[1:]))
    return keep[labels]


def _ref_midline(brain, affine, search_mm=8.0):
    idx = np.argwhere(brain[::2, ::2, ::2]) * 2
    ras = idx @ affine[:3, :3].T + affine[:3, 3]
    x0 = float(np.mean(ras[:, 0]))
    cells = {}
    for key, x in zip(map(tuple, np.floor(ras[:, 1:]).astype(np.int64)), ras[:, 0]):
        cells.setdefault(key, []).append(x)
    mids = [0.5 * (min(xs) + max(xs)) for xs in cells.values() if len(xs) >= 8 and max(xs) - min(xs) > 20.0]
    if len(mids) < 10:
        return x0
    m = float(np.median(mids))
    return m if abs(m - x0) <= search_mm else x0


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def preterm_swi():
    from NeonatalBrainLib.phantom import generate_phantom

    return generate_phantom(seed=0, preset="preterm", modalities=("swi",)).swi


@pytest.fixture(scope="module")
def prepared(preterm_swi):
    img = np.asarray(preterm_swi.array, np.float32)
    sp = preterm_swi.spacing_mm
    brain = _ref_brain_mask(img, sp)
    norm = _ref_normalise(img, brain, sp)
    depth = _ref_depth(brain, sp)
    return img, sp, brain, norm, depth


# ----------------------------------------------------------------------------- tests
def test_brain_mask_equals_full_volume_reference(prepared):
    img, sp, brain, _, _ = prepared
    assert brain.sum() > 100_000
    assert np.array_equal(mk.brain_mask(img, sp), brain)


def test_brain_mask_touching_the_array_border_equals_reference(prepared):
    # the head cut by the field of view on several sides: crops clipped at the array border
    img, sp, _, _, _ = prepared
    cut = np.ascontiguousarray(img[40:, :-60, 8:])
    ref = _ref_brain_mask(cut, sp)
    assert ref[0].any() and ref[:, -1].any() and ref[:, :, 0].any() and ref.sum() > 50_000
    assert np.array_equal(mk.brain_mask(cut, sp), ref)


def test_brain_depth_equals_full_volume_edt(prepared):
    img, sp, brain, _, depth = prepared
    got = mk.brain_depth_mm(brain, sp)
    assert got.dtype == np.float32 and np.array_equal(got, depth)
    edge = brain.copy()
    edge[:, :, -3:] = True  # brain at the array border: with open_faces=() the border counts as non-brain
    assert np.array_equal(mk.brain_depth_mm(edge, sp, open_faces=()), _ref_depth(edge, sp))
    assert not mk.brain_depth_mm(np.zeros_like(brain), sp).any()


def test_fill_holes_in_slices_fills_what_each_slice_encloses():
    ring = np.zeros((9, 9, 4), bool)
    ring[2:7, 2:7] = True
    ring[4, 4] = False              # a tube through every slice: no 3-D hole, a hole in each slice
    ring[3, 3, 1] = False           # a pocket inside one slice
    pocket_filled = ring.copy()
    pocket_filled[3, 3, 1] = True
    assert np.array_equal(mk.fill_holes(ring), pocket_filled)          # the tube reaches the array border
    expected = np.zeros_like(ring)
    expected[2:7, 2:7] = True
    assert np.array_equal(mk.fill_holes_in_slices(ring, axis=2), expected)
    across_x = mk.fill_holes_in_slices(ring, axis=0)
    assert np.array_equal(across_x[4], ring[4]) and across_x[3, 3, 1]  # the tube is open in its own x slice


def test_cut_faces_and_the_depth_beyond_them(prepared):
    """A face where the field of view cuts through the brain is not brain surface: the depth
    equals that of the brain extended beyond the face as a prism of its section there (the
    face slice repeated; reference: the full EDT of the extended array, cropped back)."""
    img, sp, brain, _, depth = prepared
    assert mk.cut_faces(brain) == ()                       # a whole head with air around it
    box = mk.bounding_box(brain)
    assert mk.cut_faces(brain[box]) == ()                  # cropped to the brain: it only grazes the faces
    k = int(np.argmax(brain.sum(axis=(0, 1))))             # the brain's largest axial section
    slab = np.ascontiguousarray(brain[:, :, k - 6:])       # cut through the middle from below
    assert mk.cut_faces(slab) == ((2, 0),)
    got = mk.brain_depth_mm(slab, sp)
    n = slab.shape[2]
    prism = np.concatenate([np.repeat(slab[:, :, :1], n, axis=2), slab], axis=2)
    assert np.array_equal(got, _ref_depth(prism, sp)[:, :, n:])
    assert got[:, :, 0].max() > 10.0 * sp[2] > mk.brain_depth_mm(slab, sp, open_faces=())[:, :, 0].max()
    # every face cut (the array lies inside the brain): no surface at all
    inner = np.ones((6, 7, 8), bool)
    assert mk.cut_faces(inner) == tuple((a, s) for a in range(3) for s in (0, 1))
    assert np.all(mk.brain_depth_mm(inner, sp) == mk.NO_SURFACE_DEPTH_MM)


def test_slanted_cut_planes_and_the_depth_beyond_them(prepared):
    """The brain below an oblique plane (tilted 12 degrees from axial) set to 0, as a slab
    resampled onto a rotated grid leaves it: one cut plane, its normal within 1 degree of the
    true one and pointing out of the field of view.  Next to the cut, the depth with the region
    beyond it open is at least that in the uncut brain (its surface inside the field of view is
    no nearer), where with the zeros as surface it is under 3 mm.  With the image continued beyond
    the cut, the brain mask reaches it.  Zeros along the brain's curved
    surface (skull-stripped) or inside the head are no cut; the same cut of a skull-stripped brain
    is found."""
    img, sp, brain, _, depth = prepared
    assert not mk.not_imaged_mask(img).any()              # a whole head: no zero on the faces
    t = np.deg2rad(12.0)
    normal = np.array([0.0, -np.sin(t), -np.cos(t)])       # inferior, tilted toward posterior
    centre = np.argwhere(brain).mean(axis=0) * sp
    along = mk._signed_distance_mm(img.shape, sp, normal)
    beyond = along > float(centre @ normal)
    cut = np.where(beyond, 0, img).astype(np.float32)
    cut_brain = mk.brain_mask(cut, sp)
    outside = mk.not_imaged_mask(cut)
    assert np.array_equal(outside, beyond)
    planes = mk.field_of_view_cut_planes(outside, cut_brain, sp)
    assert len(planes) == 1 and planes[0].face_name() == "inferior (oblique)"
    assert np.degrees(np.arccos(min(1.0, float(np.dot(planes[0].normal, normal))))) < 1.0
    open_region = mk.beyond_cut_planes(cut_brain, planes, sp)
    assert not (open_region & cut_brain).any() and open_region[beyond].mean() > 0.99
    near_brain = mk.distance_to_mask_mm(cut_brain, sp) < 15.0
    assert open_region[beyond & near_brain & ~cut_brain].all()    # (the smoothed mask holds a few zeros at the cut)
    opened = mk.brain_depth_mm(cut_brain, sp, open_mask=open_region)
    closed = mk.brain_depth_mm(cut_brain, sp)
    near = cut_brain & (along > float(centre @ normal) - 2.0) & (depth > 15.0)
    assert near.sum() > 1000
    assert np.all(opened[near] >= 0.97 * depth[near]) and closed[near].max() < 3.0
    assert np.array_equal(opened == 0, ~cut_brain)
    # the image continued beyond the cut: the brain mask (made on it, within the field of view) then
    # holds the brain up to the cut, as at an array face (the cut image's leaves a partial layer)
    layer = brain & ~beyond & (along > float(centre @ normal) - 3.0)
    extended = mk.extend_beyond_cut_planes(cut, outside, planes, sp)
    assert np.array_equal(extended[~outside], cut[~outside])
    assert cut_brain[layer].mean() < 0.98 and (mk.brain_mask(extended, sp) & ~outside)[layer].mean() > 0.995
    # skull-stripped: the zeros meet the brain along its curved surface, and lie beside its flatter
    # parts too: no plane counts even at a twentieth of a section (the band rule; fails without it)
    stripped = np.where(brain, img, 0).astype(np.float32)
    assert mk.field_of_view_cut_planes(mk.not_imaged_mask(stripped), brain, sp, min_fraction=0.05) == ()
    # ... but skull-stripped and cut, the cut holds most of a section while zeros lie beside the brain
    # inside it as well: found (a large section; fails without CUT_PLANE_MIN_FRACTION_BESIDE_ZEROS)
    stripped_cut = np.where(beyond, 0, stripped).astype(np.float32)
    planes = mk.field_of_view_cut_planes(mk.not_imaged_mask(stripped_cut), mk.brain_mask(stripped_cut, sp), sp)
    assert len(planes) == 1 and planes[0].face_name() == "inferior (oblique)"
    assert np.degrees(np.arccos(min(1.0, float(np.dot(planes[0].normal, normal))))) < 1.0
    # zeros inside the head (a lesion set to 0) are not outside the field of view
    hole = img.copy()
    hole[tuple(int(c) for c in np.argwhere(brain).mean(axis=0))] = 0
    assert not mk.not_imaged_mask(hole).any()
    edge = hole.copy()
    edge[0, 0, 0] = 0
    assert np.count_nonzero(mk.not_imaged_mask(edge)) == 1


def test_normalise_intensity_equals_zoom_reference(prepared):
    img, sp, brain, norm, _ = prepared
    got = mk.normalise_intensity(img, brain, sp)
    assert got.dtype == np.float32 and got.shape == norm.shape
    np.testing.assert_allclose(got, norm, rtol=1e-6, atol=0)
    assert abs(float(np.median(got[brain])) - 1.0) < 1e-6


def test_ventricle_mask_equals_ndimage_median_reference(prepared):
    _, sp, brain, norm, depth = prepared
    ref = _ref_ventricles(norm, brain, sp, depth)
    assert ref.sum() > 1000
    assert np.array_equal(mk.ventricle_mask(norm, brain, sp, depth_mm=depth), ref)
    assert np.array_equal(mk.ventricle_mask(norm, brain, sp), ref)  # depth computed inside
    # stricter criteria select fewer components, still exactly as the reference
    for kw in ({"min_median_depth_mm": 10.0}, {"min_volume_mm3": 400.0}, {"min_depth_mm": 16.0}):
        assert np.array_equal(mk.ventricle_mask(norm, brain, sp, depth_mm=depth, **kw),
                              _ref_ventricles(norm, brain, sp, depth, **kw))


def test_component_depths_match_ndimage_on_ties_and_even_counts():
    rng = np.random.default_rng(3)
    labels = rng.integers(1, 40, 5000)
    depth = rng.integers(0, 12, 5000).astype(np.float32) / 4  # many ties
    counts, mx, med = mk._component_depths(labels, depth, 45)
    index = np.arange(1, 46)
    present = np.bincount(labels, minlength=46)[1:] > 0
    assert np.array_equal(counts, np.bincount(labels, minlength=46)[1:])
    assert np.array_equal(mx[present], np.asarray(ndimage.maximum(depth, labels, index))[present])
    assert np.array_equal(med[present], np.asarray(ndimage.median(depth, labels, index))[present])
    assert med.dtype == np.float32


def test_fill_holes_equals_binary_fill_holes():
    rng = np.random.default_rng(1)
    for trial in range(6):
        shape = (23, 31, 17)
        mask = ndimage.binary_opening(rng.random(shape) < 0.55 + 0.05 * trial)
        if trial % 2:
            mask[2:-3, 4:-2, 1:-1] |= ndimage.binary_dilation(rng.random(shape) < 0.02)[2:-3, 4:-2, 1:-1]
        if trial == 5:
            mask[:] = False
            mask[5:15, 5:20, 3:12] = True
            mask[8:12, 9:14, 6:9] = False  # one cavity, far from the border
        assert np.array_equal(mk.fill_holes(mask), ndimage.binary_fill_holes(mask)), trial
    assert not mk.fill_holes(np.zeros((4, 5, 6), bool)).any()
    ring = np.zeros((9, 9), bool)
    ring[2:7, 2:7] = True
    ring[4, 4] = False
    assert mk.fill_holes(ring).all() == ndimage.binary_fill_holes(ring).all()
    assert np.array_equal(mk.fill_holes(ring), ndimage.binary_fill_holes(ring))


def test_midline_equals_per_cell_loop(prepared, preterm_swi):
    _, _, brain, _, _ = prepared
    assert mk.midline_x_mm(brain, preterm_swi.affine) == _ref_midline(brain, preterm_swi.affine)


def test_distance_to_mask_in_box_equals_full_volume_edt():
    # exact (bit for bit) inside the box of features + read region (grown by one voxel),
    # also with features outside the read region and a region touching the array border
    rng = np.random.default_rng(5)
    for trial in range(12):
        shape = tuple(int(n) for n in rng.integers(8, 36, 3))
        sp = tuple(float(s) for s in rng.uniform(0.3, 2.0, 3))
        within = np.zeros(shape, bool)
        lo = [int(rng.integers(0, n // 2)) for n in shape]
        hi = [int(rng.integers(n // 2 + 1, n + 1)) for n in shape]
        within[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
        feat = within & (rng.random(shape) < (0.002, 0.02, 0.2)[trial % 3])
        if trial % 4 == 0:
            feat[tuple(int(rng.integers(0, n)) for n in shape)] = True
        if not feat.any():
            continue
        full = edt_lib.edt((~feat).astype(np.uint8), anisotropy=sp, black_border=False).astype(np.float32)
        got = mk.distance_to_mask_mm(feat, sp, within=within)
        box = mk._bbox(feat | within, 1)
        assert got.dtype == np.float32 and np.array_equal(got[box], full[box]), trial
        outside = np.ones(shape, bool)
        outside[box] = False
        assert (got[outside] == 1e3).all()
        assert np.array_equal(mk.distance_to_mask_mm(feat, sp), full)
    assert (mk.distance_to_mask_mm(np.zeros((4, 5, 6), bool), (1, 1, 1), within=np.ones((4, 5, 6), bool)) == 1e3).all()


def _ref_drop_short_components(mask, spacing, min_extent_mm):
    labels, n = cc3d.connected_components(np.asarray(mask, np.uint8), connectivity=26, return_N=True)
    if n == 0:
        return np.asarray(mask, bool)
    boxes = cc3d.statistics(labels)["bounding_boxes"]
    keep = np.zeros(n + 1, bool)
    for lab, box in enumerate(boxes[1:], start=1):
        if box is None:
            continue
        ext = np.array([sl.stop - sl.start - 1 for sl in box], float) * np.asarray(spacing, float)
        keep[lab] = float(np.sqrt((ext ** 2).sum())) >= min_extent_mm
    return keep[labels]


def _ref_segment_vessels(norm, brain, depth, spacing, params, noise_sd):
    # the engine's earlier code: every step on the whole volume
    from NeonatalVesselsLib.segmentation import contrast_gate, hysteresis_threshold, local_contrast
    from NeonatalVesselsLib.vesselness import vesselness

    roi = brain & (depth > params.surface_margin_mm)
    v = vesselness(norm, spacing, params.scales_mm, mask=roi, alpha=params.frangi_alpha,
                   beta=params.frangi_beta, c=params.frangi_c, dark=True)
    dark = norm < params.max_relative_intensity
    gate = contrast_gate(params, noise_sd, spacing)
    dark &= local_contrast(norm, spacing, background_mm=params.local_background_mm,
                           smoothing_mm=params.contrast_smoothing_mm, mask=roi) >= gate
    v = np.where(dark & roi, v, 0).astype(np.float32)
    seg = hysteresis_threshold(v, params.threshold_low, params.threshold_high)
    min_vox = max(1, int(np.ceil(params.min_component_mm3 / float(np.prod(spacing)))))
    seg = cc3d.dust(seg.astype(np.uint8), threshold=min_vox, connectivity=26, in_place=True) > 0
    return _ref_drop_short_components(seg, spacing, params.min_component_extent_mm)


def test_segment_vessels_in_roi_box_equals_full_volume(prepared):
    from NeonatalVesselsLib.params import VesselParams
    from NeonatalVesselsLib.segmentation import segment_vessels

    _, sp, brain, norm, depth = prepared
    params = VesselParams()
    noise = mk.noise_sd(norm, depth > 5.0, sp)
    ref = _ref_segment_vessels(norm, brain, depth, sp, params, noise)
    assert ref.sum() > 1000
    assert np.array_equal(segment_vessels(norm, brain, depth, sp, params, noise_sd=noise), ref)
    assert not segment_vessels(norm, np.zeros_like(brain), depth, sp, params).any()


def test_drop_small_components_equals_dust_then_drop_short():
    from NeonatalVesselsLib.segmentation import drop_short_components, drop_small_components

    rng = np.random.default_rng(8)
    for trial in range(8):
        mask = ndimage.binary_dilation(rng.random((30, 40, 20)) < 0.004 + 0.002 * trial,
                                       iterations=1 + trial % 2)
        mask |= rng.random(mask.shape) < 0.01
        sp = (0.33, 0.39, 0.75) if trial % 2 else (1.0, 0.5, 2.0)
        for min_vox, ext in ((1, 0.0), (5, 0.0), (8, 1.5), (3, 2.5)):
            ref = cc3d.dust(mask.astype(np.uint8), threshold=min_vox, connectivity=26) > 0
            if ext > 0:
                ref = _ref_drop_short_components(ref, sp, ext)
            assert np.array_equal(drop_small_components(mask, sp, min_voxels=min_vox, min_extent_mm=ext), ref)
        assert np.array_equal(drop_short_components(mask, sp, 1.5), _ref_drop_short_components(mask, sp, 1.5))
    assert not drop_small_components(np.zeros((3, 4, 5), bool), (1, 1, 1), min_voxels=2).any()
