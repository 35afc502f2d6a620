"""Definitions and units of the vessel engine's outputs, in one place.

Used for the column descriptions of the Slicer tables (:mod:`.mrml_logic`), the
definitions table of ``report.html`` (:mod:`.report`) and checked against the columns of
``vessels.csv`` / the keys of ``summary.json`` (:data:`.pipeline.VESSEL_COLUMNS`,
:data:`.pipeline.SUMMARY_KEYS`) by the tests.  The full text, with the methods'
validation, is ``docs/vessels.md``.  Coordinates are RAS millimetres (x = patient's
right, y = anterior, z = superior); sides are the patient's.
"""
from __future__ import annotations

#: Per-vessel columns (vessels.csv, the Slicer vessel table): definition (unit).
VESSEL_COLUMN_DEFINITIONS: dict[str, str] = {
    "vessel_id": "vessel id (same id in the vessel-id labelmap and the centreline curve names)",
    "region": "vessel region: dmv | thalamic | anterior_caudate | internal_cerebral | other",
    "side": "patient's side: left | right | midline (RAS)",
    "length_mm": "centreline arc length (mm)",
    "width_mm": ("mean apparent diameter along the vessel (mm): model fit of a disk blurred by the voxel PSF "
                 "to the median cross-section; from the dark area and the scan's vein contrast where the fit "
                 "is unresolved or faint; from volume / length for 'other' vessels (see width_method)"),
    "tortuosity": ("arc length / chord length (>= 1, no unit) of the centreline after a further 1 mm Gaussian "
                   "smoothing along the arc (end points fixed)"),
    "curvature_per_mm": ("arc-length mean unsigned curvature of the centreline after a further 1 mm Gaussian "
                         "smoothing (1/mm)"),
    "n_voxels": "voxels labelled with this vessel id",
    "volume_mm3": "labelled volume (mm^3)",
    "mean_x_mm": "mean centreline x, RAS (mm; + = patient's right)",
    "mean_y_mm": "mean centreline y, RAS (mm; + = anterior)",
    "mean_z_mm": "mean centreline z, RAS (mm; + = superior)",
    "width_method": ("how width_mm was measured: model_fit (fitted diameter) | dark_area (sqrt(4 A / (pi c)), A the "
                     "fitted dark area, c the scan's vein contrast: unresolved or faint fits) | volume "
                     "(2 sqrt(volume / (pi length)), 'other' vessels)"),
    "dmv_probability": ("automatic runs: probability (0-1) that the line is a DMV, from a logistic model of 15 "
                        "features of its centreline (darkness and flank contrast in noise SDs, radial course, "
                        "distances to the ventricles, midline and surface; fitted on phantoms only, see "
                        "docs/vessels.md); a DMV below the run's dmv_min_probability (wide_dmv_min_probability for "
                        "one fitted wider than wide_dmv_mm) is reported as 'other'; "
                        "empty for lines not judged (wall veins, short, superficial or midline lines) and for "
                        "given masks, except that a re-measurement with the previous run keeps the probability "
                        "of every vessel it keeps"),
}

#: Per-subject keys (summary.json, the Slicer summary table): definition (unit); null = not measured.
SUMMARY_KEY_DEFINITIONS: dict[str, str] = {
    "dmv_count": "number of deep medullary veins, both hemispheres",
    "dmv_count_left": "number of DMVs in the left hemisphere",
    "dmv_count_right": "number of DMVs in the right hemisphere",
    "dmv_width_mm": "mean DMV diameter (mm)",
    "dmv_tortuosity": "mean DMV tortuosity (arc length / chord length of the 1 mm-smoothed centreline, >= 1)",
    "dmv_curvature_per_mm": "mean over DMVs of the arc-length mean |curvature| (1/mm)",
    "thalamic_vein_width_mm_left": "mean thalamic (thalamostriate) vein diameter, left (mm): of the one vein joined along the ventricle wall in an automatic run, else length-weighted over its pieces",
    "thalamic_vein_width_mm_right": "mean thalamic (thalamostriate) vein diameter, right (mm): of the one vein joined along the ventricle wall in an automatic run, else length-weighted over its pieces",
    "anterior_caudate_vein_width_mm_left": "mean anterior caudate vein diameter, left, length-weighted over its pieces (mm)",
    "anterior_caudate_vein_width_mm_right": "mean anterior caudate vein diameter, right, length-weighted over its pieces (mm)",
    "dmv_detectability_index": ("(scan's vein contrast / noise SD) x (0.6 mm / largest voxel side): contrast-to-noise per "
                                "voxel of a 0.6 mm DMV in the slice plane (no unit); below 2.3 the automatic DMV "
                                "detection found 6-86 % of the DMVs on phantoms, above it 78-100 %"),
    "warnings": "what limits this scan's automatic measurements (e.g. a low DMV detectability index); empty if none",
}
