"""Vesselness and vessel-pipeline speed/memory against scikit-image and SimpleITK.

Usage::

    .venv/bin/python benchmarks/bench_vessels.py [--shape 128 384 384] [--skip-skimage] [--out results.json]

The test volume is the phantom's SWI (term_3t, seed 0) resampled (linear) onto
a grid of ``--shape`` voxels ``(k, j, i)`` = slices x rows x columns covering the same
field of view, so it holds realistic veins, ventricles, noise and bias.  Each
method runs in its own fresh subprocess; its peak resident memory is the
process's ``ru_maxrss`` minus the baseline after loading the volume (+ the
baseline in the table), so the numbers do not mix.  Same scales for all
methods (mm; converted to voxels for scikit-image, which has no spacing).

Methods
-------
* ``project``: ``NeonatalVesselsLib.vesselness.vesselness`` on the whole volume (no mask).
* ``skimage``: ``skimage.filters.frangi(black_ridges=True)``.
* ``sitk``: per scale ``SmoothingRecursiveGaussian`` + ``ObjectnessMeasure(objectDimension=1,
  brightObject=False)``, maximum over scales.
* ``pipeline``: ``run_vessel_analysis`` end to end (brain mask, normalisation,
  ventricles, vesselness in the brain, segmentation, splitting, measurements).
* ``cli``: ``neonatal-brain vessels VOLUME --out DIR`` as a user runs it, in a fresh Python
  process timed by this script from launch to exit: interpreter start, imports, reading
  the NIfTI, the pipeline and writing every output file (tables, labelmap, minIP,
  ``.seg.nrrd``, markups, report); peak = the child's ``ru_maxrss``.
* numba cold start: the first call in a process with an empty ``NUMBA_CACHE_DIR``
  (JIT compile) against a process with the cache filled (cache=True).

Process memory settings: every method runs with the settings ``neonatal-brain`` gives
its process (:func:`NeonatalBrainLib.runtime.configure_process_memory`: numpy without
huge-page advice, glibc reusing freed large blocks), the same for all methods; the
project's vesselness, SimpleITK and the pipeline also run with the defaults
(``*_default_memory``), as a library call from another program (e.g. Slicer) would.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SCALES_MM = (0.35, 0.55, 0.8)


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_volume(path: Path, shape) -> None:
    from NeonatalBrainLib.imageio import Volume, resample_to_grid, save_volume
    from NeonatalBrainLib.phantom import generate_phantom

    ph = generate_phantom(seed=0, preset="term_3t", modalities=("swi",))
    swi = ph.swi
    nk, nj, ni = shape
    extent = np.asarray(swi.shape) * swi.spacing_mm
    spacing = extent / np.array([ni, nj, nk])
    affine = swi.affine.copy()
    affine[:3, :3] = swi.direction * spacing
    ref = Volume(np.zeros((ni, nj, nk), np.uint8), affine)
    save_volume(resample_to_grid(swi, ref), path)


def run_method(name: str, path: str, memory: str = "cli") -> dict:
    from NeonatalBrainLib.imageio import load_volume

    if memory == "cli":
        from NeonatalBrainLib.runtime import configure_process_memory

        configure_process_memory()

    vol = load_volume(path)
    img = np.ascontiguousarray(vol.array, np.float32)
    sp = vol.spacing_mm
    base = _maxrss_mb()
    t0 = time.perf_counter()
    extra: dict = {}
    if name == "project":
        from NeonatalVesselsLib.vesselness import vesselness

        vesselness(img[:16, :16, :16], sp, SCALES_MM)   # JIT (cached) outside the timing
        t0 = time.perf_counter()
        vesselness(img, sp, SCALES_MM)
    elif name == "project_cold":
        from NeonatalVesselsLib.vesselness import vesselness

        t0 = time.perf_counter()
        vesselness(img[:16, :16, :16], sp, SCALES_MM)
        extra["first_call_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        vesselness(img[:16, :16, :16], sp, SCALES_MM)
        extra["second_call_s"] = time.perf_counter() - t1
    elif name == "skimage":
        from skimage.filters import frangi

        sig_vox = [s / float(np.mean(sp)) for s in SCALES_MM]
        frangi(img, sigmas=sig_vox, black_ridges=True)
    elif name == "sitk":
        import SimpleITK as sitk

        from NeonatalBrainLib.imageio import volume_to_sitk

        im = sitk.Cast(volume_to_sitk(vol), sitk.sitkFloat32)
        t0 = time.perf_counter()
        best = None
        for s in SCALES_MM:
            sm = sitk.SmoothingRecursiveGaussian(im, s)
            ob = sitk.ObjectnessMeasure(sm, objectDimension=1, brightObject=False, scaleObjectnessMeasure=True)
            best = ob if best is None else sitk.Maximum(best, ob)
    elif name == "pipeline":
        from NeonatalVesselsLib.pipeline import run_vessel_analysis
        from NeonatalVesselsLib.vesselness import vesselness

        vesselness(img[:16, :16, :16], sp, SCALES_MM)
        t0 = time.perf_counter()
        a = run_vessel_analysis(vol)
        extra["n_vessels"] = int(len(a.vessels))
        # same results under either memory setting: a digest of the vessel table and the labelmap
        import hashlib

        digest = hashlib.sha256(a.vessels.to_csv(index=False).encode())
        digest.update(np.ascontiguousarray(a.vessel_labels.array).tobytes())
        extra["result_sha256"] = digest.hexdigest()
        extra["stages_s"] = a.provenance["timings_s"]
    else:
        raise ValueError(name)
    return {"method": name, "time_s": time.perf_counter() - t0, "peak_mb": _maxrss_mb(),
            "baseline_mb": base, "process_memory": memory, **extra}


def _subprocess(name: str, path: Path, env=None, memory: str = "cli") -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", name, str(path), memory], capture_output=True, text=True,
                         env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cli_run(path: Path, out_dir: Path) -> dict:
    """``neonatal-brain vessels`` in a fresh process (wrapped to read its peak memory), timed from here."""
    code = ("import resource, sys\nfrom NeonatalBrainLib.cli import main\nrc = main(sys.argv[1:])\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)\nsys.exit(rc)")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, "vessels", str(path), "--out", str(out_dir)],
                         capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    summary = json.loads((out_dir / "summary.json").read_text())
    return {"method": "cli", "time_s": wall, "peak_mb": float(out.stdout.strip().splitlines()[-1]),
            "analysis_s": summary["provenance"]["run_time_s"],
            "output_mb": sum(f.stat().st_size for f in out_dir.iterdir()) / 1e6}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[128, 384, 384], help="k j i (slices rows cols)")
    ap.add_argument("--skip-skimage", action="store_true", help="skip scikit-image (about 150 s)")
    ap.add_argument("--scaling", action="store_true", help="also time the project's vesselness at 1/8..1x")
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(run_method(*args.child)))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench_vessels_"))
    vol_path = tmp / "volume.nii.gz"
    make_volume(vol_path, args.shape)
    results = {"shape_kji": args.shape, "scales_mm": SCALES_MM, "cores": os.cpu_count()}
    cold_env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp / "numba_cache"))
    results["numba_cold"] = _subprocess("project_cold", vol_path, cold_env)
    results["numba_warm"] = _subprocess("project_cold", vol_path, cold_env)
    methods = ["project", "sitk", "pipeline"] + ([] if args.skip_skimage else ["skimage"])
    for m in methods:
        results[m] = _subprocess(m, vol_path)
        print(f"{m:10s} {results[m]['time_s']:7.2f} s  peak {results[m]['peak_mb']:7.0f} MB", flush=True)
    results["cli"] = r = _cli_run(vol_path, tmp / "cli_out")
    print(f"{'cli':10s} {r['time_s']:7.2f} s  peak {r['peak_mb']:7.0f} MB  (whole command: start-up, "
          f"reading, analysis {r['analysis_s']:.2f} s, writing {r['output_mb']:.0f} MB)", flush=True)
    for m in ("project", "sitk", "pipeline"):
        r = results[f"{m}_default_memory"] = _subprocess(m, vol_path, memory="default")
        print(f"{m:10s} {r['time_s']:7.2f} s  peak {r['peak_mb']:7.0f} MB  (default process memory)", flush=True)
    results["pipeline_results_identical"] = (results["pipeline"]["result_sha256"]
                                             == results["pipeline_default_memory"]["result_sha256"])
    print("pipeline results identical under both memory settings:", results["pipeline_results_identical"])
    t = {m: results[m]["time_s"] for m in methods}
    results["ratios"] = {
        "sitk_over_project": t["sitk"] / t["project"],
        "sitk_over_pipeline": t["sitk"] / t["pipeline"],
        "sitk_over_cli": t["sitk"] / results["cli"]["time_s"],
        "sitk_over_project_default_memory": (results["sitk_default_memory"]["time_s"]
                                             / results["project_default_memory"]["time_s"]),
        "sitk_over_pipeline_default_memory": (results["sitk_default_memory"]["time_s"]
                                              / results["pipeline_default_memory"]["time_s"]),
        **({"skimage_over_project": t["skimage"] / t["project"]} if "skimage" in t else {}),
    }
    if args.scaling:
        rows = []
        for f in (0.125, 0.25, 0.5, 1.0):
            shape = [max(8, int(round(args.shape[0] * f ** (1 / 3)))), int(round(args.shape[1] * f ** (1 / 3))),
                     int(round(args.shape[2] * f ** (1 / 3)))]
            p = tmp / f"vol_{f}.nii.gz"
            make_volume(p, shape)
            r = _subprocess("project", p)
            rp = _subprocess("pipeline", p)
            rows.append({"fraction": f, "shape_kji": shape, "voxels": int(np.prod(shape)),
                         "vesselness_s": r["time_s"], "pipeline_s": rp["time_s"], "pipeline_peak_mb": rp["peak_mb"]})
            print(rows[-1], flush=True)
        results["scaling"] = rows
    print(json.dumps(results["ratios"], indent=1))
    print(f"numba first call (cold cache) {results['numba_cold']['first_call_s']:.1f} s, "
          f"with cache {results['numba_warm']['first_call_s']:.2f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
