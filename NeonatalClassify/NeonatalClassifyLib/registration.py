"""Atlas-to-subject registration of neonatal T1 images (SimpleITK).

Pipeline (fixed = subject, moving = atlas subject; all in physical LPS space, so any
voxel order and oblique grids work):

1. **Head mask and robust normalisation**: Otsu threshold of the smoothed image,
   largest connected component, holes filled; intensities mapped linearly so that
   the 1st / 99th percentiles inside the head mask become 0 / 1 (arbitrary scaling
   and offsets between centres cancel).
2. **Initialisation**: centres of mass of the two head masks (moments); isotropic
   scale = cube root of the head-volume ratio (term vs preterm heads).
3. **Similarity, affine, then deep-grey affine** (Mattes mutual information, which
   tolerates contrast differences; multi-resolution on an isotropic working grid
   ``affine_spacing_mm``, shrink 2 then 1).  The first two stages use the head masks;
   the last restricts the metric (moving mask) to the box around the atlas's deep grey
   matter grown by ``roi_margin_mm``.
4. **Deformable**: fast symmetric-forces demons (Thirion / Vercauteren) on a 1 mm crop
   around the deep grey matter in subject space: subject crop histogram-matched to the
   affinely resampled atlas crop, both smoothed and clipped at ``clip_factor`` x the
   atlas's median deep-grey intensity (a hyperintense lesion then looks like normal deep
   grey matter and exerts no force); two resolution levels, update-field smoothing
   (fluid-like) and displacement-field smoothing (``demons_sigma_mm``, elastic-like).

The result maps subject physical points to atlas physical points
(:class:`RegistrationResult.transform`, a SimpleITK transform usable with
``sitk.Resample(atlas_image, subject_grid, transform, ...)``).

References: Mattes et al., IEEE TMI 22:120 (2003); Thirion, Med Image Anal 2:243
(1998); Vercauteren et al., NeuroImage 45:S61 (2009).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from NeonatalBrainLib.imageio import InputError, Volume, volume_to_sitk


def _sitk():
    import SimpleITK as sitk

    return sitk


@dataclass(frozen=True)
class RegistrationParameters:
    """Tunable settings (defaults were chosen on phantoms held out from the test set)."""

    affine_spacing_mm: float = 2.0        #: isotropic working grid of the rigid/affine stages
    deformable_spacing_mm: float = 1.0    #: isotropic grid of the demons stage
    roi_margin_mm: float = 12.0           #: metric region = deep grey box grown by this margin
    mi_bins: int = 32                     #: Mattes MI histogram bins
    sampling_fraction: float = 0.3        #: fraction of mask voxels sampled by the MI metric
    rigid_iterations: int = 80
    affine_iterations: int = 80
    demons_iterations: tuple[int, ...] = (30, 10)  #: per level, coarse (2x) to fine
    demons_sigma_mm: float = 1.5          #: Gaussian smoothing of the displacement field (mm)
    demons_min_sigma_vox: float = 0.5     #: lower bound of the field smoothing at coarse levels
    demons_update_sigma: float = 1.0      #: smoothing of each update field (voxels; 0 = off)
    demons_max_step: float = 1.0          #: maximum update step per iteration (voxels)
    clip_factor: float = 0.9              #: demons inputs clipped at this x the atlas deep grey median
    bias_sigma_mm: float = 0.0            #: local intensity normalisation scale before demons (0 = off)
    roi_affine: bool = True               #: final affine stage restricted to the deep grey box
    deformable: bool = True               #: demons stage after the affine stages
    demons_smooth_input_mm: float = 1.0   #: Gaussian smoothing of both crops before demons
    label_margin_mm: float = 6.0          #: labels are transferred inside the ROI box grown by this
    affine_vote_weight: float = 0.0       #: label fusion weight of the affine-only result (0..1)
    seed: int = 20241121                  #: metric sampling seed (results are deterministic)


@dataclass
class RegistrationResult:
    """``transform`` maps subject (fixed) physical LPS points to atlas (moving) points."""

    transform: object                     # sitk.Transform
    affine: object                        # sitk.AffineTransform alone
    crop_reference: object                # sitk.Image: the deformable stage's grid (subject space)
    metric_value: float
    timings_s: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------- preprocessing
def as_sitk_float(volume: Volume):
    """Float32 SimpleITK image (LPS) of a Volume."""
    return volume_to_sitk(volume.with_array(np.asarray(volume.array, dtype=np.float32)))


def resample_isotropic(image, spacing_mm: float, *, interpolator=None, smooth: bool = True):
    """Resample onto an isotropic grid with the image's direction, covering the same extent.

    Down-sampling is preceded by Gaussian smoothing (sigma = half the new spacing
    along axes that get coarser) to avoid aliasing.
    """
    sitk = _sitk()
    old_sp = np.array(image.GetSpacing())
    size = np.array(image.GetSize())
    new_sp = np.full(3, float(spacing_mm))
    new_size = np.maximum(np.round(size * old_sp / new_sp).astype(int), 2)
    if smooth:
        sig = np.sqrt(np.maximum((new_sp / 2) ** 2 - (old_sp / 2) ** 2, 0))
        if np.any(sig > 0.05):
            image = sitk.SmoothingRecursiveGaussian(image, [float(max(s, 1e-3)) for s in sig])
    # keep the centre of the field of view
    direction = np.array(image.GetDirection()).reshape(3, 3)
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in size]))
    origin = centre - direction @ ((new_size - 1) / 2 * new_sp)
    return sitk.Resample(image, [int(s) for s in new_size], sitk.Transform(),
                         interpolator if interpolator is not None else sitk.sitkLinear,
                         [float(o) for o in origin], [float(s) for s in new_sp],
                         image.GetDirection(), 0.0, image.GetPixelID())


def head_mask(image):
    """uint8 head mask: Otsu on the smoothed image, largest component, holes filled."""
    sitk = _sitk()
    sm = sitk.SmoothingRecursiveGaussian(image, float(2.0 * max(image.GetSpacing())))
    mask = sitk.OtsuThreshold(sm, 0, 1)
    cc = sitk.ConnectedComponent(mask)
    cc = sitk.RelabelComponent(cc, sortByObjectSize=True)
    mask = sitk.Cast(cc == 1, sitk.sitkUInt8)
    mask = sitk.BinaryMorphologicalClosing(mask, [2, 2, 2])
    filled = sitk.BinaryFillhole(mask)
    if sitk.GetArrayViewFromImage(filled).sum() < 100:
        raise InputError("T1: could not find the head (image nearly empty after thresholding)")
    return filled


def normalise_intensity(image, mask, *, low_pct: float = 1.0, high_pct: float = 99.0):
    """Map the ``low_pct``/``high_pct`` percentiles inside ``mask`` to 0/1 (float32)."""
    sitk = _sitk()
    a = sitk.GetArrayViewFromImage(image)
    m = sitk.GetArrayViewFromImage(mask).astype(bool)
    vals = a[m] if m.any() else a.ravel()
    lo, hi = np.percentile(vals, [low_pct, high_pct])
    if not hi > lo:
        raise InputError("T1: no intensity contrast inside the head")
    out = sitk.ShiftScale(sitk.Cast(image, sitk.sitkFloat32), float(-lo), float(1.0 / (hi - lo)))
    return out


@dataclass
class PreparedImage:
    """An image ready for registration: normalised working image + head mask (isotropic grid)."""

    image: object          # sitk float32, normalised, isotropic affine_spacing_mm
    mask: object           # sitk uint8 head mask on the same grid
    full: object           # sitk float32 normalised, original grid
    roi_mask: object = None  # atlas only: sitk uint8 deep grey matter mask on the original grid


def prepare(volume: Volume, params: RegistrationParameters) -> PreparedImage:
    sitk = _sitk()
    img = as_sitk_float(volume)
    work = resample_isotropic(img, params.affine_spacing_mm)
    mask = head_mask(work)
    work_n = normalise_intensity(work, mask)
    a = sitk.GetArrayViewFromImage(work)
    m = sitk.GetArrayViewFromImage(mask).astype(bool)
    lo, hi = np.percentile(a[m], [1.0, 99.0])
    full_n = sitk.ShiftScale(img, float(-lo), float(1.0 / (hi - lo)))
    return PreparedImage(image=work_n, mask=mask, full=full_n)


# ----------------------------------------------------------------------------- linear stages
def _mi_method(params: RegistrationParameters, iterations: int, shrink=(2, 1), sigmas=(1.0, 0.0)):
    sitk = _sitk()
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=params.mi_bins)
    reg.SetMetricSamplingStrategy(reg.REGULAR)
    reg.SetMetricSamplingPercentage(params.sampling_fraction, params.seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3,
                                                 numberOfIterations=iterations,
                                                 relaxationFactor=0.6,
                                                 gradientMagnitudeTolerance=1e-6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(list(shrink))
    reg.SetSmoothingSigmasPerLevel(list(sigmas))
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    return reg


def box_mask(reference, lo_mm: np.ndarray, hi_mm: np.ndarray):
    """uint8 mask on ``reference``'s grid: voxels whose physical LPS point lies in [lo, hi]."""
    sitk = _sitk()
    size = reference.GetSize()
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), -1).reshape(-1, 3)
    D = np.array(reference.GetDirection()).reshape(3, 3) * np.array(reference.GetSpacing())
    pts = idx @ D.T + np.array(reference.GetOrigin())
    inside = np.all((pts >= lo_mm) & (pts <= hi_mm), axis=1).reshape(size)
    m = sitk.GetImageFromArray(inside.transpose(2, 1, 0).astype(np.uint8))
    m.CopyInformation(reference)
    return m


