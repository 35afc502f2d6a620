"""Parameters of the NeonatalVessels engine (:class:`VesselParams`), read from and written to JSON
(``--params FILE.json``, ``summary.json``'s ``provenance.parameters``) with every value checked."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from NeonatalBrainLib.imageio import InputError

from .regions import RegionRules


@dataclass
class VesselParams:
    """Parameters of the vessel engine (units in the names; defaults suit neonatal SWI at 1.5-3 T)."""

    scales_mm: tuple[float, ...] = (0.35, 0.55, 0.8)   #: Gaussian sigmas (mm) of the vesselness
    frangi_alpha: float = 0.5          #: plate-vs-line sensitivity (Frangi alpha)
    frangi_beta: float = 0.5           #: blob sensitivity (Frangi beta)
    frangi_c: float = 0.08             #: structureness scale, fraction of the tissue signal
    threshold_high: float = 0.10       #: vesselness that seeds a vessel (0..1)
    threshold_low: float = 0.03        #: vesselness down to which a seeded vessel grows (0..1)
    max_relative_intensity: float = 0.95  #: vessel voxels are darker than this fraction of tissue
    min_local_contrast: float = 0.055  #: vessel voxels are darker than their local background by this (fraction of tissue) ...
    #: ... and by at least this x the noise SD of the image the local contrast is measured on (the
    #: image noise SD x :func:`.masks.smoothed_noise_factor`: 0.34 on 0.6 x 0.6 x 2 mm voxels, where
    #: this is 1.2 x the image noise SD; 0.20 on 0.6 mm isotropic ones, 0.7 x), see :func:`.segmentation.contrast_gate`
    local_contrast_noise_factor: float = 3.5
    local_background_mm: float = 3.0   #: width (mm) of the box closing that estimates the local background
    contrast_smoothing_mm: float = 0.5  #: Gaussian sigma (mm) of the image the local contrast is measured on
    min_component_mm3: float = 1.0     #: smaller connected components are noise
    min_component_extent_mm: float = 1.5  #: components whose bounding-box diagonal (mm) is shorter are noise
    surface_margin_mm: float = 3.0     #: vesselness only deeper than this inside the brain
    min_spur_mm: float = 1.5           #: skeleton side branches shorter than this are pruned
    min_vessel_length_mm: float = 1.0  #: shorter skeleton paths are merged into their neighbour
    #: a vessel continues through a junction when the bend there is at most this (deg); None: split at
    #: every junction (default: tracing through junctions joined DMVs to noise and lowered sensitivity)
    junction_angle_deg: float | None = None
    #: thalamic, anterior caudate and internal cerebral veins are at least this long (mm); a DMV's
    #: minimum length is the region rule ``rules.min_dmv_length_mm``
    min_named_vein_length_mm: float = 5.0
    min_vessel_keep_mm: float = 2.0    #: vessels shorter than this after joining are dropped as noise
    min_dmv_darkness: float = 0.08     #: a DMV's centreline is on average this much darker than tissue ...
    dmv_darkness_noise_factor: float = 1.2  #: ... and at least this x the image noise SD (noisy scans: stricter)
    #: ... except a DMV at least faint_dmv_min_length_mm long running radially (radial >=
    #: faint_dmv_min_radial), which needs this x the noise SD (0: off)
    faint_dmv_darkness_noise_factor: float = 0.7
    faint_dmv_min_length_mm: float = 8.0
    faint_dmv_min_radial: float = 0.75
    merge_gap_mm: float = 2.0          #: collinear pieces with end gaps up to this are joined (0: off)
    merge_angle_deg: float = 20.0      #: max angle between the joined pieces' end directions
    merge_gap_angle_deg: float = 20.0  #: max angle between each end direction and the gap vector
    merge_min_darkness: float = 0.12   #: only pieces this much darker than tissue (centreline mean) are joined
    merge_gap_darkness: float = 0.06   #: ... and only across gaps at least this dark (mean along the gap)
    merge_max_tortuosity_gain: float = 0.05  #: a join must not raise tortuosity (arc/chord) by more than this over its parts
    dmv_join_gap_mm: float = 2.5       #: pieces that are each a DMV, ends this close (mm) and collinear, are one DMV (0: off)
    dmv_join_angle_deg: float = 35.0   #: ... when their end directions agree within this angle
    dmv_join_gap_angle_deg: float = 65.0  #: ... and the gap within this one of both (a sideways jog: the next slice)
    #: thick slices (largest voxel >= 1.5 x the smallest): the through-slice component of the joins' end
    #: directions and gaps is scaled by this (a vein crossing slices is a staircase: its voxel path jogs)
    merge_slice_weight: float = 0.25
    centreline_smoothing_mm: float = 0.6  #: Gaussian sigma (arc length, mm) smoothing the centreline
    centreline_smoothing_voxels: float = 0.75  #: ... at least this x the largest voxel size (slice staircase)
    centreline_slice_smoothing_voxels: float = 1.5  #: thick slices: sigma along the slice normal, x slice thickness
    #: a DMV's fitted width is at most this (mm): wider dark structures are not DMVs ...
    max_dmv_width_mm: float = 2.4
    #: ... and in automatic runs a DMV fitted wider than wide_dmv_mm needs the scorer's probability
    #: (:mod:`.dmvscore`) >= wide_dmv_min_probability: an engorged DMV is a clear radial dark line,
    #: while the broad dark bands fitted that wide on noisy scans are not (round 31: on 1.2-2.2 mm DMVs
    #: the 1.9 mm limit alone lost 0.14-0.20 of them; 2.4 mm alone cost 0.02 of the PPV held out).
    #: With the scorer's veto off (dmv_min_probability = 0) the scorer judges no line: 2.4 mm alone
    wide_dmv_mm: float = 1.9
    wide_dmv_min_probability: float = 0.4
    #: a DMV whose width fit is resolved has at least this x the scan's vein contrast (fainter: a
    #: wide faint dark band fitted through noise, not a vein); 0: off
    min_dmv_relative_contrast: float = 0.4
    #: ... or (when lower) long_dmv_relative_contrast x for a DMV of >= long_dmv_mm: a thin vein in
    #: thick slices fits wider and fainter than it is (0.24-0.39 x for 0.6-0.8 mm DMVs in 2 mm
    #: slices), and a faint line passing the DMV rules over 10 mm is rarely noise (round 11: of the
    #: resolved DMV fits below 0.4 x on 25 cases of both phantoms, the 54 false ones had a median
    #: length of 6.1 mm, 3 >= 10 mm, 2 of them >= 0.25 x; 9 of the 31 true ones were >= 10 mm)
    long_dmv_mm: float = 10.0
    long_dmv_relative_contrast: float = 0.25
    #: a resolved width fit fainter than this x the scan's vein contrast is measured by its dark area,
    #: as an unresolved one (:func:`.measure.finalize_widths`); 0: off
    faint_fit_relative_contrast: float = 0.6
    #: veins of these regions lie against the ventricle between structures of different signal (the
    #: thalamostriate vein in the caudothalamic groove, the anterior caudate veins over the caudate
    #: head): their width fits leave the ventricle's pixels out and remove a background plane
    #: (:func:`measure.fit_width` ``exclude``, ``detrend``)
    wall_fit_regions: tuple[str, ...] = ("thalamic", "anterior_caudate")
    max_wall_vein_width_mm: float = 2.2  #: wider (or fit at its search limit) wall pieces are not thalamic / anterior caudate veins
    #: anterior caudate veins are small tributaries of the thalamostriate vein: wider pieces over the
    #: caudate head are its edge or the thalamostriate vein (45 phantoms: every reported one wider than
    #: this measured 1.55-2.19 mm against true 0.81-0.93 mm)
    max_anterior_caudate_width_mm: float = 1.5
    #: a thalamic / anterior caudate vein is darker than the darker side of its surroundings by at
    #: least this (fraction of tissue; :func:`.measure.flank_contrast`: lower quartile of a ring of
    #: 1.5 mm in the normal plane, median along the line): a line along the edge of the caudate or
    #: thalamus has the darker grey matter on one side (~0); 0: off
    min_wall_vein_flank_contrast: float = 0.06
    wall_vein_flank_radius_mm: float = 1.5  #: radius of that ring: this or the fitted diameter, whichever is larger
    centreline_step_mm: float = 0.25   #: centreline point spacing (mm)
    #: further Gaussian smoothing (sigma along the arc, mm) of the centreline for the tortuosity and the
    #: curvature (not the length): the voxel-scale wiggle of a traced centreline read straight DMVs too
    #: tortuous (the name is kept for saved parameter files)
    curvature_smoothing_mm: float = 1.0
    #: centrelines are cut where they turn more than this (deg) over +-bend_span_mm (None: off)
    max_bend_deg: float | None = 60.0
    bend_span_mm: float = 3.0
    trim_hooks: bool = True            #: cut hooked ends off DMV centrelines (:func:`measure.trim_end_hooks`) ...
    hook_angle_deg: float = 30.0       #: ... bending more than this within hook_length_mm of the end
    hook_length_mm: float = 4.0
    width_patch_mm: float = 2.0        #: half-size of the cross-section sampled for the width fit
    #: sigma (mm) of the scanner's point-spread beyond the voxel (box + interpolation), a Gaussian in
    #: the width fit; None: estimated from the ventricle walls (:mod:`.psf`; 0 when too few walls)
    psf_extra_sigma_mm: float | None = None
    width_cross_section_average: str = "median"  #: cross-sections combined pixel-wise by "median" or "mean"
    default_vein_contrast: float = 0.6  #: relative vein contrast when no vein is resolved
    vein_contrast_quantile: float = 0.8  #: quantile of the resolved veins' contrasts taken as the scan's vein contrast
    #: ... of the resolved fits at most this wide (mm), where at least 3 are (``measure.subject_contrast``):
    #: broad faint dark bands of the anatomy outnumbered the veins on an MNI152-based phantom (round 36)
    vein_contrast_max_diameter_mm: float = 2.0
    minip_slab_mm: float = 8.0         #: thickness of the minimum-intensity-projection slab (mm)
    #: automatic runs: pieces that the region rules would make DMVs but for their length are grown by
    #: minimum-intensity tracking (:mod:`.tracking`), at most this far (mm) from each end; 0: off
    track_max_mm: float = 25.0
    track_search_mm: float = 0.75      #: radius (mm) of the disk searched one step ahead for the darkest point
    track_contrast_factor: float = 0.6  #: a track's reference contrast: this x the local-contrast gate ...
    track_max_drop_factor: float = 0.5  #: ... it stops when its running sum of (contrast - reference) falls this x the gate below its best
    #: a grown line counts only when it lies away from the cortex: its median depth below the brain
    #: surface is at least track_min_depth_mm, or its median tissue depth (as the DMV depth rule: the
    #: nearer of the brain surface and CSF outside the ventricles) at least track_min_tissue_depth_mm.
    #: Nearer the cortex, tracks follow the cortical ribbon and sulcal edges.  The tissue depth does
    #: not change when the input is skull-stripped (extracerebral CSF removed); the surface depth does
    track_min_depth_mm: float = 12.0
    track_min_tissue_depth_mm: float = 8.0
    #: automatic runs: the thalamic pieces of each side are joined into one thalamostriate vein by the
    #: least-cost path along the ventricle wall (:mod:`.wallveins`; cost = clip(norm, 0.05, 2) ** this
    #: per mm, in the band within ``rules.wall_mm`` of the ventricles); 0: off
    wall_path_cost_power: float = 4.0
    #: automatic runs: a DMV whose probability of being a vein (:mod:`.dmvscore`, a logistic model of
    #: 15 features of its centreline fitted on phantoms of two generators) is below this is reported as
    #: ``other``; 0: off (the probability is still reported)
    dmv_min_probability: float = 0.2
    #: a line the region rules make a DMV that only the darkness rule (min_dmv_darkness,
    #: dmv_darkness_noise_factor) refused, and tracking did not grow into a DMV, is fitted, judged by
    #: the DMV width and contrast rules and kept as a DMV when the scorer's probability is at least
    #: this (automatic runs with the veto on; 1: off).  In thick noisy slices a thin DMV's mean
    #: centreline darkness falls under the noise-scaled bar while the scorer, which also weighs its
    #: course, depth and flank contrast, is sure of it (benchmarks/README.md round 37)
    faint_dmv_rescue_probability: float = 0.6
    rules: RegionRules = field(default_factory=RegionRules)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, strict: bool = True) -> "VesselParams":
        """Parameters from :meth:`as_dict`'s form (``rules``: a mapping of :class:`RegionRules`
        fields, e.g. ``summary.json``'s ``provenance.parameters``); missing fields keep their defaults.

        Every value is checked against its field's kind (a finite number, a bool, a string, a
        list of numbers for ``scales_mm``, null where the field allows it) and a wrong one raises
        InputError naming the field.  ``strict`` (a file the user wrote): an unknown name raises
        InputError too; otherwise (settings stored by another version) it is ignored.
        """
        return _dataclass_from_dict(cls, data, strict=strict, where="parameters")


def checked_params(params: VesselParams | None) -> VesselParams:
    """``params`` (default: the defaults); InputError for values no run can use, before any work."""
    params = params or VesselParams()
    if params.psf_extra_sigma_mm is not None and not params.psf_extra_sigma_mm >= 0:
        raise InputError(f"psf_extra_sigma_mm: a sigma in mm, >= 0 (or None to estimate it), "
                         f"got {params.psf_extra_sigma_mm}")
    if not 0 <= params.dmv_min_probability < 1:
        raise InputError(f"dmv_min_probability: a probability in [0, 1), got {params.dmv_min_probability}")
    if not 0 < params.faint_dmv_rescue_probability <= 1:
        raise InputError(f"faint_dmv_rescue_probability: a probability in (0, 1], got {params.faint_dmv_rescue_probability}")
    if not 0 <= params.wide_dmv_min_probability < 1:
        raise InputError(f"wide_dmv_min_probability: a probability in [0, 1), got {params.wide_dmv_min_probability}")
    return params


def _dataclass_from_dict(cls, data, *, strict: bool, where: str):
    """An instance of the dataclass ``cls`` (defaults for missing fields) from a mapping; see
    :meth:`VesselParams.from_dict`.  ``where``: the name errors give (``parameters.rules``)."""
    if not isinstance(data, Mapping):
        raise InputError(f"{where}: expected an object of named settings, got {type(data).__name__}")
    defaults = cls()
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown and strict:
        import difflib

        hints = [f"{u} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(u, known, 1, 0.6)) else u
                 for u in unknown]
        raise InputError(f"{where}: unknown setting(s) {', '.join(hints)}; the settings are the fields of "
                         f"{cls.__name__} (docs/vessels.md)")
    changes = {}
    for name, value in data.items():
        if name not in known:
            continue
        current = getattr(defaults, name)
        if dataclasses.is_dataclass(current):
            changes[name] = _dataclass_from_dict(type(current), value, strict=strict, where=f"{where}.{name}")
        else:
            changes[name] = _setting_value(f"{where}.{name}", value, current, str(known[name].type))
    return dataclasses.replace(defaults, **changes)


def _setting_value(name: str, value, default, annotation: str):
    """``value`` checked against the kind of the field's ``default`` (and ``annotation``, for
    fields that may be None); tuples from lists.  InputError names ``name`` when it does not fit."""
    def number(v, what: str):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            raise InputError(f"{name}: expected {what}, got {v!r}")
        return v

    if value is None:
        if "None" in annotation:
            return None
        raise InputError(f"{name}: may not be null")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise InputError(f"{name}: expected true or false, got {value!r}")
        return value
    if isinstance(default, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise InputError(f"{name}: expected a list, got {value!r}")
        if "str" in annotation:
            if not all(isinstance(v, str) for v in value):
                raise InputError(f"{name}: expected a list of strings, got {value!r}")
            return tuple(value)
        return tuple(float(number(v, "a list of finite numbers")) for v in value)
    if isinstance(default, int) and "float" not in annotation:
        v = number(value, "a whole number")
        if int(v) != v:
            raise InputError(f"{name}: expected a whole number, got {value!r}")
        return int(v)
    if isinstance(default, float) or "float" in annotation:
        return float(number(value, "a finite number"))
    if isinstance(default, str):
        if not isinstance(value, str):
            raise InputError(f"{name}: expected a string, got {value!r}")
        return value
    return value
