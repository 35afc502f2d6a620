"""Safe output folders: nothing the user made is overwritten, nothing half-written looks complete.

``staged_output(out_dir)`` hands out a hidden staging folder inside ``out_dir``;
files are moved into ``out_dir`` only when the block finishes without error,
so a failed or cancelled run leaves ``out_dir`` as it was.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


class OutputExistsError(FileExistsError):
    """An output would overwrite something that already exists."""


def require_empty_dir(out_dir: str | os.PathLike, *, create: bool = True) -> Path:
    """Return ``out_dir`` as a Path; create it if missing; refuse a non-empty folder."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(p for p in out.iterdir() if not p.name.startswith(".staging-")):
        raise OutputExistsError(
            f"output folder {out} is not empty; choose an empty or new folder (nothing is overwritten)")
    if create:
        out.mkdir(parents=True, exist_ok=True)
    return out


@contextlib.contextmanager
def staged_output(out_dir: str | os.PathLike, *, must_be_empty: bool = True) -> Iterator[Path]:
    """Write into a staging folder; move its files into ``out_dir`` only on success."""
    out = require_empty_dir(out_dir) if must_be_empty else Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    try:
        for item in sorted(stage.iterdir()):
            target = out / item.name
            if target.exists():
                raise OutputExistsError(f"{target} already exists; not overwritten")
            os.replace(item, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def unique_path(path: str | os.PathLike) -> Path:
    """``path`` if free, else ``stem-2.ext``, ``stem-3.ext`` ... (never overwrites)."""
    path = Path(path)
    if not path.exists():
        return path
    name = path.name
    suffix = "".join(path.suffixes)
    stem = name[: len(name) - len(suffix)] if suffix else name
    n = 2
    while (candidate := path.with_name(f"{stem}-{n}{suffix}")).exists():
        n += 1
    return candidate