def register_affine(fixed: PreparedImage, moving: PreparedImage, roi_box_mm: tuple[np.ndarray, np.ndarray],
                    params: RegistrationParameters):
    """Similarity (head masks), affine (head masks), then affine with the metric restricted
    to the deep grey box (moving mask); returns (AffineTransform, final metric value)."""
    sitk = _sitk()
    init = sitk.CenteredTransformInitializer(
        sitk.Cast(fixed.mask, sitk.sitkFloat32), sitk.Cast(moving.mask, sitk.sitkFloat32),
        sitk.Similarity3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS)
    # isotropic scale from the head volumes (preterm vs term)
    fv = float(sitk.GetArrayViewFromImage(fixed.mask).sum()) * np.prod(fixed.mask.GetSpacing())
    mv = float(sitk.GetArrayViewFromImage(moving.mask).sum()) * np.prod(moving.mask.GetSpacing())
    init.SetScale(float((mv / fv) ** (1.0 / 3.0)))
    reg = _mi_method(params, params.rigid_iterations)
    reg.SetMetricFixedMask(fixed.mask)
    reg.SetInitialTransform(init, inPlace=True)
    reg.Execute(fixed.image, moving.image)

    affine = sitk.AffineTransform(3)
    affine.SetCenter(init.GetCenter())
    affine.SetMatrix(init.GetMatrix())
    affine.SetTranslation(init.GetTranslation())
    reg = _mi_method(params, params.affine_iterations)
    reg.SetMetricFixedMask(fixed.mask)
    reg.SetInitialTransform(affine, inPlace=True)
    reg.Execute(fixed.image, moving.image)
    metric = float(reg.GetMetricValue())
    if params.roi_affine:
        lo, hi = roi_box_mm
        margin = params.roi_margin_mm
        roi = box_mask(moving.image, lo - margin, hi + margin)
        roi = sitk.And(roi, moving.mask)
        reg = _mi_method(params, params.affine_iterations, shrink=(1,), sigmas=(0.0,))
        reg.SetMetricFixedMask(fixed.mask)
        reg.SetMetricMovingMask(roi)
        reg.SetInitialTransform(affine, inPlace=True)
        reg.Execute(fixed.image, moving.image)
        metric = float(reg.GetMetricValue())
    return affine, metric


