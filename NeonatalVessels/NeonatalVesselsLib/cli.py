"""Sub-commands ``vessels``, ``vessels-measure`` and ``vessels-batch`` of ``neonatal-brain``.

* ``neonatal-brain vessels SWI --out DIR [--brain-mask M] [--ventricles V] [--labels L] [--params P]``
* ``neonatal-brain vessels-measure SWI --mask EDITED --out DIR [--previous RUN_DIR] [--params P]`` (labelmap
  NIfTI/NRRD or ``.seg.nrrd``; ``--previous``: the vessels left as they were are measured as in that run,
  the edited ones on what is left of their centreline)
* ``neonatal-brain vessels-batch CASES.csv|FOLDER --out DIR [--jobs N] [--scheduler ADDRESS] [--params P]``

``--params P``: a JSON object of engine parameters (:class:`.pipeline.VesselParams` fields,
``rules`` a nested object of :class:`.regions.RegionRules` fields; the others keep their
defaults), or an earlier run's ``summary.json``, whose recorded parameters are then used
again.  Every run records its full parameters in ``summary.json`` (``provenance.parameters``);
a batch also in ``batch_settings.json`` and does not resume with other parameters.

``CASES.csv`` has a header with at least ``case_id,swi`` (optional ``brain_mask``,
``ventricles``, ``labels``); relative paths are relative to the CSV's folder.  A
FOLDER is scanned for sub-folders holding ``swi.nii.gz`` (or ``swi.nrrd``), the
sub-folder name being the case id (a phantom cohort folder works as is).
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

PARAMS_HELP = ("JSON file of engine parameters (VesselParams fields, docs/vessels.md; the others keep their "
               "defaults) or an earlier run's summary.json (its recorded parameters)")


def _load_optional(path, reference, name):
    if not path:
        return None
    from NeonatalBrainLib.imageio import load_mask

    return load_mask(path, reference, name, "SWI")


def load_params(path):
    """Engine parameters (``VesselParams``) from a JSON file: an object of parameter fields, or a
    ``summary.json`` (its ``provenance.parameters``).  InputError names a missing or unreadable
    file, an unknown setting or a value of the wrong kind; None gives the defaults."""
    import json

    from NeonatalBrainLib.imageio import InputError

    from .pipeline import VesselParams

    if not path:
        return VesselParams()
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"parameters {path}: not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"parameters {path}: not a readable JSON file ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("provenance"), dict) and "parameters" in data["provenance"]:
        data = data["provenance"]["parameters"]       # an earlier run's summary.json
    return VesselParams.from_dict(data)


def analyse_case(case_id: str, swi_path: str, brain_mask: str | None = None, ventricles: str | None = None,
                 labels: str | None = None, *, out_dir: str, params: dict | None = None) -> dict:
    """Batch worker: analyse one SWI, write its output folder, return its summary metrics (flat).
    ``params``: engine parameters as ``VesselParams.as_dict()`` (None: the defaults)."""
    from NeonatalBrainLib.imageio import load_volume

    from .pipeline import SUMMARY_KEYS, VesselParams, run_vessel_analysis, write_outputs

    swi = load_volume(swi_path, "SWI")
    analysis = run_vessel_analysis(
        swi, brain_mask=_load_optional(brain_mask, swi, "brain mask"),
        ventricles=_load_optional(ventricles, swi, "ventricle mask"),
        labels=_load_optional(labels, swi, "labels"),
        params=None if params is None else VesselParams.from_dict(params))
    write_outputs(analysis, out_dir, input_path=swi_path)
    # 1 when the field of view holds the whole brain, 0 when it cuts through it (counts of the
    # imaged part only): cohort-stats --exclude-below field_of_view_whole_brain=1 leaves those out
    whole = int(not analysis.provenance["field_of_view_cuts_brain"])
    return {**{k: analysis.summary[k] for k in (*SUMMARY_KEYS, "dmv_detectability_index")},
            "field_of_view_whole_brain": whole}


def read_cases(source: str | Path) -> list[tuple]:
    """``(case_id, swi, brain_mask, ventricles, labels)`` tuples from a CSV or a folder."""
    from NeonatalBrainLib.imageio import InputError

    source = Path(source)
    if not source.exists():
        raise InputError(f"cases {source}: not found")
    cases = []
    if source.is_dir():
        for sub in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")):
            swi = next((sub / n for n in ("swi.nii.gz", "swi.nii", "swi.nrrd") if (sub / n).exists()), None)
            if swi is not None:
                cases.append((sub.name, str(swi), None, None, None))
        if not cases:
            raise InputError(f"cases folder {source}: no sub-folder holds swi.nii.gz / swi.nrrd")
        return cases
    with open(source, newline="") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        if "case_id" not in cols or "swi" not in cols:
            raise InputError(f"cases {source}: needs the columns case_id,swi (got {cols})")
        for n, row in enumerate(reader, start=2):
            cid, swi = (row.get("case_id") or "").strip(), (row.get("swi") or "").strip()
            if not cid or not swi:
                raise InputError(f"cases {source}: line {n} lacks case_id or swi")

            def path(v):
                v = (v or "").strip()
                return str((source.parent / v) if v and not Path(v).is_absolute() else v) if v else None

            cases.append((cid, path(swi), path(row.get("brain_mask")), path(row.get("ventricles")),
                          path(row.get("labels"))))
    if not cases:
        raise InputError(f"cases {source}: no rows")
    return cases


def _cmd_vessels(args) -> int:
    from NeonatalBrainLib.imageio import load_volume
    from NeonatalBrainLib.outputs import require_empty_dir
    from NeonatalBrainLib.progress import tqdm_progress

    from .pipeline import run_vessel_analysis, write_outputs

    require_empty_dir(args.out, create=False)
    params = load_params(args.params)
    swi = load_volume(args.swi, "SWI")
    prog, close = tqdm_progress("vessels")
    try:
        analysis = run_vessel_analysis(
            swi, brain_mask=_load_optional(args.brain_mask, swi, "brain mask"),
            ventricles=_load_optional(args.ventricles, swi, "ventricle mask"),
            labels=_load_optional(args.labels, swi, "labels"), params=params, progress=prog)
    finally:
        close()
    write_outputs(analysis, args.out, input_path=args.swi)
    s = analysis.summary
    print(f"{s['dmv_count']} DMVs ({s['dmv_count_left']} left, {s['dmv_count_right']} right); "
          f"outputs in {args.out}")
    for warning in s.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def load_edited_mask(path, swi, previous=None):
    """The vessel mask to measure: a labelmap (NIfTI/NRRD on the SWI grid: vessel ids, or 0 / 1)
    as it is, or a ``.seg.nrrd`` (resampled if cropped), whose segments are regions, not vessels:
    with ``previous`` (:class:`.pipeline.PreviousRun`) the earlier run's vessel ids restricted to
    the segmentation, new ids for painted voxels (:func:`.pipeline.edited_vessel_ids`), else the
    union of its segments (split into vessels at junctions)."""
    import numpy as np

    from NeonatalBrainLib.imageio import check_same_grid, load_volume, resample_to_grid

    if str(path).endswith(".seg.nrrd"):
        from NeonatalBrainLib.slicerfiles import read_seg_nrrd

        from .pipeline import edited_vessel_ids

        vol, _segments = read_seg_nrrd(path)
        if not vol.same_grid(swi):
            vol = resample_to_grid(vol, swi, interpolation="nearest")
        edited = np.asarray(vol.array) > 0
        return edited_vessel_ids(previous.labels, edited) if previous is not None else edited.astype(np.uint8)
    vol = load_volume(path, "vessel mask")
    check_same_grid(swi, vol, "SWI", "vessel mask")
    return vol.array


def load_previous_run(folder, swi):
    """:class:`.pipeline.PreviousRun` of an earlier output folder of ``vessels`` /
    ``vessels-measure`` (its ``vessel_labels.nii.gz``, ``centerlines.csv`` and ``vessels.csv``)."""
    import pandas as pd

    from NeonatalBrainLib.imageio import InputError, check_same_grid, load_volume

    from .pipeline import PreviousRun

    folder = Path(folder)
    names = ("vessel_labels.nii.gz", "centerlines.csv", "vessels.csv")
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise InputError(f"--previous {folder}: not an output folder of the vessel analysis (no {', '.join(missing)})")
    labels = load_volume(folder / names[0], "previous vessel labels")
    check_same_grid(swi, labels, "SWI", "previous vessel labels")
    try:
        points = pd.read_csv(folder / names[1])
        rows = pd.read_csv(folder / names[2])
        centrelines = {int(vid): g[["x", "y", "z"]].to_numpy(float) for vid, g in points.groupby("vessel_id", sort=False)}
        return PreviousRun.from_rows(labels.array, centrelines, rows)
    except (ValueError, KeyError, AttributeError, pd.errors.ParserError) as exc:
        raise InputError(f"--previous {folder}: unreadable centerlines.csv / vessels.csv ({exc})") from None


def _cmd_measure(args) -> int:
    from NeonatalBrainLib.imageio import load_volume
    from NeonatalBrainLib.outputs import require_empty_dir
    from NeonatalBrainLib.progress import tqdm_progress

    from .pipeline import measure_vessel_mask, write_outputs

    require_empty_dir(args.out, create=False)
    params = load_params(args.params)
    swi = load_volume(args.swi, "SWI")
    previous = load_previous_run(args.previous, swi) if args.previous else None
    mask = load_edited_mask(args.mask, swi, previous)
    prog, close = tqdm_progress("vessels-measure")
    try:
        analysis = measure_vessel_mask(
            swi, mask, brain_mask=_load_optional(args.brain_mask, swi, "brain mask"),
            ventricles=_load_optional(args.ventricles, swi, "ventricle mask"),
            labels=_load_optional(args.labels, swi, "labels"), params=params, progress=prog, previous=previous)
    finally:
        close()
    write_outputs(analysis, args.out, input_path=args.swi)
    print(f"{analysis.summary['dmv_count']} DMVs measured; outputs in {args.out}")
    return 0


def batch_worker(params=None):
    """``(worker, settings)`` for :func:`NeonatalBrainLib.batch.run_batch`: :func:`analyse_case`
    with the engine parameters ``params`` (a ``VesselParams``; None: the defaults), and the
    settings a batch folder records (the engine version and every parameter)."""
    import functools

    from NeonatalBrainLib import __version__

    from .pipeline import VesselParams

    values = (params or VesselParams()).as_dict()
    return (functools.partial(analyse_case, params=values),
            {"analysis": "vessels", "version": __version__, "parameters": values})


def case_psf(case_id: str, swi_path: str, brain_mask: str | None = None, ventricles: str | None = None,
             labels: str | None = None) -> float | None:
    """Cohort pre-pass worker: the point-spread estimate of one case (mm), None without one."""
    from NeonatalBrainLib.imageio import load_volume

    from .pipeline import estimate_scanner_psf

    swi = load_volume(swi_path, "SWI")
    info = estimate_scanner_psf(swi, brain_mask=_load_optional(brain_mask, swi, "brain mask"),
                                ventricles=_load_optional(ventricles, swi, "ventricle mask"))
    return info["extra_sigma_mm"] if info.get("source") == "ventricle walls" else None


def cohort_psf(cases, *, executor=None, jobs: int = 1, progress=None) -> dict:
    """``{"extra_sigma_mm": median, "n_cases": k, "per_case": {case_id: estimate or None}}``: the
    point-spread estimate (:mod:`.psf`) of every case and their median (0 when no case has one).
    One value for a cohort scanned with one protocol keeps the per-scan scatter of the estimate
    (~0.02-0.04 mm) out of the width comparisons.  A case that fails here is None (its analysis
    reports the error)."""
    import concurrent.futures as cf

    import numpy as np

    from NeonatalBrainLib.batch import local_process_pool
    from NeonatalBrainLib.progress import as_progress

    prog = as_progress(progress)
    own = executor is None
    ex = local_process_pool(jobs) if own else executor
    per_case: dict[str, float | None] = {}
    try:
        futures = {ex.submit(case_psf, str(c[0]), *c[1:]): str(c[0]) for c in cases}
        for n, fut in enumerate(cf.as_completed(futures), start=1):
            try:
                per_case[futures[fut]] = fut.result()
            except Exception:  # noqa: BLE001  (reported by the case's own analysis)
                per_case[futures[fut]] = None
            prog.update(n / max(1, len(futures)), f"point-spread {n}/{len(futures)}")
    finally:
        if own:
            ex.shutdown(wait=True, cancel_futures=True)
    values = [v for v in per_case.values() if v is not None]
    median = round(float(np.median(values)), 4) if values else 0.0
    return {"extra_sigma_mm": median, "n_cases": len(values), "per_case": dict(sorted(per_case.items()))}


def _cmd_batch(args) -> int:
    from NeonatalBrainLib.batch import dask_executor, run_batch
    from NeonatalBrainLib.progress import tqdm_progress

    cases = read_cases(args.cases)
    params = load_params(args.params)
    client = executor = None
    if args.scheduler:
        client, executor = dask_executor(args.scheduler)
    try:
        settings_extra = {}
        if args.psf == "cohort":
            params, settings_extra["cohort_psf"] = _with_cohort_psf(params, cases, args, executor)
        worker, settings = batch_worker(params)
        settings.update(settings_extra)
        prog, close = tqdm_progress("vessels-batch")
        try:
            results = run_batch(cases, worker, args.out, executor=executor, jobs=args.jobs, progress=prog,
                                settings=settings)
        finally:
            close()
    finally:
        if client is not None:
            client.close()
    failed = [r for r in results if r["status"] == "failed"]
    done = sum(r["status"] == "done" for r in results)
    skipped = sum(r["status"] == "skipped" for r in results)
    print(f"{done} cases done, {skipped} already done, {len(failed)} failed; metrics in {Path(args.out) / 'metrics.csv'}")
    for r in failed:
        print(f"  {r['case_id']}: {r['error']}", file=sys.stderr)
    return 0


def _with_cohort_psf(params, cases, args, executor):
    """(params with the cohort's point-spread, the cohort record): the record stored by the batch
    folder when it resumes, else :func:`cohort_psf` of the cases."""
    from dataclasses import replace

    from NeonatalBrainLib.batch import read_settings
    from NeonatalBrainLib.imageio import InputError
    from NeonatalBrainLib.progress import tqdm_progress

    if params.psf_extra_sigma_mm is not None:
        raise InputError("--psf cohort and psf_extra_sigma_mm in --params: give one or the other")
    cohort = (read_settings(args.out) or {}).get("cohort_psf")      # a resumed batch keeps its cohort value
    if cohort is None:
        prog, close = tqdm_progress("cohort point-spread")
        try:
            cohort = cohort_psf(cases, executor=executor, jobs=args.jobs, progress=prog)
        finally:
            close()
    print(f"cohort point-spread beyond the voxel: {cohort['extra_sigma_mm']:.3f} mm "
          f"(median of {cohort['n_cases']} cases)")
    return replace(params, psf_extra_sigma_mm=float(cohort["extra_sigma_mm"])), cohort


def register(subparsers) -> None:
    p = subparsers.add_parser("vessels", help="automatic DMV segmentation and measurement on SWI",
                              description="Segment and measure the deep medullary veins on an SWI magnitude "
                                          "volume; writes summary.json, vessels.csv, centerlines.csv, "
                                          "vessel_labels.nii.gz, vessels.seg.nrrd, centerlines.mrk.json, "
                                          "minip.nii.gz and report.html into --out (new or empty folder).")
    p.add_argument("swi", help="SWI magnitude (NIfTI, NRRD or a DICOM series folder)")
    p.add_argument("--out", required=True, help="output folder (new or empty)")
    p.add_argument("--brain-mask", help="uint8 brain mask on the SWI grid (optional)")
    p.add_argument("--ventricles", help="uint8 lateral + third ventricle mask on the SWI grid (optional)")
    p.add_argument("--labels", help="anatomical labels on the SWI grid (anatomy.LABELS values, optional)")
    p.add_argument("--params", help=PARAMS_HELP)
    p.set_defaults(func=_cmd_vessels)

    p = subparsers.add_parser("vessels-measure", help="measure a given (edited) vessel segmentation",
                              description="Re-split, re-classify and re-measure the vessels of a given mask "
                                          "(labelmap on the SWI grid, > 0 = vessel, or a .seg.nrrd).")
    p.add_argument("swi")
    p.add_argument("--mask", required=True, help="edited vessel labelmap / .seg.nrrd")
    p.add_argument("--out", required=True)
    p.add_argument("--brain-mask")
    p.add_argument("--ventricles")
    p.add_argument("--labels")
    p.add_argument("--params", help=PARAMS_HELP)
    p.add_argument("--previous", metavar="DIR",
                   help="output folder of the run the mask was edited from: vessels left as they were keep its "
                        "centrelines, regions and sides (measured as before), edited ones the rest of their "
                        "centreline; a .seg.nrrd gets its vessel ids")
    p.set_defaults(func=_cmd_measure)

    p = subparsers.add_parser("vessels-batch", help="run the vessel analysis on many cases (resumable)",
                              description="One output folder per case plus a cohort metrics.csv; restart to "
                                          "resume; failing cases are listed in errors.csv.")
    p.add_argument("cases", help="CASES.csv (case_id,swi[,brain_mask,ventricles,labels]) or a folder of case folders")
    p.add_argument("--out", required=True)
    p.add_argument("--jobs", type=int, default=1, help="local worker processes (default 1)")
    p.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://127.0.0.1:8786")
    p.add_argument("--params", help=PARAMS_HELP + "; a batch resumes only with the parameters it was started with")
    p.add_argument("--psf", choices=("scan", "cohort"), default="scan",
                   help="scanner point-spread for the widths: estimated per scan (default), or one value for "
                        "the cohort, the median of the per-scan estimates (one protocol; recorded in "
                        "batch_settings.json and kept when the batch resumes)")
    p.set_defaults(func=_cmd_batch)
