"""Process-wide memory settings for the command-line tool and its batch workers.

The vessel pipeline creates and frees many volume-sized arrays (75 MB each for a
128 x 384 x 384 float32 SWI).  By default each one is fresh memory from the operating
system: glibc serves blocks above 32 MB with ``mmap`` and returns them with
``munmap``, and numpy advises the kernel to back arrays of 4 MB or more with
transparent huge pages, which the kernel backs (zeroing, and compacting memory to find
2 MB pages) on first touch.  On the benchmark volume that cost 1-2 s of kernel time per
run (``ru_stime``), most of it in the first run of a process (``benchmarks/README.md``).

:func:`configure_process_memory` changes two process-wide settings:

* numpy: no huge-page advice for new arrays (numpy's own switch, the one the
  ``NUMPY_MADVISE_HUGEPAGE=0`` environment variable sets at import);
* glibc (Linux): large blocks come from the heap and freed memory stays there for
  reuse (``mallopt(M_MMAP_THRESHOLD)`` and ``mallopt(M_TRIM_THRESHOLD)``, the settings of
  the ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` environment variables).
  The process then keeps its peak memory until it exits.

Results do not change (only where memory comes from).  ``neonatal-brain`` applies
them at start (its process pool workers are forked from it and inherit them).

A library call (the Slicer module, a notebook) leaves glibc as it is (``mallopt`` cannot be
undone: setting a threshold ends glibc's own adaptive one) and turns numpy's huge-page advice
off only while it runs (:func:`without_numpy_hugepage_advice`, restored when the last of
overlapping calls returns): on the benchmark volume a first call then takes ~0.5 s less.
"""
from __future__ import annotations

import ctypes
import functools
import platform
import threading
from contextlib import contextmanager

#: glibc ``mallopt`` parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def numpy_hugepage_switch():
    """numpy's ``_set_madvise_hugepage(enabled) -> previous`` (numpy >= 1.20), or None."""
    try:
        from numpy._core import multiarray as _ma    # numpy >= 2
    except ImportError:                              # pragma: no cover - numpy 1.x (older Slicer)
        from numpy.core import multiarray as _ma
    return getattr(_ma, "_set_madvise_hugepage", None)


def configure_process_memory(*, heap_block_limit_mb: int = 1024) -> dict[str, bool]:
    """Apply the settings of the module docstring; returns which of them took effect.

    ``heap_block_limit_mb``: blocks up to this size come from the heap, and up to this
    much freed memory at the top of the heap is kept.
    """
    applied = {"numpy_hugepage_advice_off": False, "glibc_heap_reuse": False}
    switch = numpy_hugepage_switch()
    if switch is not None:
        switch(False)
        applied["numpy_hugepage_advice_off"] = True
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        try:
            libc = ctypes.CDLL("libc.so.6")
        except OSError:     # pragma: no cover
            return applied
        limit = int(heap_block_limit_mb) << 20
        applied["glibc_heap_reuse"] = bool(libc.mallopt(_M_MMAP_THRESHOLD, limit)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, limit))
    return applied


_advice_lock = threading.Lock()
_advice_users = 0
_advice_before: bool | None = None


@contextmanager
def numpy_hugepage_advice_off():
    """numpy's huge-page advice off inside the block; the process's own setting is restored when
    the last of overlapping blocks (other threads) ends.  Only where new arrays' memory comes
    from changes, never a result."""
    global _advice_users, _advice_before
    switch = numpy_hugepage_switch()
    if switch is None:        # pragma: no cover - numpy < 1.20
        yield
        return
    with _advice_lock:
        if _advice_users == 0:
            _advice_before = bool(switch(False))
        _advice_users += 1
    try:
        yield
    finally:
        with _advice_lock:
            _advice_users -= 1
            if _advice_users == 0:
                switch(_advice_before)


def without_numpy_hugepage_advice(func):
    """Decorator: ``func`` runs inside :func:`numpy_hugepage_advice_off`."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with numpy_hugepage_advice_off():
            return func(*args, **kwargs)
    return wrapper
