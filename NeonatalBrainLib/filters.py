"""Separable image filters run on several threads, with results identical to scipy.ndimage.

``scipy.ndimage`` applies a Gaussian or a rectangular minimum / maximum filter as one
1-D pass per axis, storing each pass in the output array; its C loops release the GIL.
These functions make the same passes in the same order with the same dtype, but
each pass is split into slabs along another axis (a 1-D pass along axis ``a`` does
not mix values across the other axes) and the slabs run in a thread pool, so the
result is bit-identical to ``scipy.ndimage.gaussian_filter`` / ``minimum_filter`` /
``maximum_filter`` and about ``threads`` times faster on large volumes.

Gaussian passes along the first two axes of a float32 volume (modes ``"nearest"`` and
``"reflect"``) run in numba (:func:`_correlate_axis0`, :func:`_correlate_axis1`) with
scipy's arithmetic: ``scipy.ndimage.correlate1d`` computes each output of a symmetric
kernel ``w`` (radius ``r``) in float64 as ``x[i] w[0] + sum_{j = r .. 1} (x[i - j] + x[i + j]) w[j]``
and rounds it to float32; these kernels do the same sums in the same order, plane by
plane (contiguous, vectorised) instead of line by line through a strided copy -- about
3x faster.  The weights are scipy's own (the filter's response to a unit impulse), and a
check on a small array at first use falls back to scipy if the numbers ever differ.
Minimum / maximum passes of float32 volumes (mode ``"nearest"``) run in numba along every
axis (:func:`_extremum_axis0` ...): a min / max is exact, so any order of comparison gives
scipy's values (for finite data; a slab holding a NaN goes to scipy), 3-10x faster.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Callable, Sequence

import numpy as np
from numba import njit
from scipy import ndimage

#: default number of threads (at most 4; 1 disables threading)
THREADS = max(1, min(4, os.cpu_count() or 1))
#: volumes smaller than this (voxels) are filtered on one thread (thread start-up dominates)
MIN_VOXELS = 1 << 18


def _passes(image: np.ndarray, output: np.ndarray | None, steps: Sequence[tuple[int, Callable]],
            threads: int) -> np.ndarray:
    """Apply ``pass_fn(src, dst, axis)`` for each (axis, pass_fn), as scipy does, slab-parallel."""
    src = np.asarray(image)
    out = np.empty(src.shape, src.dtype) if output is None else output
    if not steps:
        out[...] = src
        return out
    threads = max(1, int(threads))
    with ThreadPoolExecutor(threads) if threads > 1 and src.size >= MIN_VOXELS else nullcontext() as pool:
        for axis, fn in steps:
            other = max((a for a in range(src.ndim) if a != axis), key=lambda a: src.shape[a])
            n = src.shape[other]
            bounds = np.linspace(0, n, min(threads, n) + 1).astype(int) if pool is not None else np.array([0, n])
            slabs = []
            for lo, hi in zip(bounds[:-1], bounds[1:]):
                sl = [slice(None)] * src.ndim
                sl[other] = slice(int(lo), int(hi))
                slabs.append(tuple(sl))
            if pool is None or len(slabs) == 1:
                fn(src, out, axis)
            else:
                # in-place passes (src is out) are safe: a slab only reads and writes its own voxels
                list(pool.map(lambda s: fn(src[s], out[s], axis), slabs))
            src = out
    return out


@njit(cache=True, inline="always")
def _source_index(e: int, n: int, reflect: bool) -> int:
    """Index read for the extended position ``e`` of a line of ``n`` samples: scipy's
    ``"reflect"`` (d c b a | a b c d | d c b a, repeated) or ``"nearest"`` (a a | a b c d | d d)."""
    if reflect:
        p = 2 * n
        e = e % p
        if e < 0:
            e += p
        return e if e < n else p - 1 - e
    return min(max(e, 0), n - 1)


@njit(cache=True, inline="always")
def _load_ring(src, ring, loaded: int, last: int) -> int:
    """Copy the planes ``loaded + 1 .. last`` of ``src`` into the ring of contiguous planes
    (plane ``e`` in slot ``e % len(ring)``); returns the last plane loaded."""
    size = ring.shape[0]
    nb, nc = src.shape[1], src.shape[2]
    while loaded < last:
        loaded += 1
        slot = ring[loaded % size]
        for b in range(nb):
            for c in range(nc):
                slot[b, c] = src[loaded, b, c]
    return loaded


@njit(cache=True, nogil=True)
def _correlate_axis0(src, dst, w, reflect):
    """``correlate1d(src, w, axis=0)`` of a 3-D float32 array into ``dst`` (``w`` symmetric, odd
    length; scipy's float64 sums, see the module docstring).  ``dst`` may be ``src``.

    The planes an output reads (source indices within ``r`` of it, ``r`` the kernel radius:
    the ``"reflect"`` / ``"nearest"`` extensions fold the positions ``i +- j`` back towards
    ``i``) are copied once, before any is overwritten, into a ring of ``min(n, 2 r + 1)``
    contiguous planes (plane ``e`` in slot ``e % size``), and every sum reads the ring: the
    threads' slabs are strided views, which the inner loops could not vectorise.
    """
    n, nb, nc = src.shape
    r = w.size // 2
    size = min(n, 2 * r + 1)
    ring = np.empty((size, nb, nc), np.float32)
    acc = np.empty((nb, nc))
    loaded = -1
    for i in range(n):
        loaded = _load_ring(src, ring, loaded, min(n - 1, i + r))
        x = ring[i % size]
        w0 = w[r]
        for b in range(nb):
            for c in range(nc):
                acc[b, c] = np.float64(x[b, c]) * w0
        for j in range(r, 0, -1):
            plo = ring[_source_index(i - j, n, reflect) % size]
            phi = ring[_source_index(i + j, n, reflect) % size]
            wj = w[r - j]
            for b in range(nb):
                for c in range(nc):
                    acc[b, c] += (np.float64(plo[b, c]) + np.float64(phi[b, c])) * wj
        for b in range(nb):
            for c in range(nc):
                dst[i, b, c] = np.float32(acc[b, c])


@njit(cache=True, nogil=True)
def _correlate_axis1(src, dst, w, reflect):
    """:func:`_correlate_axis0` along axis 1 (row by row within each plane)."""
    na, n, nc = src.shape
    r = w.size // 2
    ring = np.empty((r + 1, nc), np.float32)
    acc = np.empty(nc)
    for a in range(na):
        for i in range(n):
            for c in range(nc):         # element by element: a row assignment compiles numba's shape-error path
                ring[i % (r + 1), c] = src[a, i, c]
            w0 = w[r]
            for c in range(nc):
                acc[c] = np.float64(src[a, i, c]) * w0
            for j in range(r, 0, -1):
                lo = _source_index(i - j, n, reflect)
                hi = _source_index(i + j, n, reflect)
                plo = ring[lo % (r + 1)] if lo < i else src[a, lo]
                phi = ring[hi % (r + 1)] if hi < i else src[a, hi]
                wj = w[r - j]
                for c in range(nc):
                    acc[c] += (np.float64(plo[c]) + np.float64(phi[c])) * wj
            for c in range(nc):
                dst[a, i, c] = np.float32(acc[c])


def gaussian_weights(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """The correlation weights of ``scipy.ndimage.gaussian_filter1d(sigma, truncate=truncate)``:
    its response to a unit impulse (each output is ``1.0 * w`` plus zeros: exact)."""
    radius = int(truncate * float(sigma) + 0.5)
    impulse = np.zeros(2 * radius + 1)
    impulse[radius] = 1.0
    return ndimage.gaussian_filter1d(impulse, float(sigma), mode="constant", truncate=truncate)


_COMPILED_OK: bool | None = None


def _compiled_passes_ok() -> bool:
    """Whether :func:`_correlate_axis0` / :func:`_correlate_axis1` give scipy's numbers (checked once)."""
    global _COMPILED_OK
    if _COMPILED_OK is None:
        try:
            x = np.random.default_rng(0).random((9, 11, 7)).astype(np.float32)
            ok = True
            for sigma, mode in ((0.8, "nearest"), (1.7, "reflect"), (4.0, "reflect"), (4.0, "nearest")):
                w = gaussian_weights(sigma)
                for axis, fn in ((0, _correlate_axis0), (1, _correlate_axis1)):
                    ref = ndimage.gaussian_filter1d(x, sigma, axis=axis, mode=mode)
                    out = np.empty_like(x)
                    fn(x, out, w, mode == "reflect")
                    inplace = x.copy()
                    fn(inplace, inplace, w, mode == "reflect")
                    ok &= np.array_equal(out, ref) and np.array_equal(inplace, ref)
            _COMPILED_OK = bool(ok)
        except Exception:   # noqa: BLE001 - numba unusable here: scipy does the passes
            _COMPILED_OK = False
    return _COMPILED_OK


def _gaussian_pass(sigma: float, mode: str, truncate: float, image: np.ndarray, output: np.ndarray | None):
    """``pass_fn(src, dst, axis)`` of one Gaussian pass: compiled where it applies, else scipy's."""
    def scipy_pass(src, dst, axis):
        ndimage.gaussian_filter1d(src, sigma, axis=axis, output=dst, mode=mode, truncate=truncate)

    if (image.ndim != 3 or image.dtype != np.float32 or mode not in ("nearest", "reflect")
            or (output is not None and output.dtype != np.float32)):
        return scipy_pass
    w = gaussian_weights(sigma, truncate)
    if not np.array_equal(w, w[::-1]) or not _compiled_passes_ok():
        return scipy_pass
    reflect = mode == "reflect"

    def compiled_pass(src, dst, axis):
        if axis == 0 and src.dtype == dst.dtype == np.float32:
            _correlate_axis0(src, dst, w, reflect)
        elif axis == 1 and src.dtype == dst.dtype == np.float32:
            _correlate_axis1(src, dst, w, reflect)
        else:
            scipy_pass(src, dst, axis)

    return compiled_pass


def gaussian_filter(image: np.ndarray, sigma, *, mode: str = "nearest", truncate: float = 4.0,
                    output: np.ndarray | None = None, threads: int | None = None) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(image, sigma, mode=mode, truncate=truncate)`` (sigma in voxels)."""
    image = np.asarray(image)
    sig = np.broadcast_to(np.asarray(sigma, float), (image.ndim,))
    steps = [(a, _gaussian_pass(float(sig[a]), mode, truncate, image, output))
             for a in range(image.ndim) if sig[a] > 1e-15]
    return _passes(image, output, steps, THREADS if threads is None else threads)


@njit(cache=True, nogil=True)
def _has_nan(src) -> bool:
    """Whether the 3-D array ``src`` holds a NaN."""
    na, nb, nc = src.shape
    for a in range(na):
        for b in range(nb):
            for c in range(nc):
                if np.isnan(src[a, b, c]):
                    return True
    return False


@njit(cache=True, nogil=True)
def _extremum_axis0(src, dst, n, minimum):
    """``minimum_filter1d`` / ``maximum_filter1d(src, n, axis=0, mode="nearest")`` of a 3-D float32
    array into ``dst`` (may be ``src``): the window of output ``i`` is ``[i - n // 2, i + n - n // 2 - 1]``,
    clamped to the array.  As in :func:`_correlate_axis0`, the planes of the window are copied once,
    before any is overwritten, into a ring of ``min(len, n)`` contiguous planes that every
    comparison reads.  False (nothing written) when ``src`` holds a NaN (scipy's result then
    depends on its algorithm)."""
    if _has_nan(src):
        return False
    na, nb, nc = src.shape
    size1 = n // 2
    size2 = n - size1 - 1
    size = min(na, n)
    ring = np.empty((size, nb, nc), np.float32)
    acc = np.empty((nb, nc), np.float32)
    loaded = -1
    for i in range(na):
        loaded = _load_ring(src, ring, loaded, min(na - 1, i + size2))
        first = True
        for q in range(i - size1, i + size2 + 1):
            plane = ring[min(max(q, 0), na - 1) % size]
            if first:
                for b in range(nb):
                    for c in range(nc):
                        acc[b, c] = plane[b, c]
                first = False
            elif minimum:
                for b in range(nb):
                    for c in range(nc):
                        acc[b, c] = min(acc[b, c], plane[b, c])
            else:
                for b in range(nb):
                    for c in range(nc):
                        acc[b, c] = max(acc[b, c], plane[b, c])
        for b in range(nb):
            for c in range(nc):
                dst[i, b, c] = acc[b, c]
    return True


@njit(cache=True, nogil=True)
def _extremum_axis1(src, dst, n, minimum):
    """:func:`_extremum_axis0` along axis 1 (plane by plane)."""
    if _has_nan(src):
        return False
    na, nr, nc = src.shape
    size1 = n // 2
    size2 = n - size1 - 1
    ring = np.empty((size1 + 1, nc), np.float32)
    acc = np.empty(nc, np.float32)
    for a in range(na):
        for i in range(nr):
            for c in range(nc):
                ring[i % (size1 + 1), c] = src[a, i, c]
            first = True
            for q in range(i - size1, i + size2 + 1):
                e = min(max(q, 0), nr - 1)
                row = ring[e % (size1 + 1)] if e < i else src[a, e]
                if first:
                    for c in range(nc):
                        acc[c] = row[c]
                    first = False
                elif minimum:
                    for c in range(nc):
                        acc[c] = min(acc[c], row[c])
                else:
                    for c in range(nc):
                        acc[c] = max(acc[c], row[c])
            for c in range(nc):
                dst[a, i, c] = acc[c]
    return True


@njit(cache=True, nogil=True)
def _extremum_axis2(src, dst, n, minimum):
    """:func:`_extremum_axis0` along the last axis: each line is copied (clamped ends) into a
    buffer first, so ``dst`` may be ``src``."""
    if _has_nan(src):
        return False
    na, nb, nc = src.shape
    size1 = n // 2
    buf = np.empty(nc + n - 1, np.float32)
    acc = np.empty(nc, np.float32)
    for a in range(na):
        for b in range(nb):
            for e in range(nc + n - 1):
                buf[e] = src[a, b, min(max(e - size1, 0), nc - 1)]
            for k in range(nc):
                acc[k] = buf[k]
            for q in range(1, n):
                if minimum:
                    for k in range(nc):
                        acc[k] = min(acc[k], buf[k + q])
                else:
                    for k in range(nc):
                        acc[k] = max(acc[k], buf[k + q])
            for k in range(nc):
                dst[a, b, k] = acc[k]
    return True


_EXTREMUM_PASSES = (_extremum_axis0, _extremum_axis1, _extremum_axis2)


def _rank_filter(image, size, mode, output, threads, fn1d):
    image = np.asarray(image)
    sizes = np.broadcast_to(np.asarray(size, int), (image.ndim,))
    minimum = fn1d is ndimage.minimum_filter1d
    compiled = (image.ndim == 3 and image.dtype == np.float32 and mode == "nearest"
                and (output is None or output.dtype == np.float32))

    def step(n: int):
        def pass_fn(src, dst, axis):
            if compiled and src.dtype == dst.dtype == np.float32:
                # (a min / max is exact: only the order of equal values could differ, +0.0 / -0.0)
                if _EXTREMUM_PASSES[axis](src, dst, n, minimum):
                    return
            fn1d(src, n, axis=axis, output=dst, mode=mode)
        return pass_fn

    steps = [(a, step(int(sizes[a]))) for a in range(image.ndim) if sizes[a] > 1]
    return _passes(image, output, steps, THREADS if threads is None else threads)


def maximum_filter(image: np.ndarray, size, *, mode: str = "nearest", output: np.ndarray | None = None,
                   threads: int | None = None) -> np.ndarray:
    """``scipy.ndimage.maximum_filter(image, size, mode=mode)`` for a rectangular window (size in voxels)."""
    return _rank_filter(image, size, mode, output, threads, ndimage.maximum_filter1d)


def minimum_filter(image: np.ndarray, size, *, mode: str = "nearest", output: np.ndarray | None = None,
                   threads: int | None = None) -> np.ndarray:
    """``scipy.ndimage.minimum_filter(image, size, mode=mode)`` for a rectangular window (size in voxels)."""
    return _rank_filter(image, size, mode, output, threads, ndimage.minimum_filter1d)
