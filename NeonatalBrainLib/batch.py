"""Resumable batch runner: one output folder per case, a cohort metrics table, failures logged.

``run_batch(cases, worker, out_dir)`` calls ``worker(case_id, *inputs, out_dir=case_dir)``
for every case whose folder ``out_dir/<case_id>`` is not yet complete, on a
``concurrent.futures``-style executor (local processes by default; a Dask
cluster through ``client.get_executor()``).  The worker returns a flat dict of
metrics; the runner (in the parent process only) appends one row
``case_id, <metrics>`` to ``out_dir/metrics.csv``.

Resumability and consistency
----------------------------
* A case is *done* when its row is in ``metrics.csv``.  On restart done cases are
  skipped; a case whose folder exists without a row (killed mid-way) is redone
  after its incomplete folder is moved aside to ``out_dir/.incomplete/``.
* Each row is appended with a single ``write`` of a complete line followed by
  ``fsync`` under an exclusive lock, so an interruption leaves either the whole
  row or none; a torn last line (power loss) is dropped when the file is read.
  Rows are never duplicated: a case already present is not appended again.
* A failing case is appended to ``out_dir/errors.csv`` (case_id, error type,
  message) and the others go on; a failed case is retried on the next run.
* ``settings`` (e.g. the analysis parameters) are recorded in ``out_dir/batch_settings.json``
  by the first run; a later run with other settings is refused before any case starts, so
  one ``metrics.csv`` never mixes results of different settings.
"""
from __future__ import annotations

import concurrent.futures as cf
import csv
import io
import json
import os
import shutil
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

try:
    import fcntl
except ImportError:  # pragma: no cover (Windows)
    fcntl = None

from .progress import as_progress

METRICS_FILE = "metrics.csv"
ERRORS_FILE = "errors.csv"
SETTINGS_FILE = "batch_settings.json"


def _lock(fh) -> None:
    if fcntl is not None:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)


