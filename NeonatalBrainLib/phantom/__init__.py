"""Digital neonatal brain phantom (SWI + T1 with exact ground truth).

See docs/phantom.md.  Public API: ``PRESETS``, ``Preset``, ``with_changes`` (a variant of a
preset), ``InjurySpec``, ``generate_phantom``, ``write_phantom``, ``write_cohort``, ``Phantom``,
``zero_filled`` (an image reconstructed on a finer grid, as scanners interpolate).
"""
from .presets import DEFAULT_PRESET, INJURY_KINDS, PRESETS, InjurySpec, Preset, get_preset, with_changes
from .generator import Phantom, generate_phantom, save_phantom, vessel_summary, write_phantom, zero_filled
from .cohort import write_cohort

__all__ = ["PRESETS", "DEFAULT_PRESET", "INJURY_KINDS", "Preset", "InjurySpec", "get_preset", "with_changes",
           "Phantom", "generate_phantom", "write_phantom", "save_phantom", "write_cohort", "vessel_summary", "zero_filled"]
