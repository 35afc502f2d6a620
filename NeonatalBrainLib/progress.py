"""Progress reporting and cancellation shared by the CLI, the batch runner and the Slicer widgets.

Long-running logic takes an optional ``progress`` argument: a :class:`Progress`
(or ``None``).  It calls ``progress.update(fraction, stage)`` with a fraction in
[0, 1] of its own work; ``update`` raises :class:`OperationCancelled` once
``cancel()`` has been requested, so work stops at the next checkpoint and the
caller can leave its outputs (files, MRML scene) consistent.  ``progress.sub(a, b)``
maps a sub-task's 0..1 onto [a, b] of the parent.
"""
from __future__ import annotations

import threading
from typing import Callable, Optional

ProgressCallback = Callable[[float, str], None]


class OperationCancelled(RuntimeError):
    """Raised at a progress checkpoint after the user asked to cancel."""


class Progress:
    def __init__(self, callback: Optional[ProgressCallback] = None, *,
                 cancel_event: Optional[threading.Event] = None,
                 start: float = 0.0, stop: float = 1.0) -> None:
        self._callback = callback
        self._cancel = cancel_event if cancel_event is not None else threading.Event()
        self._start, self._stop = start, stop

    def update(self, fraction: float, stage: str = "") -> None:
        if self._cancel.is_set():
            raise OperationCancelled(f"cancelled{(' during ' + stage) if stage else ''}")
        f = min(1.0, max(0.0, float(fraction)))
        if self._callback is not None:
            self._callback(self._start + f * (self._stop - self._start), stage)

    def sub(self, start: float, stop: float) -> "Progress":
        span = self._stop - self._start
        return Progress(self._callback, cancel_event=self._cancel,
                        start=self._start + start * span, stop=self._start + stop * span)

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()


def as_progress(progress: "Progress | ProgressCallback | None") -> Progress:
    """Accept a Progress, a bare ``callback(fraction, stage)`` or None."""
    if isinstance(progress, Progress):
        return progress
    return Progress(progress)


def tqdm_progress(description: str = "", disable: bool | None = None) -> tuple[Progress, Callable[[], None]]:
    """A Progress drawing a tqdm bar in percent on stderr; returns (progress, close)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=100, desc=description, unit="%", disable=disable,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix} [{elapsed}<{remaining}]")

    def callback(fraction: float, stage: str) -> None:
        bar.n = round(100 * fraction, 1)
        if stage:
            bar.set_postfix_str(stage, refresh=False)
        bar.refresh()

    return Progress(callback), bar.close
