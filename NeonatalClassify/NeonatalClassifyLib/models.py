"""Slice classifiers built with MONAI, and safe checkpoint loading.

Architectures (2D, ``in_channels`` -> 2 classes: 0 = control, 1 = injured; no weight
download, ``pretrained=False`` everywhere):

* ``resnet18``: ``monai.networks.nets.resnet18`` (MONAI's ResNet: 7x7 stem with
  stride 1 + max-pool) with the strides of the last stages set to 1 for
  ``output_stride`` 4 (default: ``layer3`` and ``layer4``; 8: ``layer4`` only; 16:
  MONAI's original), so that the Grad-CAM of ``layer4`` has 4 mm cells on 1 mm
  slices (12 x 12 on a 48 px input); weights and parameter count are those of
  ResNet18 (He et al. 2016).  ``width`` (MONAI ``widen_factor``) scales the channel widths
  (1.0 = standard; the demo model uses a reduced width to stay small).
* ``densenet121``: ``monai.networks.nets.DenseNet121`` (Huang et al. 2017).
* ``efficientnet-b0``: ``monai.networks.nets.EfficientNetBN("efficientnet-b0",
  pretrained=False)`` (Tan & Le 2019).

Checkpoints (``model.pt``) are ``{"format": "neonatalbrain-checkpoint-1",
"architecture": ..., "model_config": {...}, "state_dict": {...}}`` read with
``torch.load(weights_only=True)`` (tensors and plain containers only: no pickled
code runs).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from NeonatalBrainLib.imageio import InputError

ARCHITECTURES = ("resnet18", "densenet121", "efficientnet-b0")
CHECKPOINT_FORMAT = "neonatalbrain-checkpoint-1"

#: Grad-CAM target layer (last convolutional block) per architecture.
GRADCAM_LAYERS = {"resnet18": "layer4", "densenet121": "class_layers.relu", "efficientnet-b0": "_bn1"}
#: Final linear layer per architecture (its input = the penultimate-layer features).
CLASSIFIER_LAYERS = {"resnet18": "fc", "densenet121": "class_layers.out", "efficientnet-b0": "_fc"}


class CheckpointError(InputError):
    """A checkpoint that does not match the expected architecture or checksum."""


def _check_arch(arch: str) -> str:
    if arch not in ARCHITECTURES:
        raise InputError(f"architecture '{arch}' unknown; choose one of {', '.join(ARCHITECTURES)}")
    return arch


def build_model(arch: str = "resnet18", in_channels: int = 1, num_classes: int = 2,
                image_size: int = 48, width: float = 1.0, output_stride: int = 4):
    """A freshly initialised 2D classifier (torch.nn.Module); see module docstring."""
    _check_arch(arch)
    from monai.networks import nets

    if arch == "resnet18":
        model = nets.resnet18(spatial_dims=2, n_input_channels=int(in_channels),
                              num_classes=int(num_classes), widen_factor=float(width))
        if output_stride not in (4, 8, 16):
            raise InputError(f"output stride must be 4, 8 or 16, got {output_stride}")
        stages = {4: (model.layer3, model.layer4), 8: (model.layer4,), 16: ()}[int(output_stride)]
        for stage in stages:
            first = stage[0]
            first.conv1.stride = (1, 1)
            if first.downsample is not None:
                first.downsample[0].stride = (1, 1)
    elif arch == "densenet121":
        model = nets.DenseNet121(spatial_dims=2, in_channels=int(in_channels), out_channels=int(num_classes))
    else:
        model = nets.EfficientNetBN("efficientnet-b0", pretrained=False, spatial_dims=2,
                                    in_channels=int(in_channels), num_classes=int(num_classes))
    if image_size < 16:
        raise InputError(f"image size must be >= 16 px, got {image_size}")
    return model


def model_config(arch: str, in_channels: int = 1, num_classes: int = 2, image_size: int = 48,
                 width: float = 1.0, output_stride: int = 4) -> dict:
    return {"arch": _check_arch(arch), "in_channels": int(in_channels), "num_classes": int(num_classes),
            "image_size": int(image_size), "width": float(width), "output_stride": int(output_stride)}


def build_from_config(config: dict):
    """Model of a card's ``model_config`` (older cards without output_stride: 8)."""
    return build_model(config["arch"], int(config.get("in_channels", 1)), int(config.get("num_classes", 2)),
                       int(config.get("image_size", 48)), float(config.get("width", 1.0)),
                       int(config.get("output_stride", 8)))


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(model, path: str | os.PathLike, config: dict) -> str:
    """Write ``model``'s state_dict with its architecture record; returns the file's SHA-256."""
    import torch

    payload = {"format": CHECKPOINT_FORMAT, "architecture": config["arch"],
               "model_config": dict(config),
               "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
    torch.save(payload, str(path))
    return sha256_of(path)


def read_checkpoint(path: str | os.PathLike, expected_sha256: str | None = None) -> dict:
    """Checksum-verified, pickle-free read of a checkpoint (dict or bare state_dict)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: file not found")
    if expected_sha256 is not None:
        actual = sha256_of(path)
        if actual.lower() != str(expected_sha256).lower():
            raise CheckpointError(
                f"checkpoint {path}: SHA-256 {actual} does not match the expected {expected_sha256} "
                "(file changed or tampered with); refusing to load")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling restrictions, corrupt zip ...
        raise CheckpointError(f"checkpoint {path}: cannot be read safely (weights only): {exc}"[:400]) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path}: expected a state_dict or checkpoint dict, got {type(obj).__name__}")
    if "state_dict" not in obj:  # a bare state_dict (user weights)
        obj = {"format": None, "architecture": None, "model_config": None, "state_dict": obj}
    return obj


def load_weights(model, path: str | os.PathLike, expected_arch: str, expected_sha256: str | None = None):
    """Load checkpoint ``path`` into ``model`` (in place, returned), refusing a checksum
    mismatch, a checkpoint recorded for another architecture, or tensors whose names or
    shapes do not fit the model."""
    _check_arch(expected_arch)
    ck = read_checkpoint(path, expected_sha256)
    arch = ck.get("architecture")
    if arch is not None and arch != expected_arch:
        raise CheckpointError(f"checkpoint {path}: trained for architecture '{arch}', not '{expected_arch}'")
    state = ck["state_dict"]
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or extra or wrong:
        detail = (f"{len(missing)} missing, {len(extra)} unexpected, {len(wrong)} wrong-shape tensors"
                  + (f" (e.g. {(missing + extra + wrong)[0]})" if missing + extra + wrong else ""))
        raise CheckpointError(f"checkpoint {path}: does not fit architecture '{expected_arch}': {detail}")
    model.load_state_dict(state)
    model.eval()
    return model


def get_submodule(model, dotted: str):
    mod = model
    for part in dotted.split("."):
        mod = getattr(mod, part)
    return mod
