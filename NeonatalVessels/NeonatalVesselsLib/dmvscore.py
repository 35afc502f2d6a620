"""How likely a centreline is a deep medullary vein: a logistic model over features of the line.

The region rules (:mod:`.regions`) and the darkness, width and contrast rules of the pipeline
each judge one property of a line against a threshold.  This model judges them together, and the
pipeline uses it as a veto: an automatic DMV whose probability is below
``VesselParams.dmv_min_probability`` is reported as ``other`` (``vessels.csv`` column
``dmv_probability``; ``provenance.dmv_scorer``).

Features of a centreline (RAS mm; ``norm`` the normalised SWI, tissue = 1; sampled trilinearly
at the centreline points):

* ``log_length``: natural log of the arc length (mm);
* ``tortuosity``: arc length / chord (>= 1; 1 for fewer than 2 distinct points);
* ``darkness``: 1 - mean ``norm`` along the line; ``darkness_z``: that / the image's noise SD;
* ``flank_1mm_z``, ``flank_1p5mm_z``, ``flank_2p5mm_z``: :func:`.measure.flank_contrast` (the
  darker quarter of a ring of that radius in the normal plane, minus the line; median along
  the line) / the noise SD; ``flank_1p5mm``: the 1.5 mm one in units of tissue signal;
* ``radial``: :func:`.regions.radial_course`, ``|vent_dist(end) - vent_dist(start)| / arc length``;
* ``vent_dist_min_mm``, ``vent_dist_median_mm``: distance to the ventricle surface;
* ``tissue_depth_median_mm``: median of the nearer of brain surface and CSF outside the ventricles;
* ``csf_dist_median_mm``: median distance to CSF outside the ventricles (the brain-surface depth
  when that map is absent);
* ``abs_dx_median_mm``: median distance to the midline plane;
* ``noise_sd``: noise SD of the normalised image (fraction of tissue signal).

The shipped model (``dmv_line_scorer.json``, beside this file) is fitted by
``benchmarks/train_dmv_scorer.py`` on the development seeds of both phantom generators (the
project's and ``benchmarks/independent_swi_phantom.py``); the file records the cases, the number
of lines and the scikit-learn version.  It has not seen real neonatal SWI: the veto is a
phantom-trained judgement, reported per vessel so that a reader can see it and a user can turn
it off (``dmv_min_probability = 0``).  Its L2 strength (C = 0.001) was chosen so that a model
fitted on one generator costs the other the least sensitivity: at C = 1, fitted on the
independent generator alone, it cost the project phantom 0.076 (benchmarks/README.md, rounds 26
and 27).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from NeonatalBrainLib import centerline as cl
from NeonatalBrainLib.imageio import InputError

from .measure import flank_contrasts, sample_along_lines
from .regions import head_coordinates, radial_course

#: The model's inputs, in order (definitions: module docstring).
FEATURES = ("log_length", "tortuosity", "darkness", "darkness_z", "flank_1mm_z", "flank_1p5mm_z",
            "flank_2p5mm_z", "flank_1p5mm", "radial", "vent_dist_min_mm", "vent_dist_median_mm",
            "tissue_depth_median_mm", "csf_dist_median_mm", "abs_dx_median_mm", "noise_sd")

#: Lines judged besides the DMVs (the population the model is fitted on): at least this long,
#: this far from the midline and this deep in tissue (medians), starting within this of the
#: ventricle surface.  Every DMV of the default region rules lies within these bounds.
CANDIDATE_MIN_LENGTH_MM = 3.0
CANDIDATE_MIN_ABS_DX_MM = 3.0
CANDIDATE_MIN_TISSUE_DEPTH_MM = 2.0
CANDIDATE_MAX_VENT_DIST_MM = 14.0

SCORER_PATH = Path(__file__).with_name("dmv_line_scorer.json")


def line_features(lines: dict[int, np.ndarray], *, norm: np.ndarray, inv_affine: np.ndarray,
                  vent_dist_mm: np.ndarray, depth_mm: np.ndarray, csf_dist_mm: np.ndarray | None,
                  midline_x: float, noise_sd: float, to_head: np.ndarray | None = None) -> pd.DataFrame:
    """One row per line of at least 2 points (index: line id), the columns :data:`FEATURES`
    (``to_head``: RAS mm -> the head's frame, in which ``midline_x`` is given; None: RAS)."""
    lines = {vid: np.asarray(p, float) for vid, p in lines.items() if len(p) >= 2}
    intensity = sample_along_lines({"norm": norm}, inv_affine, lines)["norm"]
    distances = _distance_samples(lines, inv_affine, vent_dist_mm, depth_mm, csf_dist_mm)
    flanks = flank_contrasts(norm, inv_affine, lines, (1.0, 1.5, 2.5))
    noise = max(float(noise_sd), 1e-6)
    rows = {}
    for vid, p in lines.items():
        length = cl.arc_length_mm(p)
        vd, tissue_depth, csf = distances[vid]
        tort = cl.tortuosity(p)
        darkness = 1.0 - float(np.mean(intensity[vid]))
        flank = {r: flanks[r][vid] for r in (1.0, 1.5, 2.5)}
        rows[vid] = (np.log(max(length, 1e-3)), tort if np.isfinite(tort) else 1.0, darkness, darkness / noise,
                     flank[1.0] / noise, flank[1.5] / noise, flank[2.5] / noise, flank[1.5],
                     radial_course(vd, length), float(vd.min()), float(np.median(vd)),
                     float(np.median(tissue_depth)), float(np.median(csf)),
                     float(np.median(np.abs(head_coordinates(p, to_head)[:, 0] - midline_x))), float(noise_sd))
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(FEATURES))


