"""Per-vessel measurements: centreline in RAS, width (sub-voxel model fit), tortuosity, curvature.

Centreline
----------
The ordered skeleton voxels of a vessel are mapped to RAS mm through the affine,
resampled at ``step_mm`` (0.25 mm) along the arc and smoothed with a Gaussian of
``smoothing_mm`` (arc length, end points fixed; removes the voxel staircase),
then resampled again at ``step_mm``.  ``length_mm`` = arc length of that centreline;
``tortuosity`` = arc / chord and ``curvature_per_mm`` = arc-length mean unsigned
curvature, both from :mod:`NeonatalBrainLib.centerline` on the centreline after a
further 1 mm Gaussian smoothing along the arc (``VesselParams.curvature_smoothing_mm``,
end points fixed): the voxel-scale wiggle left on a traced centreline lengthens its arc
(near-straight DMVs read 0.022 too tortuous without it) and triples its curvature.

Width (apparent diameter, mm)
-----------------------------
Cross-sections perpendicular to the centreline are sampled every 1 mm (linear
interpolation of the bias-normalised SWI, 0.15 mm grid over +-``patch_mm``) and
combined along the vessel by their pixel-wise median (the mean for fewer than
three; a branch or a neighbouring vein that crosses a few cross-sections does not
widen the profile).  Model of the averaged cross-section::

    I(u, v) = b - c * (D_d * G_Sigma)(u - u0, v - v0)

``D_d``: a disk of diameter ``d`` (the vein's lumen; a cylinder seen end-on),
``G_Sigma``: the imaging + interpolation point-spread function, a Gaussian with
per-voxel-axis variance ``spacing^2 / 4`` (box partial-volume ``s^2/12`` plus
linear interpolation ``s^2/6``) projected into the cross-section plane through
the affine -- so a 2 mm slice blurs a vein lying in-plane much more than one
crossing the slices.  ``b`` (local tissue), ``c`` (vein contrast), ``d`` and the
centre offset are fitted by non-linear least squares.  The blur preserves the
integral, so the *dark area* ``A = c * pi d^2 / 4`` is well determined even for
veins thinner than the voxels, whereas ``c`` and ``d`` separately are not.  Hence
``d`` is taken from the fit when the vein is resolved (fitted ``d`` larger than
the PSF's FWHM along the cross-section's sharper axis, where the flat top of the disk shows); otherwise
``d = sqrt(4 A / (pi c_subject))`` with ``c_subject`` the 0.8 quantile of the contrasts of the
resolved veins of the same scan (see :func:`finalize_widths`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from NeonatalBrainLib import centerline as cl

STEP_MM = 0.25


def centreline_ras(path_ijk: np.ndarray, affine: np.ndarray, *, smoothing_mm: float = 0.6,
                   step_mm: float = STEP_MM) -> np.ndarray:
    """Smoothed, uniformly resampled centreline (N, 3) in RAS mm of an ordered voxel path."""
    ijk = np.asarray(path_ijk, float)
    ras = ijk @ affine[:3, :3].T + affine[:3, 3]
    if len(ras) < 2:
        return ras
    p = cl.resample_polyline(ras, step_mm)
    p = cl.smooth_polyline(p, smoothing_mm, step_mm)
    return cl.resample_polyline(p, step_mm)


def smooth_centreline(points_ras: np.ndarray, *, smoothing_mm: float = 0.6, step_mm: float = STEP_MM,
                      slice_direction=None, slice_smoothing_mm: float = 0.0) -> np.ndarray:
    """Resample at ``step_mm``, Gaussian-smooth along the arc (``smoothing_mm``), resample again.

    Thick slices: with ``slice_direction`` (unit vector in RAS, the slice normal) and
    ``slice_smoothing_mm`` > ``smoothing_mm``, the coordinate along the slice normal is
    smoothed with the larger sigma and the in-plane coordinates with ``smoothing_mm``:
    the slice staircase (jumps of one slice thickness) is removed while the well
    sampled in-plane course is kept.
    """
    p = np.asarray(points_ras, float)
    if len(p) < 2:
        return p
    p = cl.resample_polyline(p, step_mm)
    smooth = cl.smooth_polyline(p, smoothing_mm, step_mm)
    if slice_direction is not None and slice_smoothing_mm > smoothing_mm:
        n = np.asarray(slice_direction, float)
        n = n / np.sqrt(n.dot(n))          # np.linalg.norm(n)
        thick = cl.smooth_polyline(p, slice_smoothing_mm, step_mm)
        smooth = smooth + ((thick - smooth) @ n)[:, None] * n
    return cl.resample_polyline(smooth, step_mm)


def sample_along_lines(fields: dict[str, np.ndarray], inv_affine: np.ndarray,
                       lines: dict[int, np.ndarray]) -> dict[str, dict[int, np.ndarray]]:
    """``{field name: {line id: values}}``: each voxel field linearly interpolated (nearest
    value beyond the border) at the points (RAS mm) of every polyline.

    One interpolation call per field for the points of all lines (it is per point); the
    voxel coordinates are computed line by line (a matrix product's rounding can depend
    on its number of rows), so each line gets the values of sampling it alone.
    """
    out: dict[str, dict[int, np.ndarray]] = {name: {} for name in fields}
    ids = list(lines)
    if not ids:
        return out
    rot, shift = inv_affine[:3, :3].T, inv_affine[:3, 3]
    ijk = np.concatenate([np.asarray(lines[i], float) @ rot + shift for i in ids]).T
    cuts = np.cumsum([len(lines[i]) for i in ids])[:-1]
    for name, field in fields.items():
        out[name] = dict(zip(ids, np.split(ndimage.map_coordinates(field, ijk, order=1, mode="nearest"), cuts)))
    return out


def normal_bases(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit normals ``(u, v)`` (each n x 3) of the unit directions ``d`` (n x 3):
    ``u = d x ref / |d x ref|`` with ``ref`` the z axis (the x axis where ``|d_z| >= 0.9``),
    ``v = d x u``."""
    ref = np.where(np.abs(d[:, 2:3]) < 0.9, np.array([[0.0, 0.0, 1.0]]), np.array([[1.0, 0.0, 0.0]]))
    u = np.cross(d, ref)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return u, np.cross(d, u)