# ----------------------------------------------------------------------------- deformable stage
def crop_grid_in_fixed(fixed_image, transform, roi_box_mm: tuple[np.ndarray, np.ndarray],
                       margin_mm: float, spacing_mm: float):
    """Empty image (grid only) in fixed space, direction of ``fixed_image``, covering the
    atlas box ``roi_box_mm`` (+ margin) mapped back through the inverse of ``transform``."""
    sitk = _sitk()
    lo, hi = roi_box_mm[0] - margin_mm, roi_box_mm[1] + margin_mm
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    inv = transform.GetInverse()
    pts = np.array([inv.TransformPoint([float(c) for c in p]) for p in corners])
    D = np.array(fixed_image.GetDirection()).reshape(3, 3)
    local = pts @ D  # coordinates along the fixed image's axes
    lo_l, hi_l = local.min(0), local.max(0)
    size = np.ceil((hi_l - lo_l) / spacing_mm).astype(int) + 1
    origin = D @ lo_l
    ref = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    ref.SetSpacing([float(spacing_mm)] * 3)
    ref.SetDirection(fixed_image.GetDirection())
    ref.SetOrigin([float(o) for o in origin])
    return ref


def local_normalise(image, sigma_mm: float):
    """``image / G_sigma(image)``: removes a smooth multiplicative bias field (scale > sigma)."""
    sitk = _sitk()
    if sigma_mm <= 0:
        return image
    smooth = sitk.SmoothingRecursiveGaussian(image, float(sigma_mm))
    smooth = sitk.Maximum(smooth, 0.05)
    return sitk.Clamp(sitk.Divide(image, smooth), sitk.sitkFloat32, 0.0, 3.0)


def _demons(fixed, moving, iterations: int, sigma: float, initial=None, update_sigma: float = 0.0,
            max_step: float = 2.0):
    sitk = _sitk()
    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetNumberOfIterations(int(iterations))
    demons.SetStandardDeviations(float(sigma))
    demons.SetSmoothDisplacementField(True)
    demons.SetSmoothUpdateField(update_sigma > 0)
    if update_sigma > 0:
        demons.SetUpdateFieldStandardDeviations(float(update_sigma))
    demons.SetMaximumUpdateStepLength(float(max_step))
    demons.SetIntensityDifferenceThreshold(1e-3)
    if initial is None:
        return demons.Execute(fixed, moving)
    return demons.Execute(fixed, moving, initial)


