"""``neonatal-brain demo``: the main job on the digital neonatal phantom.

Generates one term neonate (SWI + T1, seed 0) and its bilirubin-injured twin
(T1 only), runs the vessel pipeline on the SWI, the deep grey-matter ROIs,
classification and Grad-CAM on both T1s with the shipped demo model (trained on
synthetic data, not for clinical use), and writes an ``index.html`` linking
every result (the vessel report is ``vessels/report.html``).

The output folder must be new, empty, or a folder an earlier demo made (it
carries the marker file ``.neonatal-brain-demo``); only then is it replaced.
"""
from __future__ import annotations

import argparse
import html
import json
import shutil
import time
from pathlib import Path

from .outputs import OutputExistsError

DEMO_MARKER = ".neonatal-brain-demo"


def prepare_demo_dir(out: Path) -> Path:
    """Create ``out``; replace it only if it is empty or an earlier demo's output."""
    if out.exists():
        if not out.is_dir():
            raise OutputExistsError(f"{out} exists and is not a folder")
        if any(out.iterdir()):
            if not (out / DEMO_MARKER).is_file():
                raise OutputExistsError(
                    f"{out} is not empty and was not made by the demo; choose another --out")
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text("made by `neonatal-brain demo`; re-running the demo replaces this folder\n")
    return out


def _run_vessels(phantom_dir: Path, out: Path) -> dict:
    from NeonatalVesselsLib.pipeline import run_vessel_analysis, write_outputs
    from .imageio import load_volume

    swi_path = phantom_dir / "swi.nii.gz"
    analysis = run_vessel_analysis(load_volume(swi_path, "SWI"))
    write_outputs(analysis, out, input_path=swi_path)
    truth = json.loads((phantom_dir / "vessels.json").read_text())["summary"]
    return {"summary": analysis.summary, "truth": truth}


def _run_classify(phantom_dir: Path, out: Path) -> dict:
    from NeonatalClassifyLib.catalogue import demo_model_dir
    from NeonatalClassifyLib.inference import classify_t1, write_classification_outputs
    from NeonatalClassifyLib.roi import segment_deep_grey, write_roi_outputs
    from .imageio import load_volume

    t1 = load_volume(phantom_dir / "t1.nii.gz", "T1")
    rois = segment_deep_grey(t1)
    write_roi_outputs(rois, out / "roi")
    result = classify_t1(t1, demo_model_dir(), rois=rois)
    write_classification_outputs(result, t1, out / "classification")
    truth = json.loads((phantom_dir / "subject.json").read_text()).get("injury")
    return {"probability": result.probability, "predicted_label": result.predicted_label,
            "threshold": result.threshold, "model_id": result.model_id, "true_injury": truth}


def _write_index(out: Path, sections: dict) -> Path:
    rows = []
    for title, (folder, info) in sections.items():
        files = sorted(p.relative_to(out) for p in (out / folder).rglob("*") if p.is_file())
        links = "".join(f'<li><a href="{html.escape(str(f))}">{html.escape(str(f))}</a></li>' for f in files)
        pngs = "".join(f'<img src="{html.escape(str(f))}" style="max-width:48%;margin:4px">'
                       for f in files if f.suffix == ".png")
        report = out / folder / "report.html"
        if report.is_file():
            pngs = f'<p><a href="{folder}/report.html"><b>open the full report</b></a></p>' + pngs
        rows.append(f"<h2>{html.escape(title)}</h2><pre>{html.escape(json.dumps(info, indent=2, default=str))}</pre>"
                    f"{pngs}<details><summary>files</summary><ul>{links}</ul></details>")
    page = ("<!doctype html><meta charset='utf-8'><title>NeonatalBrain demo</title>"
            "<body style='font-family:sans-serif;max-width:1100px;margin:auto'>"
            "<h1>NeonatalBrain demo on the digital neonatal phantom</h1>"
            "<p>Synthetic data; the classifier is a demo model trained on synthetic phantoms, "
            "<b>not for clinical use</b>. Coordinates are RAS millimetres.</p>" + "".join(rows) + "</body>")
    path = out / "index.html"
    path.write_text(page)
    return path


def run_demo(out_dir: str | Path, seed: int = 0, preset: str = "term_3t") -> Path:
    from .phantom import InjurySpec, write_phantom
    from .phantom.figures import make_figures

    out = prepare_demo_dir(Path(out_dir))
    sections: dict = {}
    t0 = time.perf_counter()
    phantom_dir = write_phantom(out / "phantom", seed=seed, preset=preset)
    injured_dir = write_phantom(out / "phantom_injured", seed=seed, preset=preset,
                                injury=InjurySpec("bilirubin", strength=1.0), modalities=("t1",))
    (out / "figures").mkdir()
    make_figures(out / "figures", seed=seed, which=("swi", "t1", "injury"))
    sections["Phantom"] = ("figures", json.loads((phantom_dir / "subject.json").read_text()))
    print(f"phantoms (control + bilirubin-injured twin) written in {time.perf_counter() - t0:.1f} s: "
          f"{phantom_dir}, {injured_dir}")
    t0 = time.perf_counter()
    sections["Vessels (SWI)"] = ("vessels", _run_vessels(phantom_dir, out / "vessels"))
    print(f"vessel analysis in {time.perf_counter() - t0:.1f} s: {out / 'vessels' / 'report.html'}")
    t0 = time.perf_counter()
    sections["Classification (T1), control neonate"] = ("classify", _run_classify(phantom_dir, out / "classify"))
    sections["Classification (T1), injured twin"] = (
        "classify_injured", _run_classify(injured_dir, out / "classify_injured"))
    print(f"ROIs, classification and Grad-CAM (2 neonates) in {time.perf_counter() - t0:.1f} s: "
          f"{out / 'classify'}, {out / 'classify_injured'}")
    index = _write_index(out, sections)
    print(f"demo results: {index}")
    return index


def _command(args: argparse.Namespace) -> int:
    run_demo(args.out, seed=args.seed, preset=args.preset)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="run the whole product on the digital neonatal phantom",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (new, empty, or an earlier demo's)")
    p.add_argument("--seed", type=int, default=0, help="phantom seed (default 0)")
    p.add_argument("--preset", default="term_3t", help="phantom preset (default term_3t)")
    p.set_defaults(func=_command)