def ring_offsets(radius_mm: float, n: int = 12) -> np.ndarray:
    """``n`` points (n x 2, mm) evenly on a circle of ``radius_mm`` (the first on the u axis)."""
    angles = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return radius_mm * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def plane_points(centres: np.ndarray, u: np.ndarray, v: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Points ``centres[i] + offsets[k, 0] u[i] + offsets[k, 1] v[i]`` (n x m x 3): the 2-D
    ``offsets`` (m x 2, mm) placed in the plane spanned by each centre's ``u``, ``v`` (n x 3)."""
    return centres[:, None, :] + offsets[:, 0, None] * u[:, None, :] + offsets[:, 1, None] * v[:, None, :]


def flank_contrast(image: np.ndarray, inv_affine: np.ndarray, points_ras: np.ndarray, *,
                   radius_mm: float = 1.5, quantile: float = 0.25, n_ring: int = 12) -> float:
    """How much darker a polyline is than the darker side of its surroundings (image units).

    At every point (RAS mm) of the line: the ``quantile`` of the image on a ring of ``n_ring``
    points at ``radius_mm`` in the plane normal to the line, minus the image at the point
    (trilinear, nearest value beyond the border); the result is the median over the line's
    points.  A vein is darker than the tissue all round it, so even the darker quarter of
    the ring is brighter; a line traced along the edge of a darker region (the caudate's
    or the thalamus' border with white matter, the grey rim of a ventricle) has that
    region on one side, and its flank contrast is ~0.  A line of fewer than 2 points: 0.
    """
    return flank_contrasts(image, inv_affine, {0: points_ras}, (radius_mm,), quantile=quantile,
                           n_ring=n_ring)[radius_mm][0]


def flank_contrasts(image: np.ndarray, inv_affine: np.ndarray, lines: dict[int, np.ndarray],
                    radii_mm, *, quantile: float = 0.25, n_ring: int = 12) -> dict[float, dict[int, float]]:
    """``{radius: {line id: flank_contrast}}`` of every polyline at every radius, with one
    interpolation call (each line's values are those of :func:`flank_contrast` on it alone)."""
    rot, shift = inv_affine[:3, :3].T, inv_affine[:3, 3]
    rings = {r: ring_offsets(r, n_ring) for r in radii_mm}
    out: dict[float, dict[int, float]] = {r: {} for r in radii_mm}
    chunks, owners = [], []
    for vid, points in lines.items():
        p = np.asarray(points, float)
        if len(p) < 2:
            for r in radii_mm:
                out[r][vid] = 0.0
            continue
        t = np.gradient(p, axis=0)
        t /= np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
        u, v = normal_bases(t)
        for r in radii_mm:
            pts = np.concatenate([p[:, None, :], plane_points(p, u, v, rings[r])], axis=1)   # (n, 1 + n_ring, 3)
            chunks.append(pts.reshape(-1, 3) @ rot + shift)     # per line: a matrix product's rounding can depend on its rows
            owners.append((r, vid, len(p)))
    if not chunks:
        return out
    vals = ndimage.map_coordinates(image, np.concatenate(chunks).T, order=1, mode="nearest").reshape(-1, 1 + n_ring)
    contrast = np.quantile(vals[:, 1:], quantile, axis=1) - vals[:, 0]
    start = 0
    for r, vid, n in owners:
        out[r][vid] = float(np.median(contrast[start:start + n]))
        start += n
    return out


def _normal_basis(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit normal ``u = t x ref / |t x ref|`` and ``v = t x u`` of the unit tangent ``t``
    (:func:`normal_bases` for one direction, in the scalar arithmetic the width fit's
    reference implementation reproduces).

    ``ref`` is the z axis, or the x axis where ``|t_z| >= 0.9``.  The cross products are
    written out on floats (the same operations as ``np.cross``).
    """
    t0, t1, t2 = (float(a) for a in t)
    r0, r1, r2 = (0.0, 0.0, 1.0) if abs(t2) < 0.9 else (1.0, 0.0, 0.0)
    u = np.array([t1 * r2 - t2 * r1, t2 * r0 - t0 * r2, t0 * r1 - t1 * r0])
    u /= np.sqrt(u.dot(u))             # np.linalg.norm(u)
    u0, u1, u2 = u.tolist()
    v = np.array([t1 * u2 - t2 * u1, t2 * u0 - t0 * u2, t0 * u1 - t1 * u0])
    return u, v


@dataclass
class WidthFit:
    diameter_mm: float      #: fitted lumen diameter d
    contrast: float         #: fitted c / b (relative vein contrast)
    dark_area_mm2: float    #: (c / b) * pi d^2 / 4
    resolved: bool          #: d larger than the PSF FWHM (fit of d trustworthy)
    n_sections: int
    within_bounds: bool = True   #: the fitted d is not at the search limit (a non-tubular dark region)


def _render(d: float, u0: float, v0: float, grid_u: np.ndarray, grid_v: np.ndarray, h: float,
            kernel: np.ndarray) -> np.ndarray:
    r = np.hypot(grid_u - u0, grid_v - v0)
    disk = np.clip(0.5 + (0.5 * d - r) / h, 0.0, 1.0)
    from scipy.signal import fftconvolve     # here: importing scipy.signal costs 0.3 s at start-up

    return fftconvolve(disk, kernel, mode="same")


def _public_fft_passes():
    from scipy import fft

    def rfft_rows(x, n):
        return fft.rfft(x, n=n, axis=-1)

    def fft_columns(x, forward):     # unnormalised both ways, in place where possible
        return (fft.fft if forward else fft.ifft)(x, axis=-2, norm="backward" if forward else "forward",
                                                   overwrite_x=True)

    def irfft_rows(x, n):           # unnormalised
        return fft.irfft(x, n=n, axis=-1, norm="forward")

    return rfft_rows, fft_columns, irfft_rows


def _pocketfft_passes():
    # the pocketfft entry points behind scipy.fft, called directly: for these small arrays
    # scipy.fft's argument handling costs more than the transforms
    from scipy.fft._pocketfft import pypocketfft as pf

    def rfft_rows(x, n):
        if x.shape[-1] != n:
            pad = np.zeros(x.shape[:-1] + (n,))
            pad[..., :x.shape[-1]] = x
            x = pad
        return pf.r2c(x, (x.ndim - 1,), True, 0, None, 1)

    def fft_columns(x, forward):
        return pf.c2c(x, (x.ndim - 2,), forward, 0, x, 1)

    def irfft_rows(x, n):
        return pf.c2r(x, (x.ndim - 1,), n, False, 0, None, 1)

    return rfft_rows, fft_columns, irfft_rows


_FFT_PASSES = None


def _fft_passes():
    """(rfft_rows, fft_columns, irfft_rows): pocketfft directly where it gives scipy.fft's numbers, else scipy.fft."""
    global _FFT_PASSES
    if _FFT_PASSES is None:
        public = _public_fft_passes()
        try:
            direct = _pocketfft_passes()
            x = np.random.default_rng(0).random((2, 6, 7))
            checks = []
            for rfft_rows, fft_columns, irfft_rows in (public, direct):
                fwd = fft_columns(rfft_rows(x, 10), True)
                checks.append((fwd.copy(), irfft_rows(fft_columns(fwd, False), 10)))
            ok = all(np.array_equal(a, b) for a, b in zip(*checks))
            _FFT_PASSES = direct if ok else public
        except Exception:   # noqa: BLE001 - the private entry points changed: use scipy.fft
            _FFT_PASSES = public
    return _FFT_PASSES


class _BlurredDisk:
    """Renders ``(D_d * G)(u - u0, v - v0)`` on a fixed grid; the kernel's FFT is computed once.

    Same values as :func:`_render` (``fftconvolve(..., mode="same")``), bit for bit: the
    zero-padded 2-D real FFT is done as its two passes -- a real FFT along the rows,
    then a complex FFT along the columns; the inverse the other way round with the
    ``1 / (N0 N1)`` scaling at the end, exactly as pocketfft composes ``rfft2`` /
    ``irfft2``.  So only the rows that the disk reaches are transformed forward (the
    others are zero) and only the rows kept by the ``"same"`` crop are transformed
    back.  :meth:`many` renders several parameter vectors in one batch.
    """

    def __init__(self, grid_u: np.ndarray, grid_v: np.ndarray, h: float, kernel: np.ndarray):
        from scipy import fft

        self.u, self.v, self.h = grid_u, grid_v, h
        n = np.asarray(grid_u.shape)
        m = np.asarray(kernel.shape)
        self.shape = tuple(int(fft.next_fast_len(int(a + b - 1), real=True)) for a, b in zip(n, m))
        self.k_hat = fft.rfft2(kernel, s=self.shape)
        self.crop = tuple(slice((b - 1) // 2, (b - 1) // 2 + a) for a, b in zip(n, m))
        # irfft2's normalisation 1 / (N0 N1), computed as pocketfft does (in long double)
        self._scale = float(np.longdouble(1) / np.longdouble(self.shape[0] * self.shape[1]))
        # u of each grid row, when u is constant along the rows and increasing (the meshgrid of
        # fit_width); otherwise every row is rendered
        rows_u = np.ascontiguousarray(grid_u[:, 0], dtype=float)
        banded = bool(np.all(grid_u == rows_u[:, None]) and np.all(np.diff(rows_u) > 0))
        self._rows_u = rows_u if banded else None
        self._passes = _fft_passes()

    def _disks(self, d, u0, v0, d_max: float, u_lo: float, u_hi: float) -> tuple[np.ndarray, int, int]:
        """Disk images (rows r0:r1) of the parameters (scalars or (k, 1, 1) arrays); other rows are 0.

        ``d_max``, ``u_lo``, ``u_hi``: the largest ``d`` and the range of ``u0``.
        """
        # a pixel is non-zero only within d/2 + h/2 of the centre: the rows farther than
        # that plus one grid step (a margin for rounding) from every centre are exactly 0
        reach = 0.5 * d_max + 1.5 * self.h
        if self._rows_u is not None and np.isfinite(reach) and np.isfinite(u_lo) and np.isfinite(u_hi):
            r0 = int(np.searchsorted(self._rows_u, u_lo - reach, side="left"))
            r1 = int(np.searchsorted(self._rows_u, u_hi + reach, side="right"))
        else:
            r0, r1 = 0, self.u.shape[0]
        r = np.hypot(self.u[r0:r1] - u0, self.v[r0:r1] - v0)
        return np.clip(0.5 + (0.5 * d - r) / self.h, 0.0, 1.0), r0, r1

    def _convolve(self, disks: np.ndarray, r0: int, r1: int) -> np.ndarray:
        """``irfft2(rfft2(disk, s=shape) * k_hat, s=shape)[crop]`` for each disk (rows r0:r1 of it)."""
        rfft_rows, fft_columns, irfft_rows = self._passes
        s0, s1 = self.shape
        spec = np.zeros((len(disks), s0, s1 // 2 + 1), complex)
        if r1 > r0:
            spec[:, r0:r1] = rfft_rows(disks, s1)
        spec = fft_columns(spec, True)
        spec *= self.k_hat
        spec = fft_columns(spec, False)
        out = irfft_rows(spec[:, self.crop[0]], s1)[:, :, self.crop[1]]
        return out * self._scale

    def __call__(self, d: float, u0: float, v0: float) -> np.ndarray:
        disk, r0, r1 = self._disks(d, u0, v0, float(d), float(u0), float(u0))
        return self._convolve(disk[None], r0, r1)[0]

    def many(self, xs: np.ndarray) -> np.ndarray:
        """Renders of the rows ``(d, u0, v0)`` of ``xs``: array (len(xs), *grid shape)."""
        xs = np.asarray(xs, float)
        d, u0, v0 = (xs[:, j, None, None] for j in range(3))
        return self._convolve(*self._disks(d, u0, v0, float(xs[:, 0].max()), float(xs[:, 1].min()),
                                           float(xs[:, 1].max())))


def _gauss_kernel(cov: np.ndarray, h: float) -> np.ndarray:
    sd = np.sqrt(np.maximum(np.linalg.eigvalsh(cov).max(), 1e-6))
    half = int(np.ceil(3.5 * sd / h))
    g = np.arange(-half, half + 1) * h
    uu, vv = np.meshgrid(g, g, indexing="ij")
    inv = np.linalg.inv(cov + 1e-9 * np.eye(2))
    q = inv[0, 0] * uu * uu + 2 * inv[0, 1] * uu * vv + inv[1, 1] * vv * vv
    k = np.exp(-0.5 * q)
    return k / k.sum()


def _forward_steps(x0: list[float], lb: list[float], ub: list[float]) -> list[float]:
    """Forward-difference steps of ``scipy.optimize.approx_derivative(method="2-point")`` in a box.

    ``h = sqrt(eps) * sign(x) * max(1, |x|)`` (sign(0) = +1); a step that leaves the box
    is reversed when the reversed step fits, else replaced by the distance to the
    farther bound (the same arithmetic as scipy, on floats; one variable at a time by
    :func:`.widthfit._forward_step`, which the compiled fit uses).
    """
    from .widthfit import _forward_step

    return [float(_forward_step(float(x), float(lo), float(hi))) for x, lo, hi in zip(x0, lb, ub)]


def _border(section: np.ndarray) -> np.ndarray:
    """The pixels on the four edges of a cross-section (corners twice): where the background is read."""
    return np.concatenate([section[0], section[-1], section[:, 0], section[:, -1]])


def fit_width(norm_image: np.ndarray, affine: np.ndarray, points_ras: np.ndarray, *,
              patch_mm: float = 2.0, grid_mm: float = 0.15, station_mm: float = 1.0,
              end_margin_mm: float = 0.75, psf_extra_sigma_mm: float = 0.0,
              cross_section_average: str = "median", solver: str = "compiled",
              exclude: np.ndarray | None = None, exclude_above: float = 0.25,
              detrend: bool = False, voxel_mm=None) -> WidthFit | None:
    """Fit the blurred-disk cross-section model to one vessel (see module docstring).

    ``cross_section_average``: how the cross-sections along the vessel are combined,
    ``"median"`` (pixel by pixel; robust to a branch or a neighbouring vein crossing a
    few of them) or ``"mean"``.  ``solver``: ``"compiled"`` (:mod:`.widthfit`: the same
    model and trust-region-reflective iterations as scipy, in numba; the optimisation ~5x
    faster) or ``"scipy"`` (``scipy.optimize.least_squares``, the reference).  The fitted
    diameters agree to < 1e-6 mm on ~97% of the vessels; where the cost is flat (the fit
    stopped by the iteration limit, a centre offset on its bound) the rounding of the model
    can send the iterations elsewhere (1-2% of the vessels differ by > 0.01 mm).

    ``exclude``: an image on the same grid (e.g. the ventricle mask, 0 / 1); cross-section
    pixels where it interpolates above ``exclude_above`` are left out (NaN-aware median / mean;
    a pixel left out of every section takes the border median).  ``detrend``: remove the plane
    fitted to the outer ring of the combined section (``>= patch_mm - 0.5`` mm from the
    centreline) before the fit.  Both serve veins against the ventricle wall between tissues
    of different signal (the thalamostriate vein), where a constant background reads the
    vein too wide.  ``voxel_mm``: the voxel size per axis of ``affine`` in the point-spread
    model (sigma = voxel / 2, plus ``psf_extra_sigma_mm``); default the grid's (an interpolated
    scan's acquired slice thickness is larger than its slice spacing).  None when every pixel
    of the section border is left out.
    """
    if cross_section_average not in ("median", "mean"):
        raise ValueError(f"cross_section_average: 'median' or 'mean', got {cross_section_average!r}")
    if solver not in ("compiled", "scipy"):
        raise ValueError(f"solver: 'compiled' or 'scipy', got {solver!r}")
    p = np.asarray(points_ras, float)
    if len(p) < 2:
        return None
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    direction = affine[:3, :3] / spacing
    inv = np.linalg.inv(affine)
    s = cl.cumulative_arc_mm(p)
    total = s[-1]
    tang = np.gradient(p, axis=0)
    tang /= np.maximum(np.linalg.norm(tang, axis=1, keepdims=True), 1e-9)
    if total > 2 * end_margin_mm + station_mm:
        stations = np.arange(end_margin_mm, total - end_margin_mm + 1e-9, station_mm)
    else:
        stations = np.array([0.5 * total])
    idx = np.clip(np.searchsorted(s, stations), 0, len(p) - 1)
    g = np.arange(-patch_mm, patch_mm + 1e-9, grid_mm)
    uu, vv = np.meshgrid(g, g, indexing="ij")
    voxel = spacing if voxel_mm is None else np.asarray(voxel_mm, float)
    psf_cov_ras = direction @ np.diag(voxel ** 2 / 4.0 + psf_extra_sigma_mm ** 2) @ direction.T
    # all cross-sections sampled by one map_coordinates call (linear interpolation is per point)
    inv_rot, inv_shift = inv[:3, :3].T, inv[:3, 3]
    uu3, vv3 = uu[..., None], vv[..., None]
    npix = uu.size
    coords = np.empty((3, len(idx) * npix))
    cov_uv = np.zeros((2, 2))
    basis = np.empty((3, 2))
    n = 0
    for i in idx:
        u, v = _normal_basis(tang[i])
        pts = p[i] + uu3 * u + vv3 * v
        coords[:, n * npix:(n + 1) * npix] = (pts.reshape(-1, 3) @ inv_rot + inv_shift).T
        basis[:, 0], basis[:, 1] = u, v
        cov_uv += basis.T @ psf_cov_ras @ basis
        n += 1
    vals = ndimage.map_coordinates(norm_image, coords, order=1, mode="nearest")
    if exclude is not None:
        # pixels in another structure (e.g. the bright ventricle beside a wall vein) are left out
        # of the combined cross-section; pixels left out of every section take the background
        out = ndimage.map_coordinates(exclude, coords, order=1, mode="nearest", output=np.float32) > exclude_above
        vals = np.where(out, np.nan, vals)
        # combined over the pixels sampled at least once (no all-NaN warning, hence no
        # warnings.catch_warnings: it is not thread-safe, and the fits run on threads)
        stack = vals.reshape(n, npix)
        seen = ~np.isnan(stack).all(axis=0)
        prof = np.full(npix, np.nan, stack.dtype)
        if seen.any():
            prof[seen] = (np.nanmedian(stack[:, seen], axis=0) if cross_section_average == "median"
                          else np.nanmean(stack[:, seen], axis=0))
        prof = prof.reshape(uu.shape)
        border = _border(prof)
        if not np.isfinite(border).any():
            return None
        b0 = float(np.nanmedian(border))
        prof = np.where(np.isfinite(prof), prof, b0)
    elif cross_section_average == "median" and n >= 3:
        prof = np.median(vals.reshape(n, *uu.shape), axis=0)
    else:
        acc = np.zeros(uu.shape)
        for k in range(n):
            acc += vals[k * npix:(k + 1) * npix].reshape(uu.shape)
        prof = acc / n
    if detrend:
        # a background sloping across the section (a vein between structures of different
        # signal): the plane fitted to the outer ring (>= patch_mm - 0.5 from the centreline)
        # is removed, keeping its mean
        ring = np.hypot(uu, vv) >= patch_mm - 0.5
        design = np.c_[np.ones(int(ring.sum())), uu[ring], vv[ring]]
        coef = np.linalg.lstsq(design, prof[ring], rcond=None)[0]
        prof = prof - (coef[1] * uu + coef[2] * vv)
    cov_uv /= n
    kernel = _gauss_kernel(cov_uv, grid_mm)
    b0 = float(np.median(_border(prof)))
    d_max = 2 * patch_mm - 0.5
    lo = [0.05, -0.6, -0.6]
    hi = [d_max, 0.6, 0.6]
    # start d from the dark area of the profile (deficit integral / contrast guess)
    area = float(np.clip(b0 - prof, 0, None).sum()) * grid_mm ** 2 / max(b0, 1e-6)
    x0 = [float(np.clip(np.sqrt(4 * area / np.pi / 0.8), 0.2, hi[0] - 0.1)), 0.0, 0.0]
    fwhm = 2.3548 * float(np.sqrt(np.linalg.eigvalsh(cov_uv).min()))

    def result(d: float, b: float, c: float) -> WidthFit | None:
        if b <= 0:
            return None
        rel_c = c / b
        return WidthFit(diameter_mm=float(d), contrast=float(rel_c),
                        dark_area_mm2=float(rel_c * np.pi * d * d / 4.0),
                        resolved=bool(d > fwhm), n_sections=int(n), within_bounds=bool(d < d_max - 0.25))

    if solver == "compiled":
        from .widthfit import fit_blurred_disk

        target = prof.ravel()
        mean_p = target.mean()          # rounded as the scipy path rounds them (float32 sections)
        dev_p = np.asarray(target - mean_p, float).reshape(prof.shape)
        single = type(mean_p + 1.0) is np.float32      # b = mean_p + c mean_m in float32 (numpy >= 2)
        try:
            x, b, c, status, _nfev = fit_blurred_disk(
                np.ascontiguousarray(prof, float), float(mean_p), dev_p, single,
                np.ascontiguousarray(g, float), float(grid_mm),
                np.ascontiguousarray(kernel, float), np.array(x0), np.array(lo, float), np.array(hi, float),
                np.array([0.2, 0.1, 0.1]), 60)
        except ValueError:      # where scipy raises (a degenerate trust-region step)
            return None
        return None if status == -1 else result(float(x[0]), float(b), float(c))

    from scipy import optimize      # the reference solver only (0.2 s to import)

    render = _BlurredDisk(uu, vv, grid_mm, kernel)
    target = prof.ravel()
    mean_p = target.mean()
    dev_p = target - mean_p
    npix_f = float(target.size)

    def linear_bc(ms: np.ndarray) -> list[tuple[float, float]]:
        # b and c enter linearly (variable projection): least squares of prof ~ b - c m, clipped
        # to [0, 3], for each row m of ms (k, n_pixels)
        mean_m = np.add.reduce(ms, axis=1) / npix_f
        dev = ms - mean_m[:, None]
        var = np.add.reduce(dev * dev, axis=1)
        cov = np.add.reduce(dev * dev_p, axis=1)
        out = []
        for vk, ck, mk in zip(var.tolist(), cov.tolist(), mean_m.tolist()):
            c = -ck / vk if vk > 1e-12 else 0.0
            c = min(max(c, 0.0), 3.0)
            b = min(max(float(mean_p + c * mk), 0.0), 3.0)
            out.append((b, c))
        return out

    last: list = [None, None]                       # x (bytes) and f(x) of the latest residual
    bc_at: dict[bytes, tuple[float, float]] = {}    # (b, c) at each x evaluated

    def resid(x):
        x = np.asarray(x, float)
        m = render(*x).reshape(1, -1)
        b, c = linear_bc(m)[0]
        f = b - c * m[0] - target
        last[0], last[1] = x.tobytes(), f
        bc_at[last[0]] = (b, c)
        return f

    def jac(x):
        # least_squares' default jac="2-point" (same steps, same arithmetic, hence the same
        # numbers), with the three shifted models rendered in one batch and f(x) taken from
        # the residual call at x
        x = np.asarray(x, float)
        f0 = last[1] if last[0] == x.tobytes() else resid(x)
        xl = x.tolist()
        h = _forward_steps(xl, lo, hi)
        xs = np.array([xl] * len(xl))
        for i in range(len(xl)):
            xs[i, i] = xl[i] + h[i]
        ms = render.many(xs).reshape(len(xl), -1)
        jac_t = np.empty((len(xl), target.size))
        for i, (b, c) in enumerate(linear_bc(ms)):
            jac_t[i] = (b - c * ms[i] - target - f0) / ((xl[i] + h[i]) - xl[i])
        return jac_t.T

    try:
        best = optimize.least_squares(resid, x0, jac=jac, bounds=(lo, hi), x_scale=[0.2, 0.1, 0.1],
                                      max_nfev=60)
    except ValueError:
        return None
    d = float(best.x[0])
    bc = bc_at.get(np.asarray(best.x, float).tobytes())      # the fit's last accepted residual call
    b, c = bc if bc is not None else linear_bc(render(*best.x).reshape(1, -1))[0]
    return result(d, b, c)


def subject_contrast(fits: list[WidthFit | None], default: float = 0.6, quantile: float = 0.5,
                     max_diameter_mm: float = np.inf) -> float:
    """``quantile`` (default the median) of the relative contrasts of the resolved veins (``default`` if fewer than 3).

    Fits whose diameter reached the search limit (broad dark regions such as deep
    grey matter, not veins) are not used, nor, where at least 3 fits remain, those wider
    than ``max_diameter_mm``: the broad faint dark bands that a brain's own anatomy gives
    (grey-matter edges, sulci; fitted 2-2.6 mm wide at 0.1-0.2 contrast) can outnumber the
    veins and pull the quantile down to them (:func:`resolved_contrasts`).  An upper
    quantile counters the bias of the averaged cross-sections: centreline misalignment and
    curvature only blur a vein (wider, shallower), never deepen it.
    """
    cs = resolved_contrasts(fits, max_diameter_mm)
    if len(cs) < 3:
        return float(default)
    return float(np.quantile(cs, quantile))


def resolved_contrasts(fits: list[WidthFit | None], max_diameter_mm: float = np.inf) -> list[float]:
    """Relative contrasts of the resolved veins that :func:`subject_contrast` takes: fits within
    the search bounds, contrast 0.05-1.5, and of those the ones at most ``max_diameter_mm``
    wide when there are at least 3 (else all)."""
    fits = [f for f in fits if f is not None and f.resolved and f.within_bounds and 0.05 < f.contrast < 1.5]
    narrow = [f for f in fits if f.diameter_mm <= max_diameter_mm]
    return [f.contrast for f in (narrow if len(narrow) >= 3 else fits)]


def width_method(fit: WidthFit, c_subject: float, faint_fraction: float = 0.0) -> str:
    """``"model_fit"`` when the fitted diameter is the width, ``"dark_area"`` when the width comes
    from the dark area and the scan's vein contrast: the fit is unresolved, or resolved but
    fainter than ``faint_fraction`` x ``c_subject``."""
    if fit.resolved and not fit.contrast < faint_fraction * c_subject:
        return "model_fit"
    return "dark_area"


def finalize_widths(fits: list[WidthFit | None], c_subject: float, *, faint_fraction: float = 0.0) -> list[float]:
    """Diameter (mm) per vessel: the fitted d when resolved, else sqrt(4 A / (pi c_subject)).

    ``faint_fraction``: a resolved fit whose contrast is below this x ``c_subject`` is
    measured by its dark area too.  A vein thinner than the slice, crossed at an angle or
    smeared by the centreline's residual wiggle, fits wider and fainter than it is (the fit
    trades diameter for contrast); the dark area (contrast x cross-section, what the image
    holds) stays, so with the scan's vein contrast it gives the diameter.
    """
    out = []
    for f in fits:
        if f is None:
            out.append(float("nan"))
        elif width_method(f, c_subject, faint_fraction) == "model_fit":
            out.append(f.diameter_mm)
        else:
            out.append(float(np.sqrt(4.0 * f.dark_area_mm2 / (np.pi * c_subject))))
    return out


def trim_end_hooks(points_ras: np.ndarray, *, max_trim_mm: float = 4.0, min_angle_deg: float = 40.0,
                   span_mm: float = 3.0) -> np.ndarray:
    """Cut a hooked end off a centreline (equally spaced points, RAS mm).

    Within ``max_trim_mm`` of each end, the point where the line bends most is found:
    the angle between the direction of the last piece (end -> that point) and the
    direction of the next ``span_mm`` inwards.  When that angle exceeds
    ``min_angle_deg`` the end piece is removed.  A vein traced into a noise branch or a
    neighbour at its end leaves such a hook, which inflates tortuosity and curvature;
    a vein's own gentle bend (tens of mm radius) does not reach the angle.
    """
    p = np.asarray(points_ras, float)
    if len(p) < 4:
        return p
    s = cl.cumulative_arc_mm(p)
    total = s[-1]
    if total < 2.0 * max_trim_mm + span_mm:
        return p
    cos_min = np.cos(np.deg2rad(min_angle_deg))

    def cut_index(q: np.ndarray, sq: np.ndarray) -> int:
        best, best_cos = 0, cos_min
        for k in range(1, int(np.searchsorted(sq, max_trim_mm)) + 1):
            if sq[k] < 0.75:
                continue
            a = q[k] - q[0]
            j = int(np.searchsorted(sq, sq[k] + span_mm))
            if j >= len(q):
                break
            b = q[j] - q[k]
            c = float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
            if c < best_cos:
                best, best_cos = k, c
        return best

    start = cut_index(p, s)
    rev = p[::-1]
    end = len(p) - 1 - cut_index(rev, total - s[::-1])
    return p[start:end + 1]


def bend_angles_deg(points_ras: np.ndarray, span_mm: float = 3.0) -> np.ndarray:
    """Turning angle (degrees) at each point of a polyline, over ``span_mm`` of arc on each side.

    The angle between ``p[i] - p(s_i - span)`` and ``p(s_i + span) - p[i]`` (``p(s)``: the
    first point at arc length >= s); NaN where either side is shorter than ``span_mm``.
    """
    p = np.asarray(points_ras, float)
    out = np.full(len(p), np.nan)
    if len(p) < 3:
        return out
    s = cl.cumulative_arc_mm(p)
    ok = (s >= span_mm) & (s[-1] - s >= span_mm)
    if not ok.any():
        return out
    i = np.flatnonzero(ok)
    j0 = np.minimum(np.searchsorted(s, s[i] - span_mm, side="right") - 1, i - 1)
    j1 = np.maximum(np.searchsorted(s, s[i] + span_mm), i + 1).clip(max=len(p) - 1)
    a, b = p[i] - p[j0], p[j1] - p[i]
    cos = np.einsum("ij,ij->i", a, b) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    out[i] = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    return out


def split_at_bends(points_ras: np.ndarray, *, max_bend_deg: float = 60.0, span_mm: float = 3.0) -> list[np.ndarray]:
    """Cut a centreline at its sharp bends: pieces with no turning angle above ``max_bend_deg``.

    The sharpest bend (:func:`bend_angles_deg`) is cut first (the point goes to both
    pieces), then each piece again.  A medullary vein bends gently (at most ~45 degrees
    over +-3 mm on the phantoms); a path turning more is two veins meeting -- e.g. two
    DMVs whose inner ends touch at the ventricle wall form a V.
    """
    p = np.asarray(points_ras, float)
    ang = bend_angles_deg(p, span_mm)
    if not np.any(ang > max_bend_deg):
        return [p]
    k = int(np.nanargmax(ang))
    return (split_at_bends(p[:k + 1], max_bend_deg=max_bend_deg, span_mm=span_mm)
            + split_at_bends(p[k:], max_bend_deg=max_bend_deg, span_mm=span_mm))


def shape_metrics(points_ras: np.ndarray, *, step_mm: float = STEP_MM, curvature_smoothing_mm: float = 0.0) -> dict:
    """length_mm, tortuosity, curvature_per_mm of a centreline (NeonatalBrainLib.centerline).

    ``curvature_smoothing_mm``: a further Gaussian smoothing (sigma, arc length) of the
    centreline for the tortuosity and the curvature (:func:`NeonatalBrainLib.centerline.describe`):
    the voxel-scale wiggle left on a centreline traced in ~0.6 mm voxels tripled the
    curvature and read near-straight veins 0.02 too tortuous.  The length is that of the
    centreline given.
    """
    p = np.asarray(points_ras, float)
    if len(p) < 2:
        return {"length_mm": 0.0, "tortuosity": float("nan"), "curvature_per_mm": float("nan")}
    # arc length of p; tortuosity and mean curvature of p resampled and smoothed (one shape line for both)
    return cl.describe(p, step_mm=step_mm, smoothing_mm=curvature_smoothing_mm)
