"""The scanner point-spread estimate (NeonatalVesselsLib.psf) on rendered volumes with known blur."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.special import ndtr

from NeonatalVesselsLib import measure as ms
from NeonatalVesselsLib.psf import estimate_extra_psf_sigma_mm


def bright_cylinder(spacing, extra_sigma_mm, *, radius_mm=10.0, noise=0.05, seed=0):
    """Tissue 1 with a bright (1.5) cylinder along z, tilted 3 degrees: exact partial volume
    (6 x 6 x 3 sub-samples per voxel) of the edge blurred by a continuous Gaussian point-spread."""
    rng = np.random.default_rng(seed)
    sp = np.asarray(spacing, float)
    ext = np.array([2 * radius_mm + 10, 2 * radius_mm + 10, 14.0])
    shape = np.ceil(ext / sp).astype(int)
    centre = ext / 2 + rng.uniform(-0.5, 0.5, 3) * sp
    axis = np.array([np.sin(np.deg2rad(3.0)), 0.0, np.cos(np.deg2rad(3.0))])
    sub = [((np.arange(n) + 0.5) / n - 0.5) * s for n, s in zip((6, 6, 3), sp)]
    offsets = np.stack(np.meshgrid(*sub, indexing="ij"), -1).reshape(-1, 3)
    centres = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3) * sp + sp / 2
    frac = np.zeros(len(centres))
    for o in offsets:
        p = centres + o - centre
        dist = np.linalg.norm(p - (p @ axis)[:, None] * axis, axis=1)
        frac += (dist < radius_mm) if extra_sigma_mm == 0 else ndtr((radius_mm - dist) / extra_sigma_mm)
    frac = (frac / len(offsets)).reshape(shape)
    image = (1.0 + 0.5 * frac + rng.normal(0.0, noise, shape)).astype(np.float32)
    return image, frac > 0.5


@pytest.mark.parametrize("spacing", [(0.5, 0.5, 2.0), (0.6, 0.6, 0.6)])
def test_known_point_spreads_are_recovered(spacing):
    # seeds, radius and noise differ from those of the calibration table
    for extra in (0.0, 0.15, 0.3):
        est = estimate_extra_psf_sigma_mm(*bright_cylinder(spacing, extra, seed=7), spacing)
        assert est is not None and est.n_edges >= 50
        assert abs(est.extra_sigma_mm - extra) <= 0.06, (spacing, extra, est)


def test_a_mask_off_the_wall_gives_the_same_estimate():
    # profiles are centred on the steepest rise near each boundary voxel, so a ventricle mask drawn
    # or thresholded 1.5 mm (3 voxels) wider or narrower measures the same edges (without the
    # recentring the narrower one gave no estimate)
    spacing = (0.5, 0.5, 2.0)
    image, walls = bright_cylinder(spacing, 0.2, seed=3)
    plane = ndimage.generate_binary_structure(3, 1)
    plane[:, :, 0] = plane[:, :, 2] = False               # in the slice plane only
    for mask in (ndimage.binary_dilation(walls, plane, 3), ndimage.binary_erosion(walls, plane, 3)):
        est = estimate_extra_psf_sigma_mm(image, mask, spacing)
        assert est is not None and abs(est.extra_sigma_mm - 0.2) <= 0.06, est


def test_no_or_tiny_ventricles_give_no_estimate():
    image, walls = bright_cylinder((0.6, 0.6, 2.0), 0.2)
    assert estimate_extra_psf_sigma_mm(image, np.zeros_like(walls), (0.6, 0.6, 2.0)) is None
    tiny = np.zeros_like(walls)
    tiny[20:22, 20:22, 3] = True
    assert estimate_extra_psf_sigma_mm(image, tiny, (0.6, 0.6, 2.0)) is None


def test_vein_widths_with_the_estimated_point_spread():
    # a 1 mm vein crossing the slices and a ventricle wall imaged with a 0.25 mm Gaussian point-spread
    # (rendered on a 0.1 mm grid, blurred, averaged into 0.5 x 0.5 x 1 mm voxels): unmodelled, the
    # blur is read as width; with the estimate from the wall the fit comes back near 1 mm
    fine, block = 0.1, (5, 5, 10)
    shape = (260, 120, 100)
    x, y, z = (np.arange(n) * fine + fine / 2 for n in shape)
    X, Y, Z = np.meshgrid(x, y, z, indexing="ij", sparse=True)
    wall = np.cos(np.deg2rad(4.0)) * X + np.sin(np.deg2rad(4.0)) * Y      # a plane wall, 4 degrees off the grid
    image = 1.0 + 0.5 * (wall > 18.0)
    vein = (X - 8.0) ** 2 + (Y - 6.0) ** 2 < 0.5 ** 2                       # along z, across the slices
    image = np.broadcast_to(np.where(vein, 0.4, image), shape).astype(np.float32)
    image = ndimage.gaussian_filter(image, 0.25 / fine, mode="nearest")
    coarse = image.reshape(shape[0] // 5, 5, shape[1] // 5, 5, shape[2] // 10, 10).mean(axis=(1, 3, 5))
    coarse += np.random.default_rng(3).normal(0.0, 0.02, coarse.shape).astype(np.float32)
    spacing = np.array([fine * b for b in block])
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = spacing / 2                                             # voxel centres in the fine frame
    centres = np.stack(np.meshgrid(*[np.arange(n) * s + s / 2 for n, s in zip(coarse.shape, spacing)],
                                   indexing="ij"), -1)
    ventricle = (np.cos(np.deg2rad(4.0)) * centres[..., 0] + np.sin(np.deg2rad(4.0)) * centres[..., 1]) > 18.0
    est = estimate_extra_psf_sigma_mm(coarse, ventricle, spacing)
    assert est is not None and abs(est.extra_sigma_mm - 0.25) <= 0.06, est
    line = np.stack([np.full(41, 8.0), np.full(41, 6.0), np.linspace(1.0, 9.0, 41)], 1)
    plain = ms.fit_width(coarse, affine, line)
    modelled = ms.fit_width(coarse, affine, line, psf_extra_sigma_mm=est.extra_sigma_mm)
    assert plain.resolved and modelled.resolved
    assert plain.diameter_mm - 1.0 > 0.1, plain
    assert abs(modelled.diameter_mm - 1.0) < 0.5 * abs(plain.diameter_mm - 1.0), (plain, modelled)
