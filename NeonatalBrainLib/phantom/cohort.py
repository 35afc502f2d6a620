"""Synthetic multi-centre cohorts for the classifier (``neonatal-brain phantom-cohort``)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .. import outputs
from ..anatomy import write_label_table
from ..imageio import InputError
from ..progress import as_progress
from .generator import _write_into, generate_phantom
from .presets import PRESETS, InjurySpec, Preset, with_changes

COHORT_INJURIES = ("bilirubin", "hie", "mixed")


def centre_preset(center: str) -> Preset:
    """Scanner differences between centres.

    * A: 3 T, T1 0.9 mm isotropic (RAS), SNR 30, mild bias, scale 1000.
    * B: 1.5 T-like, T1 1.0 x 1.0 x 1.2 mm stored LPS, SNR 18, strong bias, lower
      grey/white contrast (TR/TI-like change), 12-bit-like scaling (x 2.9);
      SWI 0.6 x 0.6 x 2.4 mm.
    """
    base = PRESETS["term_3t"]
    if center == "A":
        return with_changes(base, name="center_A")
    if center == "B":
        return with_changes(base, name="center_B", field_strength_t=1.5, t1_spacing_mm=(1.0, 1.0, 1.2),
                            t1_orientation="LPS", t1_snr=18.0, t1_contrast=0.8, t1_scale=2900.0,
                            bias_amplitude=0.25, swi_spacing_mm=(0.6, 0.6, 2.4), swi_snr=14.0,
                            swi_scale=400.0)
    raise InputError(f"center {center!r}: expected A or B")


def draw_subjects(n: int, seed: int, injury: str = "bilirubin", center: str = "A"):
    """Labels, injury specs and clinical variables of ``n`` subjects.

    Half injured (``ceil(n/2)``, random order).  Centre B draws other subjects (labels,
    clinical variables, anatomy seeds) than centre A for the same ``seed``.  Clinical variables with a weak
    association: injured infants are on average 0.5 weeks younger and 250 g lighter
    (birthweight SD ~ 430 g) and more often male (58 % vs 48 %).
    """
    if injury not in COHORT_INJURIES:
        raise InputError(f"cohort injury {injury!r}: expected one of {', '.join(COHORT_INJURIES)}")
    # centre B draws other subjects than centre A for the same seed (no shared anatomy)
    centre_key = [] if center == "A" else [ord(c) for c in center]
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 777, *centre_key]))
    labels = np.zeros(n, int)
    labels[: (n + 1) // 2] = 1
    rng.shuffle(labels)
    rows = []
    for i, lab in enumerate(labels):
        ga = float(np.clip(rng.normal(39.3 - 0.5 * lab, 1.3), 36.0, 42.0))
        bw = float(np.clip(rng.normal(3350 + 170 * (ga - 39.3) - 250 * lab, 430), 1900, 5000))
        sex = "M" if rng.random() < (0.58 if lab else 0.48) else "F"
        spec = None
        if lab:
            kind = injury if injury != "mixed" else ("bilirubin" if rng.random() < 0.5 else "hie")
            asym = 0.0 if rng.random() < 0.6 else float(rng.uniform(0.2, 0.7))
            spec = InjurySpec(kind=kind, strength=float(rng.uniform(0.35, 1.0)), asymmetry=asym)
        else:
            rng.random(), rng.random(), rng.random()
        rows.append({"label": int(lab), "gestational_age_weeks": round(ga, 1), "birthweight_g": int(round(bw)),
                     "sex": sex, "injury": spec,
                     "seed": int(seed) * 100003 + i + (0 if center == "A" else 50_000 * sum(centre_key))})
    return rows


def write_cohort(out_dir, n: int, center: str = "A", seed: int = 0, modalities=("t1", "swi"),
                 progress=None, injury: str = "bilirubin") -> Path:
    """Write ``n`` subjects and ``cohort.csv`` into the new/empty ``out_dir``; returns cohort.csv's path."""
    if int(n) < 1:
        raise InputError(f"cohort size n={n}: must be >= 1")
    pr = centre_preset(center)
    prog = as_progress(progress)
    subjects = draw_subjects(int(n), seed, injury, center)
    out = Path(out_dir)
    with outputs.staged_output(out) as stage:
        rows = []
        for i, s in enumerate(subjects):
            sid = f"{center}{int(seed):03d}_{i:03d}"
            prog.update(i / len(subjects), sid)
            ph = generate_phantom(s["seed"], pr, s["injury"], modalities)
            ph.subject.update({"subject_id": sid, "center": center, "label": s["label"],
                               "gestational_age_weeks": s["gestational_age_weeks"],
                               "birthweight_g": s["birthweight_g"], "sex": s["sex"]})
            folder = stage / sid
            folder.mkdir()
            _write_into(folder, ph)
            rows.append({"subject_id": sid, "t1": f"{sid}/t1.nii.gz" if ph.t1 is not None else "",
                         "swi": f"{sid}/swi.nii.gz" if ph.swi is not None else "", "label": s["label"],
                         "center": center, "birthweight_g": s["birthweight_g"],
                         "gestational_age_weeks": s["gestational_age_weeks"], "sex": s["sex"]})
        with open(stage / "cohort.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        write_label_table(stage / "labels.csv")
    prog.update(1.0, "done")
    return out / "cohort.csv"
