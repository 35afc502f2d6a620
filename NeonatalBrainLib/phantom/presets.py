"""Phantom presets (subject type + acquisition) and injury specification."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

from ..imageio import InputError


@dataclass(frozen=True)
class Preset:
    """One phantom configuration: the neonate (anatomy) and the two acquisitions.

    Sizes are in mm, angles in degrees.  ``*_snr`` = white-matter signal / noise sigma
    (Rician noise).  ``bias_amplitude`` is the peak relative deviation of the smooth
    multiplicative receive-bias field.  Grid orientations are 3-letter codes of the
    voxel axes (``"LAS"``: i towards the patient's left, j anterior, k superior).
    """

    name: str
    description: str
    gestational_age_weeks: float = 40.0
    brain_scale: float = 1.0             #: 1 = term cerebrum 95 x 115 x 80 mm (L-R x A-P x S-I)
    ventricle_scale: float = 1.0         #: lateral ventricle cross-section relative to term
    extracerebral_csf_mm: float = 2.0
    sulcal_depth_mm: float = 8.0
    sulcal_wavelength_mm: float = 13.0
    cortex_thickness_mm: float = 1.7
    dmv_per_side: tuple[int, int] = (24, 34)
    dmv_diameter_mm: tuple[float, float] = (0.6, 1.6)
    vein_diameter_scale: float = 1.0     #: scales thalamostriate/ICV/anterior caudate veins
    plic_myelinated: bool = True
    field_strength_t: float = 3.0
    swi_spacing_mm: tuple[float, float, float] = (0.5, 0.5, 2.0)
    swi_orientation: str = "LAS"
    swi_fov_mm: tuple[float, float, float] = (128.0, 150.0, 96.0)
    swi_snr: float = 28.0
    #: SWI magnitude of venous blood, same units as the tissue signals (white matter 0.74): 0.08 is a
    #: lumen dephased almost to the noise floor; a higher value gives fainter veins at the same noise
    #: (benchmarks/eval_vessels_variants.py)
    swi_vein_signal: float = 0.08
    #: SWI noise SD in the middle of the field of view relative to its edges (parallel imaging's
    #: g-factor; ``generator.noise_gain_map``); ``swi_snr`` holds at the edges.  1: uniform noise
    swi_noise_centre_gain: float = 1.0
    t1_spacing_mm: tuple[float, float, float] = (0.9, 0.9, 0.9)
    t1_orientation: str = "RAS"
    t1_fov_mm: tuple[float, float, float] = (126.0, 148.0, 112.0)
    t1_snr: float = 30.0
    t1_contrast: float = 1.0             #: scales tissue contrast around WM (TR/TI-like change)
    t1_scale: float = 1000.0             #: scanner intensity scaling of T1 (arbitrary units)
    swi_scale: float = 1000.0
    bias_amplitude: float = 0.12
    head_rotation_deg: float = 4.0       #: max |rotation| about each axis (random per seed)
    head_offset_mm: float = 6.0          #: max |offset| of the head from the FOV centre per axis
    grid_obliquity_deg: float = 0.0      #: rotation of both acquisition grids (oblique planning)
    supersampling: int = 4               #: max sub-samples per voxel edge at tissue boundaries

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.swi_vein_signal) <= 1.0:
            raise InputError(f"phantom preset {self.name}: swi_vein_signal {self.swi_vein_signal} must lie in "
                             "0..1 (white matter is 0.74)")
        if not float(self.swi_noise_centre_gain) >= 1.0:
            raise InputError(f"phantom preset {self.name}: swi_noise_centre_gain {self.swi_noise_centre_gain} "
                             "must be at least 1 (parallel imaging only amplifies the noise)")


PRESETS: dict[str, Preset] = {
    "term_3t": Preset(
        "term_3t", "term neonate (40 weeks) at 3 T: SWI 0.5x0.5x2 mm axial, T1 0.9 mm isotropic"),
    "term_1p5t": Preset(
        "term_1p5t", "term neonate at 1.5 T: lower SNR, SWI 0.6x0.6x2 mm, T1 1 mm",
        field_strength_t=1.5, swi_spacing_mm=(0.6, 0.6, 2.0), swi_snr=14.0,
        t1_spacing_mm=(1.0, 1.0, 1.0), t1_snr=16.0, t1_contrast=0.85, bias_amplitude=0.08),
    "preterm": Preset(
        "preterm", "preterm neonate (31 weeks): smaller brain, larger ventricles, shallow sulci, "
                   "fewer and thinner DMVs, no PLIC myelination",
        gestational_age_weeks=31.0, brain_scale=0.8, ventricle_scale=1.9, extracerebral_csf_mm=3.5,
        sulcal_depth_mm=2.5, sulcal_wavelength_mm=20.0, cortex_thickness_mm=1.4,
        dmv_per_side=(12, 18), dmv_diameter_mm=(0.45, 1.0), vein_diameter_scale=0.8,
        plic_myelinated=False, swi_fov_mm=(110.0, 128.0, 84.0), t1_fov_mm=(108.0, 126.0, 96.0)),
    "isotropic": Preset(
        "isotropic", "term neonate at 3 T, SWI 0.6 mm isotropic (3D acquisition)",
        swi_spacing_mm=(0.6, 0.6, 0.6), swi_fov_mm=(120.0, 144.0, 96.0), swi_snr=22.0),
    "oblique_low_snr": Preset(
        "oblique_low_snr", "term neonate, head strongly rotated, oblique acquisition grids, low SNR",
        swi_snr=10.0, t1_snr=14.0, head_rotation_deg=14.0, head_offset_mm=10.0,
        grid_obliquity_deg=18.0, bias_amplitude=0.2, swi_fov_mm=(140.0, 160.0, 110.0),
        t1_fov_mm=(140.0, 160.0, 130.0), swi_orientation="LPS", t1_orientation="LPS"),
}
DEFAULT_PRESET = "term_3t"

INJURY_KINDS = ("bilirubin", "hie")


@dataclass(frozen=True)
class InjurySpec:
    """T1 injury pattern.

    * ``"bilirubin"`` (kernicterus / bilirubin encephalopathy): bilateral globus
      pallidus T1 hyperintensity.
    * ``"hie"`` (hypoxic-ischaemic, basal ganglia-thalamus pattern): putamen,
      globus pallidus and ventrolateral thalamus T1 hyperintensity with loss of the
      normal bright PLIC signal.

    ``strength`` in 0..1 scales the signal change (1 = obvious, ~0.3 = subtle).
    ``asymmetry`` in 0..1: the weaker side gets ``1 - asymmetry`` of the change;
    ``weaker_side`` "left"/"right" (None: chosen from the seed).
    """

    kind: str = "bilirubin"
    strength: float = 1.0
    asymmetry: float = 0.0
    weaker_side: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in INJURY_KINDS:
            raise InputError(f"injury kind {self.kind!r}: expected one of {', '.join(INJURY_KINDS)}")
        if not 0.0 <= float(self.strength) <= 1.0:
            raise InputError(f"injury strength {self.strength}: must lie in 0..1")
        if not 0.0 <= float(self.asymmetry) <= 1.0:
            raise InputError(f"injury asymmetry {self.asymmetry}: must lie in 0..1")
        if self.weaker_side not in (None, "left", "right"):
            raise InputError(f"injury weaker_side {self.weaker_side!r}: expected left, right or None")

    def as_dict(self) -> dict:
        return {"kind": self.kind, "strength": float(self.strength), "asymmetry": float(self.asymmetry),
                "weaker_side": self.weaker_side}


def get_preset(preset: "str | Preset") -> Preset:
    """A :class:`Preset` by name (or the instance itself); InputError for an unknown name."""
    if isinstance(preset, Preset):
        return preset
    if preset not in PRESETS:
        raise InputError(f"phantom preset {preset!r} unknown; choose one of {', '.join(PRESETS)}")
    return PRESETS[preset]


def with_changes(preset: Preset, **changes) -> Preset:
    return replace(preset, **changes)


def preset_changes(preset: Preset) -> dict:
    """The fields in which ``preset`` differs from the named preset of its name (``{}``: none, or
    a preset not in :data:`PRESETS`), as JSON values."""
    named = PRESETS.get(preset.name)
    if named is None:
        return {}
    out = {}
    for f in fields(Preset):
        value = getattr(preset, f.name)
        if value != getattr(named, f.name):
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out
