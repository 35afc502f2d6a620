"""Deep dark blob volumes (mm^3) of the T1 check at several darkness levels, for any volumes.

Usage::

    .venv/bin/python benchmarks/t1_check_dark_levels.py OUT.csv VOLUME [VOLUME ...] [--levels 0.5 0.6 0.7]

For each volume the automatic vessel pipeline runs up to its T1 check, which measures
``pipeline.deep_dark_blobs_mm3`` (blobs of >= 100 mm^3 more than 15 mm inside the brain, or in the
middle of a field of view cropped inside the head, below ``level`` x the tissue signal after 1.5 mm
smoothing) with ``pipeline.T1_DARK_CSF_LEVEL`` and ``pipeline.CROPPED_DARK_CSF_LEVEL`` both set to
each level on the pipeline's own normalised image, brain mask and depth; the run then stops (no
vessels are segmented).  A T1 refused by the check needs > ``pipeline.T1_DARK_BLOBS_MM3`` at the
level in use; an SWI should have none.  Round 35 (benchmarks/README.md) ran it on 866 cached SWI
phantoms of both generators and 26 T1s (``t1_check_dark_levels_round35_*.csv``).
"""
from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor


class _Measured(Exception):
    """Stops the pipeline once the T1 check's blobs are measured."""


def dark_levels(path: str, levels: tuple[float, ...]) -> dict:
    """``{"path": path, "below_<level>_mm3": volume, ...}`` (or ``"error"``: the pipeline's refusal
    of the volume before the T1 check, e.g. bad input)."""
    import NeonatalVesselsLib.pipeline as pl
    from NeonatalBrainLib.imageio import InputError, load_volume

    measured: dict[str, float] = {}
    original_measure = pl.deep_dark_blobs_mm3
    original_levels = pl.T1_DARK_CSF_LEVEL, pl.CROPPED_DARK_CSF_LEVEL

    def measure(*args, **kwargs):
        for level in levels:
            pl.T1_DARK_CSF_LEVEL = pl.CROPPED_DARK_CSF_LEVEL = level
            measured[f"below_{level:g}_mm3"] = original_measure(*args, **kwargs)
        raise _Measured

    pl.deep_dark_blobs_mm3 = measure
    try:
        pl.run_vessel_analysis(load_volume(path))
    except _Measured:
        pass
    except InputError as err:
        return {"path": path, "error": str(err)}
    finally:
        pl.deep_dark_blobs_mm3 = original_measure
        pl.T1_DARK_CSF_LEVEL, pl.CROPPED_DARK_CSF_LEVEL = original_levels
    return {"path": path, **measured}


def main(argv=None) -> int:
    import pandas as pd

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("volumes", nargs="+")
    ap.add_argument("--levels", nargs="+", type=float, default=[0.5, 0.6, 0.65, 0.7, 0.75, 0.8])
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    levels = tuple(args.levels)
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(dark_levels, args.volumes, [levels] * len(args.volumes)))
    table = pd.DataFrame(rows)
    table.to_csv(args.out, index=False)
    print(table.drop(columns="path").describe().round(1).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
