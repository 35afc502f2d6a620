"""NeonatalVessels engine: deep medullary vein segmentation and measurement on SWI (no Slicer import).

Public API: :class:`VesselParams`, :class:`VesselAnalysis`, :func:`run_vessel_analysis`,
:func:`measure_vessel_mask` (with :class:`PreviousRun`, :func:`edited_vessel_ids` for an edited
segmentation), :func:`write_outputs` (in :mod:`.pipeline`; :class:`VesselParams` in :mod:`.params`).
"""
from .params import VesselParams
from .pipeline import (SUMMARY_KEYS, VESSEL_COLUMNS, PreviousRun, VesselAnalysis, edited_vessel_ids,
                       measure_vessel_mask, run_vessel_analysis, write_outputs)

__all__ = ["VesselParams", "VesselAnalysis", "run_vessel_analysis", "measure_vessel_mask", "PreviousRun",
           "edited_vessel_ids", "write_outputs", "SUMMARY_KEYS", "VESSEL_COLUMNS"]
