"""Region and side of each vessel, from its centreline, the ventricles and the midline plane.

Geometric features (all in mm, RAS; ``dx`` = x minus the midline plane):

* ``vent_dist``: distance of each centreline point to the ventricle surface
  (anisotropic EDT outside the ventricle mask);
* ``radial``: ``|vent_dist(end) - vent_dist(start)| / arc length`` -- 1 for a vein
  running straight away from the ventricle wall, 0 for one running along it;
* ``depth``: distance to the brain surface.

Rules, applied in order (first match wins):

1. ``other`` -- superficial (median depth < ``superficial_mm``; cortical veins,
   sinuses) or on the midline (median ``|dx|`` < ``midline_mm``, e.g. vein of
   Galen / straight sinus).
2. ``internal_cerebral`` -- paramedian (median ``|dx|`` < ``paramedian_mm``) and
   running antero-posteriorly (|direction_y| > 0.7), above/behind the foramen.
3. ``dmv`` -- in periventricular white matter running roughly radially from the
   ventricle wall: ``radial >= min_radial``, nearest point within
   ``dmv_start_mm`` of the ventricle surface, length >= ``min_dmv_length_mm``, and
   (when ``csf_dist_mm``, the distance to CSF other than the ventricles, is given)
   median distance to that CSF >= ``dmv_csf_clearance_mm``: a dark line along a
   sulcus is the cortex of its fundus, not a medullary vein; and median ``|dx|`` >=
   ``dmv_midline_mm``: DMVs drain the hemispheric white matter from the lateral
   ventricles outward, whereas within a few mm of the midline lie the falx, the
   interhemispheric fissure and the septal region, whose dark edges run radially from
   the ventricles' medial walls (1.8 % of the project phantom's true DMVs and 2.8 % of
   the independent phantom's lie nearer the midline than 6 mm; about half of the false
   DMVs on the independent phantom did) -- or, between ``dmv_near_midline_mm`` and that,
   the line starts within ``dmv_near_midline_start_mm`` of the ventricle surface, runs
   radially (``dmv_near_midline_min_radial``) and keeps ``dmv_near_midline_clear_mm`` from
   the midline (a vein rising from the roof of a ventricle that lies near the midline);
   and median tissue depth (distance to the brain surface or to CSF outside the
   ventricles, whichever is nearer) >= ``dmv_min_depth_mm``:
   the deep medullary veins drain the deep white matter, whereas a dark line within a few
   mm of the surface is the cortex of a fold or a superficial medullary vein (without these
   two rules, on 22 cases of both phantoms, 2 of the 858 true DMVs found, 270 of them
   preterm, lay at a median tissue depth < 5 mm, 23 of the 87 false ones did).  The nearer
   of surface and CSF makes the rule independent of whether the brain mask holds the
   extracerebral CSF: in a skull-stripped input, or with a given brain mask without that
   CSF, true DMVs lie from 4.4 mm below the mask's surface, and a rule on that depth alone
   (8 mm) lost 0.08-0.14 of the sensitivity; and median distance to the ventricle surface
   >= ``dmv_min_vent_dist_mm``: a dark line whose middle lies in the subependymal layer is
   a subependymal or thalamostriate vein or the choroid plexus, with at most its end a DMV
   (those true DMVs: >= 2.89 mm; 11 false ones along the wall at 1.85-2.49 mm).
4. ``thalamic`` / ``anterior_caudate`` -- hugging the ventricle wall (median
   ``vent_dist`` < ``wall_mm``; radial pieces long enough are DMVs by rule 3):
   ``anterior_caudate`` when its centroid lies anterior to the foramen of Monro
   (:func:`foramen_y_mm`; over the caudate head, frontal horn), ``thalamic``
   otherwise (thalamostriate vein: caudothalamic groove, running forward to the
   foramen).
5. ``other`` -- everything else.

When anatomical labels (``anatomy.LABELS``) are given, rule 4 uses them instead:
a wall vein is ``anterior_caudate`` when most of its points lie next to
(within 2 mm of) the caudate and in front of the thalamus, ``thalamic`` when next to
both caudate and thalamus (the caudothalamic groove).

Side: ``left`` when the median ``dx`` < -``side_mm``, ``right`` when > ``side_mm``,
else ``midline``; internal cerebral veins are reported as ``midline`` (the paired
veins run together in the velum interpositum).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from NeonatalBrainLib import anatomy, centerline as cl

from .measure import sample_along_lines


@dataclass
class RegionRules:
    superficial_mm: float = 3.0
    midline_mm: float = 1.0
    paramedian_mm: float = 4.0
    min_radial: float = 0.3
    dmv_start_mm: float = 12.0
    dmv_csf_clearance_mm: float = 4.0
    min_dmv_length_mm: float = 4.5
    dmv_midline_mm: float = 6.0
    #: ... except that a line at a median |dx| of at least dmv_near_midline_mm that starts within
    #: dmv_near_midline_start_mm of the ventricle surface, runs radially (radial >=
    #: dmv_near_midline_min_radial) and keeps dmv_near_midline_clear_mm from the midline is a
    #: DMV (None: off)
    dmv_near_midline_mm: float | None = 4.0
    dmv_near_midline_start_mm: float = 5.0
    dmv_near_midline_min_radial: float = 0.85
    dmv_near_midline_clear_mm: float = 2.0
    dmv_min_depth_mm: float = 5.0       #: DMV median distance to the brain surface or CSF outside the ventricles (mm), at least
    dmv_min_vent_dist_mm: float = 2.5   #: DMV median distance to the ventricle surface (mm), at least
    wall_mm: float = 3.5
    foramen_fraction: float = 0.65
    side_mm: float = 1.0


def _median(values: np.ndarray):
    """``np.median`` of a 1-D array, same value and dtype (the middle value of the sorted
    array, or the mean of the two middle ones), without its generic overhead."""
    s = np.sort(values)
    n = len(s)
    if n == 0 or s[-1] != s[-1]:      # empty, or NaN (sorted last): numpy's own answer
        return np.median(values)
    m = n // 2
    return s[m] if n % 2 else (s[m - 1] + s[m]) / 2


def radial_course(vent_dist_mm: np.ndarray, length_mm: float) -> float:
    """``radial``: |ventricle distance at the end - at the start| / arc length (1 for a line running
    straight away from the ventricle wall, 0 for one along it); ``vent_dist_mm`` sampled along the line."""
    return abs(float(vent_dist_mm[-1] - vent_dist_mm[0])) / max(length_mm, 1e-9)


def head_coordinates(points: np.ndarray, to_head: np.ndarray | None) -> np.ndarray:
    """RAS mm ``points`` (N, 3) in the head's frame (``to_head``, 4 x 4: :func:`.masks.head_frame`;
    None: RAS, the points themselves)."""
    return points if to_head is None else points @ to_head[:3, :3].T + to_head[:3, 3]


def classify_vessels(centrelines: dict[int, np.ndarray], affine: np.ndarray, *, vent_dist_mm: np.ndarray,
                     depth_mm: np.ndarray, midline_x: float, foramen_y_mm: float | None,
                     labels: np.ndarray | None = None, rules: RegionRules | None = None,
                     csf_dist_mm: np.ndarray | None = None,
                     dmv_but_short: set[int] | None = None,
                     median_depths: dict[int, tuple[float, float]] | None = None,
                     radial_out: dict[int, float] | None = None,
                     to_head: np.ndarray | None = None) -> dict[int, tuple[str, str]]:
    """vessel id -> (region, side) by the rules of the module docstring.

    ``dmv_but_short``: when given, receives the ids of the vessels that pass every DMV rule
    but ``rules.min_dmv_length_mm`` (those a DMV length of 0 would make DMVs).
    ``median_depths``: when given, receives for every vessel judged by the DMV rules (every
    ``dmv``) its median depth below the brain surface and median tissue depth (mm).
    ``radial_out``: when given, receives every such vessel's ``radial``.
    ``to_head``: RAS mm -> the head's frame (:func:`.masks.head_frame`), in which ``midline_x`` and
    ``foramen_y_mm`` are given and the side, the midline rules and the A-P course are read; None: RAS.
    """
    rules = rules or RegionRules()
    inv = np.linalg.inv(affine)
    out: dict[int, tuple[str, str]] = {}
    fields = {"vd": vent_dist_mm, "dp": depth_mm}
    if csf_dist_mm is not None:
        fields["csf"] = csf_dist_mm
    if labels is not None:
        lab = np.asarray(labels).astype(np.int32)
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        size = np.maximum(1, np.round(2.0 / spacing).astype(int)) * 2 + 1
        for struct in ("caudate", "thalamus"):    # within ~2 mm of the structure: 1, else 0
            vals = [anatomy.LABEL_VALUES[f"{struct}_{s}"] for s in ("left", "right")]
            fields[struct] = ndimage.maximum_filter(np.isin(lab, vals).astype(np.uint8),
                                                    size=tuple(size)).astype(np.float32)
    lines = {vid: np.asarray(pts, float) for vid, pts in centrelines.items()}
    samples = sample_along_lines(fields, inv, {vid: pts for vid, pts in lines.items() if len(pts) >= 2})
    for vid, pts in lines.items():
        head = head_coordinates(pts, to_head)
        dx = head[:, 0] - midline_x
        med_dx = float(_median(dx))
        side = "left" if med_dx < -rules.side_mm else ("right" if med_dx > rules.side_mm else "midline")
        if len(pts) < 2:
            out[vid] = ("other", side)
            continue
        length = cl.arc_length_mm(pts)
        vd = samples["vd"][vid]
        dp = samples["dp"][vid]
        chord = head[-1] - head[0]
        direction = chord / max(np.linalg.norm(chord), 1e-9)
        radial = radial_course(vd, length)
        if _median(dp) < rules.superficial_mm or abs(med_dx) < rules.midline_mm:
            region = "other"
        elif abs(med_dx) < rules.paramedian_mm and abs(direction[1]) > 0.7:
            region = "internal_cerebral"
            side = "midline"
        else:
            csf = None if csf_dist_mm is None else samples["csf"][vid]
            tissue_depth = dp if csf is None else np.minimum(dp, csf)   # nearer of brain surface and CSF
            if median_depths is not None:
                median_depths[vid] = (float(_median(dp)), float(_median(tissue_depth)))
            if radial_out is not None:
                radial_out[vid] = radial
            near_midline_dmv = (rules.dmv_near_midline_mm is not None and abs(med_dx) >= rules.dmv_near_midline_mm
                                and vd.min() <= rules.dmv_near_midline_start_mm
                                and radial >= rules.dmv_near_midline_min_radial
                                and float(np.abs(dx).min()) >= rules.dmv_near_midline_clear_mm)
            dmv_like = (radial >= rules.min_radial and vd.min() <= rules.dmv_start_mm
                        and (abs(med_dx) >= rules.dmv_midline_mm or near_midline_dmv)
                        and _median(tissue_depth) >= rules.dmv_min_depth_mm
                        and _median(vd) >= rules.dmv_min_vent_dist_mm
                        and (csf is None or _median(csf) >= rules.dmv_csf_clearance_mm))
            long_enough = length >= rules.min_dmv_length_mm
            if dmv_like and not long_enough and dmv_but_short is not None:
                dmv_but_short.add(vid)
            if dmv_like and long_enough:
                region = "dmv"
            elif _median(vd) < rules.wall_mm:
                if labels is not None:
                    near_c = float(np.mean(samples["caudate"][vid] > 0.5))
                    near_t = float(np.mean(samples["thalamus"][vid] > 0.5))
                    region = "thalamic" if near_t >= 0.3 and near_c >= 0.3 else (
                        "anterior_caudate" if near_c >= 0.5 else "other")
                else:
                    yf = 0.0 if foramen_y_mm is None else float(foramen_y_mm)
                    region = "anterior_caudate" if float(np.mean(head[:, 1])) > yf else "thalamic"
            else:
                region = "other"
        out[vid] = (region, side)
    return out


def foramen_y_mm(ventricle_y_mm: np.ndarray, fraction: float = 0.65) -> float | None:
    """Antero-posterior position (RAS y, mm) of the foramen of Monro estimated from the ventricles.

    ``ventricle_y_mm``: y of every ventricle voxel.  The foramen is put at ``fraction``
    of the ventricles' antero-posterior extent (0.5th to 99.5th percentile of y,
    robust to stray voxels) counted from the back: the frontal horns, in front of
    the foramen, are about a third of the lateral ventricles' length.  Returns None
    without ventricle voxels.
    """
    y = np.asarray(ventricle_y_mm, float)
    if y.size == 0:
        return None
    lo, hi = np.quantile(y, [0.005, 0.995])
    return float(lo + fraction * (hi - lo))


def region_label_table() -> list[tuple[int, str, tuple[float, float, float]]]:
    """(value, name, rgb) of the region+side segments: value = 1 + 3 * region_index + side_index."""
    table = []
    for r, region in enumerate(anatomy.VESSEL_REGIONS):
        for s, side in enumerate(anatomy.VESSEL_SIDES):
            table.append((1 + 3 * r + s, f"{region}_{side}", anatomy.VESSEL_REGION_COLORS[region]))
    return table


def region_value(region: str, side: str) -> int:
    return 1 + 3 * anatomy.VESSEL_REGIONS.index(region) + anatomy.VESSEL_SIDES.index(side)