def register_deformable(fixed: PreparedImage, moving: PreparedImage, affine,
                        roi_box_mm: tuple[np.ndarray, np.ndarray], params: RegistrationParameters):
    """Demons in a crop around the deep grey matter; returns (composite transform, crop grid)."""
    sitk = _sitk()
    ref = crop_grid_in_fixed(fixed.full, affine, roi_box_mm, params.roi_margin_mm,
                             params.deformable_spacing_mm)
    f = sitk.Resample(fixed.full, ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    m = sitk.Resample(moving.full, ref, affine, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    if params.bias_sigma_mm > 0:
        f = local_normalise(f, params.bias_sigma_mm)
        m = local_normalise(m, params.bias_sigma_mm)
    if params.demons_smooth_input_mm > 0:
        f = sitk.SmoothingRecursiveGaussian(f, float(params.demons_smooth_input_mm))
        m = sitk.SmoothingRecursiveGaussian(m, float(params.demons_smooth_input_mm))
    # subject intensities onto the atlas scale
    f = sitk.HistogramMatching(f, m, numberOfHistogramLevels=128, numberOfMatchPoints=15,
                               thresholdAtMeanIntensity=False)
    if moving.roi_mask is not None and params.clip_factor > 0:
        # clip both at the atlas's deep grey level: a hyperintense lesion (or bright PLIC)
        # becomes indistinguishable from normal deep grey and exerts no force
        r = sitk.Resample(moving.roi_mask, ref, affine, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        inside = sitk.GetArrayViewFromImage(r).astype(bool)
        if inside.any():
            cap = params.clip_factor * float(np.median(sitk.GetArrayViewFromImage(m)[inside]))
            f = sitk.Clamp(f, sitk.sitkFloat32, -1e3, cap)
            m = sitk.Clamp(m, sitk.sitkFloat32, -1e3, cap)
    field = None
    levels = len(params.demons_iterations)
    for level, iters in enumerate(params.demons_iterations):
        shrink = 2 ** (levels - 1 - level)
        if shrink > 1:
            fl = resample_isotropic(f, params.deformable_spacing_mm * shrink)
            ml = resample_isotropic(m, params.deformable_spacing_mm * shrink)
        else:
            fl, ml = f, m
        init = None
        if field is not None:
            init = sitk.Resample(field, fl, sitk.Transform(), sitk.sitkLinear, 0.0, field.GetPixelID())
        sigma = params.demons_sigma_mm / (params.deformable_spacing_mm * shrink)
        if iters <= 0:
            field = init if init is not None else field
            continue
        field = _demons(fl, ml, iters, max(sigma, params.demons_min_sigma_vox), init, params.demons_update_sigma,
                        params.demons_max_step)
    if field is None:
        return sitk.CompositeTransform([affine]), ref
    field = sitk.Cast(field, sitk.sitkVectorFloat64)
    disp = sitk.DisplacementFieldTransform(field)
    composite = sitk.CompositeTransform([affine, disp])  # disp applied first, then affine
    return composite, ref


def register(fixed: PreparedImage, moving: PreparedImage, roi_box_mm: tuple[np.ndarray, np.ndarray],
             params: RegistrationParameters | None = None) -> RegistrationResult:
    """Full pipeline (affine, then demons unless ``params.deformable`` is False)."""
    sitk = _sitk()
    params = params or RegistrationParameters()
    t0 = time.perf_counter()
    affine, metric = register_affine(fixed, moving, roi_box_mm, params)
    t1 = time.perf_counter()
    timings = {"affine_s": t1 - t0}
    if params.deformable:
        transform, ref = register_deformable(fixed, moving, affine, roi_box_mm, params)
        timings["deformable_s"] = time.perf_counter() - t1
    else:
        ref = crop_grid_in_fixed(fixed.full, affine, roi_box_mm, params.roi_margin_mm,
                                 params.deformable_spacing_mm)
        transform = sitk.CompositeTransform([affine])
    return RegistrationResult(transform=transform, affine=affine, crop_reference=ref,
                              metric_value=metric, timings_s=timings)


__all__ = ["RegistrationParameters", "RegistrationResult", "PreparedImage", "prepare", "register",
           "register_affine", "register_deformable", "head_mask", "normalise_intensity",
           "resample_isotropic", "as_sitk_float", "box_mask", "crop_grid_in_fixed"]