def _distance_samples(lines: dict[int, np.ndarray], inv_affine: np.ndarray, vent_dist_mm: np.ndarray,
                      depth_mm: np.ndarray, csf_dist_mm: np.ndarray | None
                      ) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``{id: (ventricle distance, tissue depth, CSF distance)}`` at each line's points (mm); the
    tissue depth is the nearer of brain surface and CSF, the CSF distance the surface depth
    when there is no CSF map."""
    fields = {"vd": vent_dist_mm, "dp": depth_mm}
    if csf_dist_mm is not None:
        fields["csf"] = csf_dist_mm
    s = sample_along_lines(fields, inv_affine, lines)
    out = {}
    for vid in lines:
        dp = s["dp"][vid]
        csf = s["csf"][vid] if "csf" in s else dp
        out[vid] = (s["vd"][vid], np.minimum(dp, csf), csf)
    return out


def candidate_ids(lines: dict[int, np.ndarray], *, inv_affine: np.ndarray, vent_dist_mm: np.ndarray,
                  depth_mm: np.ndarray, csf_dist_mm: np.ndarray | None, midline_x: float,
                  to_head: np.ndarray | None = None) -> list[int]:
    """Ids of the lines within the candidate bounds (:data:`CANDIDATE_MIN_LENGTH_MM` ...), judged
    on the same samples as :func:`line_features` (without its costlier features)."""
    lines = {vid: np.asarray(p, float) for vid, p in lines.items()
             if len(p) >= 2 and cl.arc_length_mm(p) >= CANDIDATE_MIN_LENGTH_MM}
    distances = _distance_samples(lines, inv_affine, vent_dist_mm, depth_mm, csf_dist_mm)
    return [vid for vid, p in lines.items()
            if np.median(np.abs(head_coordinates(p, to_head)[:, 0] - midline_x)) >= CANDIDATE_MIN_ABS_DX_MM
            and np.median(distances[vid][1]) >= CANDIDATE_MIN_TISSUE_DEPTH_MM
            and distances[vid][0].min() <= CANDIDATE_MAX_VENT_DIST_MM]


@dataclass(frozen=True)
class LineScorer:
    """Logistic model: p = 1 / (1 + exp(-(intercept + sum coef_k (x_k - mean_k) / scale_k)))."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    sha256: str

    def probability(self, features: pd.DataFrame) -> np.ndarray:
        x = features[list(FEATURES)].to_numpy(float)
        z = self.intercept + ((x - self.mean) / self.scale) @ self.coef
        return 1.0 / (1.0 + np.exp(-z))


@lru_cache(maxsize=4)
def load_scorer(path: str | Path = SCORER_PATH) -> LineScorer:
    """The model of a ``dmv_line_scorer.json`` (InputError when missing, corrupt or for other features)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        card = json.loads(raw)
        names = tuple(card["features"])
        arrays = [np.asarray(card[k], float) for k in ("mean", "scale", "coef")]
        intercept = float(card["intercept"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"DMV line scorer {path}: cannot be read ({e})") from e
    if names != FEATURES or any(a.shape != (len(FEATURES),) for a in arrays) or not all(
            np.all(np.isfinite(a)) for a in arrays) or np.any(arrays[1] <= 0):
        raise InputError(f"DMV line scorer {path}: its features or coefficients do not fit this version "
                         f"(expected {len(FEATURES)} finite values for {', '.join(FEATURES)})")
    return LineScorer(*arrays, intercept=intercept, sha256=hashlib.sha256(raw).hexdigest())
