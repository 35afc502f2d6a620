"""``neonatal-brain phantom`` and ``neonatal-brain phantom-cohort``."""
from __future__ import annotations

import argparse


def _modalities(text: str) -> tuple[str, ...]:
    mods = tuple(m.strip().lower() for m in text.split(",") if m.strip())
    if not mods or any(m not in ("t1", "swi") for m in mods):
        raise argparse.ArgumentTypeError(f"{text!r}: expected t1, swi or t1,swi")
    return mods


def _run_phantom(args) -> int:
    from ..progress import tqdm_progress
    from . import InjurySpec, write_phantom

    injury = None
    if args.injury:
        injury = InjurySpec(kind=args.injury, strength=args.injury_strength, asymmetry=args.injury_asymmetry)
    progress, close = tqdm_progress("phantom")
    try:
        out = write_phantom(args.out, seed=args.seed, preset=args.preset, injury=injury,
                            modalities=args.modalities, progress=progress)
    finally:
        close()
    print(f"phantom written to {out}")
    return 0


def _run_cohort(args) -> int:
    from ..progress import tqdm_progress
    from . import write_cohort

    progress, close = tqdm_progress(f"cohort {args.center}")
    try:
        csv_path = write_cohort(args.out, args.n, center=args.center, seed=args.seed,
                                modalities=args.modalities, progress=progress, injury=args.injury)
    finally:
        close()
    print(f"cohort written: {csv_path}")
    return 0


def register(subparsers) -> None:
    from .presets import DEFAULT_PRESET, INJURY_KINDS, PRESETS

    p = subparsers.add_parser(
        "phantom", help="write one synthetic neonate (T1 + SWI + ground truth)",
        description="Generate the digital neonatal brain phantom into a new or empty folder: "
                    "t1/swi NIfTI with RAS affines, labels, masks, vessel truth (see docs/phantom.md).")
    p.add_argument("--out", required=True, help="output folder (new or empty)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS),
                   help=f"subject/acquisition preset (default {DEFAULT_PRESET})")
    p.add_argument("--injury", choices=INJURY_KINDS, default=None, help="T1 injury pattern (default none)")
    p.add_argument("--injury-strength", type=float, default=1.0, help="injury strength 0..1 (default 1)")
    p.add_argument("--injury-asymmetry", type=float, default=0.0, help="injury asymmetry 0..1 (default 0)")
    p.add_argument("--modalities", type=_modalities, default=("t1", "swi"), help="t1,swi (default both)")
    p.set_defaults(func=_run_phantom)

    c = subparsers.add_parser(
        "phantom-cohort", help="write a synthetic cohort of one centre (cohort.csv + subject folders)",
        description="Generate N synthetic neonates of one centre (A or B: different scanners), about half "
                    "with T1 injury, with clinical variables, into a new or empty folder.")
    c.add_argument("--out", required=True, help="output folder (new or empty)")
    c.add_argument("--n", type=int, required=True, help="number of subjects")
    c.add_argument("--center", choices=("A", "B"), default="A", help="centre / scanner (default A)")
    c.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    c.add_argument("--modalities", type=_modalities, default=("t1", "swi"), help="t1,swi (default both)")
    c.add_argument("--injury", choices=("bilirubin", "hie", "mixed"), default="bilirubin",
                   help="injury kind of the injured half (default bilirubin)")
    c.set_defaults(func=_run_cohort)