def _unlock(fh) -> None:
    if fcntl is not None:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def read_rows(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a CSV written by :func:`append_row` (a torn last line is ignored)."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    return list(csv.DictReader(io.StringIO(text)))


def append_row(path: str | os.PathLike, row: dict[str, Any]) -> None:
    """Append one row atomically (one write + fsync under a lock); header written when new.

    Columns are those of the existing header; new keys extend the header (the file
    is rewritten atomically through a temporary file and ``os.replace``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", newline="") as fh:
        _lock(fh)
        try:
            fh.seek(0)
            text = fh.read()
            if text and not text.endswith("\n"):   # torn line from an earlier crash
                text = text[: text.rfind("\n") + 1]
            existing = list(csv.DictReader(io.StringIO(text))) if text else []
            header = next(csv.reader(io.StringIO(text)), []) if text else []
            keys = list(header) + [k for k in row if k not in header]
            if not header or keys != header:
                buf = io.StringIO()
                w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
                w.writeheader()
                for r in existing:
                    w.writerow({k: r.get(k, "") for k in keys})
                w.writerow({k: _fmt(row.get(k, "")) for k in keys})
                tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
                tmp.write_text(buf.getvalue())
                with open(tmp, "rb+") as t:
                    os.fsync(t.fileno())
                os.replace(tmp, path)
            else:
                buf = io.StringIO()
                w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
                w.writerow({k: _fmt(row.get(k, "")) for k in keys})
                if len(text.encode()) != os.fstat(fh.fileno()).st_size:
                    # drop a torn tail before appending
                    fh.truncate(len(text.encode()))
                fh.seek(0, os.SEEK_END)
                fh.write(buf.getvalue())
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            _unlock(fh)


def _fmt(x):
    if isinstance(x, float):
        return "" if x != x else repr(x)
    return "" if x is None else x


def done_cases(out_dir: str | os.PathLike) -> set[str]:
    return {r["case_id"] for r in read_rows(Path(out_dir) / METRICS_FILE) if r.get("case_id")}


def _configure_worker() -> None:
    from .runtime import configure_process_memory

    configure_process_memory()


def local_process_pool(jobs: int = 1) -> cf.ProcessPoolExecutor:
    """``jobs`` worker processes with the command-line tool's memory settings, started fresh
    (``forkserver``, else ``spawn``), never forked from this process: a process that has already
    run OpenMP or other threaded code (a notebook or test session that analysed a case) cannot be
    forked safely (GNU OpenMP aborts the child: "fork() called from a process already using GNU
    OpenMP").  Workers import the worker function by its module, so it must be importable."""
    import multiprocessing as mp

    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    return cf.ProcessPoolExecutor(max_workers=max(1, int(jobs)), mp_context=mp.get_context(method),
                                  initializer=_configure_worker)


def _call_worker(worker: Callable, case_id: str, inputs: Sequence, case_dir: str) -> dict:
    return worker(case_id, *inputs, out_dir=case_dir)


def read_settings(out_dir: str | os.PathLike) -> dict | None:
    """The settings a batch folder recorded (:func:`check_settings`), or None."""
    path = Path(out_dir) / SETTINGS_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"batch folder {out_dir}: {SETTINGS_FILE} is unreadable ({exc})") from None


def check_settings(out_dir: str | os.PathLike, settings: dict) -> None:
    """Record ``settings`` (JSON-serialisable) in ``out_dir/batch_settings.json``, or, when a
    record is there, raise ValueError naming the settings that differ from it (and, when their
    ``version`` entries differ, the two versions: each version has its own set of settings)."""
    path = Path(out_dir) / SETTINGS_FILE
    wanted = json.loads(json.dumps(settings))       # as stored: tuples become lists
    stored = read_settings(out_dir)
    if stored is not None:
        if stored != wanted:
            diff = sorted(_differences(stored, wanted))
            listed = ", ".join(diff[:10]) + (" ..." if len(diff) > 10 else "")
            if isinstance(stored, dict) and "version" in stored and "version" in wanted \
                    and stored["version"] != wanted["version"]:
                # another version's settings cannot be given to this one (it may lack or add settings)
                raise ValueError(f"batch folder {out_dir} was started by version {stored['version']} of this "
                                 f"program, this is {wanted['version']}: finish it with that version, or use a "
                                 f"new output folder (different: {listed})")
            raise ValueError(f"batch folder {out_dir} was started with other settings (different: {listed}); "
                             f"resume it with the settings in {path.name}, or use a new output folder")
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(wanted, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _differences(a, b, prefix: str = "") -> list[str]:
    """Dotted names of the entries that differ between two JSON-like mappings."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return [prefix or "(all)"] if a != b else []
    out = []
    for key in set(a) | set(b):
        name = f"{prefix}.{key}" if prefix else str(key)
        out += _differences(a.get(key), b.get(key), name) if key in a and key in b else [name]
    return out


def run_batch(cases: Iterable[Sequence], worker: Callable, out_dir: str | os.PathLike, *,
              executor: cf.Executor | None = None, jobs: int = 1, progress=None,
              settings: dict | None = None) -> list[dict]:
    """Run ``worker`` on every not-yet-done case; returns one result dict per case.

    ``cases``: ``(case_id, *inputs)`` tuples; ``worker``: a picklable function
    ``worker(case_id, *inputs, out_dir=...) -> dict`` of metrics; ``executor``: any
    ``concurrent.futures.Executor`` (default :func:`local_process_pool` of ``jobs``, whose workers get
    :func:`NeonatalBrainLib.runtime.configure_process_memory`; a given executor's are left as they are).
    ``settings``: recorded / checked by :func:`check_settings` before any case runs.
    Result dicts: ``case_id``, ``status`` ("done", "skipped", "failed"), ``error``.
    """
    prog = as_progress(progress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cases = [tuple(c) for c in cases]
    ids = [str(c[0]) for c in cases]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise ValueError(f"batch cases: duplicate case ids {sorted(dup)}")
    bad = [i for i in ids if not i or "/" in i or "\\" in i or i.startswith(".")]
    if bad:
        raise ValueError(f"batch cases: case ids must be plain folder names, got {bad}")
    if settings is not None:
        check_settings(out, settings)
    done = done_cases(out)
    results: list[dict] = [{"case_id": i, "status": "skipped", "error": ""} for i in ids if i in done]
    todo = [c for c in cases if str(c[0]) not in done]
    for c in todo:
        case_dir = out / str(c[0])
        if case_dir.exists():   # left by an interrupted run: move aside, never delete user data
            aside = out / ".incomplete" / f"{c[0]}-{int(time.time() * 1000)}"
            aside.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(case_dir), str(aside))
    total = len(cases)
    finished = len(results)
    prog.update(finished / max(total, 1), f"{finished}/{total} cases")
    own = executor is None
    # the default local workers get the command-line tool's memory settings (NeonatalBrainLib.runtime)
    ex = executor if executor is not None else local_process_pool(jobs)
    try:
        futures = {ex.submit(_call_worker, worker, str(c[0]), tuple(c[1:]), str(out / str(c[0]))): str(c[0])
                   for c in todo}
        for fut in cf.as_completed(futures):
            cid = futures[fut]
            try:
                metrics = fut.result()
                row = {"case_id": cid, **{k: v for k, v in (metrics or {}).items() if k != "case_id"}}
                append_row(out / METRICS_FILE, row)
                results.append({"case_id": cid, "status": "done", "error": ""})
            except Exception as exc:  # noqa: BLE001  (a failing case must not stop the others)
                msg = f"{type(exc).__name__}: {exc}"
                append_row(out / ERRORS_FILE, {"case_id": cid, "error_type": type(exc).__name__,
                                                "message": str(exc).replace("\n", " ")[:2000],
                                                "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
                tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                with open(out / "batch.log", "a") as log:
                    log.write(f"--- {cid} failed\n{tb}\n")
                results.append({"case_id": cid, "status": "failed", "error": msg})
            finished += 1
            prog.update(finished / max(total, 1), f"{finished}/{total} cases")
    finally:
        if own:
            ex.shutdown(wait=True, cancel_futures=True)
    order = {c: n for n, c in enumerate(ids)}
    return sorted(results, key=lambda r: order[r["case_id"]])


def dask_executor(address: str):
    """``(client, executor)`` for a running Dask scheduler at ``address`` (tcp://host:port)."""
    from distributed import Client

    client = Client(address, timeout="20s")
    return client, client.get_executor()
