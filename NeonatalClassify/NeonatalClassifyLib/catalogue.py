"""Local model catalogue: the shipped demo model plus the user's imported models.

* Demo model: ``Resources/Models/demo-resnet18/`` of the extension (catalogue id
  ``"demo"``), found in the repository (source checkout / editable install) or in
  ``NeonatalClassifyLib/Models`` (packaged install).
* User models: one folder per model in ``$NEONATALBRAIN_MODELS`` if set, else
  ``~/.neonatalbrain/models``; the folder name is the catalogue id.

A model folder holds ``model_card.json`` and ``model.pt``; :func:`verify_model_dir`
checks the card, the SHA-256 of ``model.pt`` against the card, and that the weights
load into the card's architecture (safe, weights-only loading).
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from NeonatalBrainLib.imageio import InputError
from NeonatalBrainLib.outputs import OutputExistsError

DEMO_MODEL_ID = "demo"
DEMO_MODEL_FOLDER = "demo-resnet18"
_ENV = "NEONATALBRAIN_MODELS"


@dataclass
class ModelEntry:
    id: str
    path: Path
    card: dict = field(default_factory=dict)
    builtin: bool = False

    @property
    def synthetic(self) -> bool:
        return bool(self.card.get("synthetic_training_data", False))

    @property
    def label(self) -> str:
        arch = self.card.get("architecture", "?")
        return f"{self.id} ({arch})" + (" - synthetic demo, not for clinical use" if self.synthetic else "")


def demo_model_dir() -> Path | None:
    """Folder of the shipped demo model, or None if it is not installed."""
    here = Path(__file__).resolve().parent
    for cand in (here.parents[1] / "Resources" / "Models" / DEMO_MODEL_FOLDER,
                 here / "Models" / DEMO_MODEL_FOLDER):
        if (cand / "model_card.json").is_file():
            return cand
    return None


def user_models_dir() -> Path:
    """``$NEONATALBRAIN_MODELS`` or ``~/.neonatalbrain/models`` (not created here)."""
    env = os.environ.get(_ENV)
    return Path(env).expanduser() if env else Path.home() / ".neonatalbrain" / "models"


def verify_model_dir(folder: str | os.PathLike) -> dict:
    """Model card of ``folder`` after checking checksum and architecture (InputError if not)."""
    from .inference import WEIGHTS_NAME, read_model_card
    from .models import build_from_config, load_weights
    from .slices import SliceSpec

    folder = Path(folder)
    card = read_model_card(folder)
    spec = SliceSpec.from_dict(card["input"])
    cfg = card.get("model_config") or {}
    model = build_from_config(dict(cfg, arch=card["architecture"], in_channels=len(spec.channels),
                                   image_size=spec.image_size))
    load_weights(model, folder / WEIGHTS_NAME, card["architecture"], card["weights_sha256"])
    return card


def _entry(folder: Path, model_id: str, builtin: bool) -> ModelEntry | None:
    from .inference import read_model_card

    try:
        card = read_model_card(folder)
    except InputError:
        return None
    return ModelEntry(model_id, folder, card, builtin)


def list_models() -> list[ModelEntry]:
    """Demo model first, then user models sorted by id (folders without a valid card are skipped)."""
    out = []
    demo = demo_model_dir()
    if demo is not None:
        e = _entry(demo, DEMO_MODEL_ID, True)
        if e:
            out.append(e)
    udir = user_models_dir()
    if udir.is_dir():
        for sub in sorted(p for p in udir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            e = _entry(sub, sub.name, False)
            if e:
                out.append(e)
    return out


def get_model(model_id: str) -> ModelEntry:
    for e in list_models():
        if e.id == model_id:
            return e
    raise InputError(f"model '{model_id}': not in the catalogue ({', '.join(e.id for e in list_models()) or 'empty'})")


def import_model(src_dir: str | os.PathLike, model_id: str | None = None) -> ModelEntry:
    """Verify ``src_dir`` (checksum, architecture) and copy it into the user folder.

    ``model_id`` defaults to the card's ``model_id`` (made file-name safe).  An existing
    model of that id is never overwritten (OutputExistsError).
    """
    src = Path(src_dir)
    card = verify_model_dir(src)
    mid = model_id or str(card.get("model_id") or src.name)
    mid = re.sub(r"[^A-Za-z0-9._-]+", "_", mid).strip("._") or "model"
    if mid == DEMO_MODEL_ID:
        raise OutputExistsError(f"model id '{mid}' is reserved for the shipped demo model; choose another id")
    dest_root = user_models_dir()
    dest = dest_root / mid
    if dest.exists():
        raise OutputExistsError(f"model '{mid}' already exists in {dest_root}; not overwritten")
    dest_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".import-", dir=dest_root))
    try:
        shutil.copytree(src, tmp / "m")
        verify_model_dir(tmp / "m")  # the copy itself is intact
        os.replace(tmp / "m", dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ModelEntry(mid, dest, card, False)
