"""Minimum-intensity tracking of dark tubes from seed centrelines (pure numpy/scipy).

A seed polyline (RAS mm) is extended from each end one ``step_mm`` at a time.  The next
point is the darkest of a disk of candidates (radius ``search_mm``, 0.25 mm apart, with a
light preference for straight on) in the plane normal to the current direction, one step
ahead; the direction follows the points as an exponential average (``momentum``), so one
noisy choice cannot turn the track.  The contrast of a new point is
``median(ring) - value``, the ring being 12 points at ``ring_mm`` around it in the same
plane (the tissue beside the vein), in image units.

Where to stop is a change-point rule (Page's CUSUM): the running sum of
``contrast - min_contrast`` along the track is followed, the track stops once the sum has
fallen ``max_drop`` below its best value (or it leaves ``allowed``, or reaches
``max_length_mm``), and the extension ends at the step where the sum was best (nothing
when it never rose above 0).  The darkest candidate of a disk is darker than a fixed
point even in pure noise (a selection bias), so ``min_contrast`` sits between the
contrast a track picks up in noise and that of the faintest veins to follow; the sum
lets a vein's steady contrast outweigh single noisy steps in both directions.

Reference: E. S. Page, "Continuous inspection schemes", Biometrika 41 (1954) 100-115;
minimum-intensity ridge tracking of vessels as in O. Friman et al., "Multiple hypothesis
template tracking of small 3D vessel structures", Med. Image Anal. 14 (2010) 160-171
(here a single hypothesis per step).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .measure import normal_bases, plane_points, ring_offsets
from .skeleton import _end_direction


def _disk(radius_mm: float, step_mm: float) -> np.ndarray:
    g = np.arange(-radius_mm, radius_mm + 1e-9, step_mm)
    uu, vv = np.meshgrid(g, g, indexing="ij")
    keep = uu ** 2 + vv ** 2 <= radius_mm ** 2 + 1e-9
    return np.stack([uu[keep], vv[keep]], axis=1)


def track_extensions(image: np.ndarray, affine: np.ndarray, seeds: dict[int, np.ndarray], *,
                     min_contrast: float, step_mm: float = 0.5, search_mm: float = 0.75,
                     ring_mm: float = 1.75, max_drop: float = 0.1, max_length_mm: float = 30.0,
                     momentum: float = 0.5, span_mm: float = 2.0,
                     allowed: np.ndarray | None = None) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """``{seed id: (points added before the first point, points added after the last)}``
    (RAS mm, each in order away from the seed; (0, 3) when nothing was added).

    ``image``: intensity (dark tubes), on the grid of ``affine`` (voxel -> RAS mm), sampled
    trilinearly.  ``min_contrast`` and ``max_drop``: image units (module docstring).
    ``span_mm``: arc length over which a seed's end direction is taken.  ``allowed``: voxel
    mask on the same grid that a track may not leave (nearest voxel); seeds with fewer
    than 2 points are not tracked.
    """
    inv = np.linalg.inv(affine)
    rot, shift = inv[:3, :3].T, inv[:3, 3]
    disk = _disk(search_mm, 0.25)
    ring = ring_offsets(ring_mm, 12)
    # a light preference for straight on: the candidate's value + this x (offset / search radius)^2
    centre_weight = 0.25 * min_contrast
    bias = centre_weight * (disk ** 2).sum(axis=1) / max(search_mm, 1e-9) ** 2
    starts, keys = [], []
    for vid, p in seeds.items():
        p = np.asarray(p, float)
        if len(p) < 2:
            continue
        for at_end in (False, True):
            starts.append((p[-1] if at_end else p[0], _end_direction(p, at_end, span_mm)))
            keys.append((vid, at_end))
    n = len(keys)
    result: dict[int, list] = {vid: [np.zeros((0, 3)), np.zeros((0, 3))] for vid in seeds}
    if n == 0:
        return {vid: (a, b) for vid, (a, b) in result.items()}
    if allowed is not None and allowed.dtype == bool:
        allowed = allowed.view(np.uint8)
    pos = np.array([s[0] for s in starts])
    dirs = np.array([s[1] for s in starts])
    active = np.linalg.norm(dirs, axis=1) > 0
    n_steps = int(max_length_mm / step_mm)
    track = np.full((n, n_steps, 3), np.nan)
    contrast = np.full((n, n_steps), np.nan)
    stopped_at = np.full(n, n_steps)
    stopped_at[~active] = 0
    score = np.zeros(n)          # running sum of (contrast - min_contrast) along the track
    best_score = np.zeros(n)
    best_at = np.zeros(n, int)   # steps kept: up to the best running sum (0: none)

    def sample(points: np.ndarray, field: np.ndarray, order: int = 1) -> np.ndarray:
        ijk = points.reshape(-1, 3) @ rot + shift
        return ndimage.map_coordinates(field, ijk.T, order=order, mode="nearest").reshape(points.shape[:-1])

    for k in range(n_steps):
        idx = np.flatnonzero(active)
        if len(idx) == 0:
            break
        d = dirs[idx]
        u, v = normal_bases(d)
        ahead = pos[idx] + step_mm * d
        cand = plane_points(ahead, u, v, disk)
        vals = sample(cand, image) + bias
        best = np.argmin(vals, axis=1)
        new = cand[np.arange(len(idx)), best]
        ring_pts = plane_points(new, u, v, ring)
        c = np.median(sample(ring_pts, image), axis=1) - sample(new[:, None, :], image)[:, 0]
        step = new - pos[idx]
        step /= np.maximum(np.linalg.norm(step, axis=1, keepdims=True), 1e-9)
        nd = momentum * d + (1 - momentum) * step
        nd /= np.maximum(np.linalg.norm(nd, axis=1, keepdims=True), 1e-9)
        track[idx, k] = new
        contrast[idx, k] = c
        pos[idx], dirs[idx] = new, nd
        stop = np.zeros(len(idx), bool)
        score[idx] += c - min_contrast
        better = score[idx] > best_score[idx]
        best_score[idx[better]] = score[idx[better]]
        best_at[idx[better]] = k + 1
        stop |= best_score[idx] - score[idx] > max_drop
        if allowed is not None:
            stop |= sample(new[:, None, :], allowed, order=0)[:, 0] < 0.5
        stopped_at[idx[stop]] = k
        active[idx[stop]] = False
    for t, (vid, at_end) in enumerate(keys):
        keep = int(min(best_at[t], stopped_at[t]))
        result[vid][1 if at_end else 0] = track[t, :keep]
    return {vid: (a, b) for vid, (a, b) in result.items()}


