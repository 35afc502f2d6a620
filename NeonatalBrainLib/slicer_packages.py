"""Install missing Python packages inside 3D Slicer, after asking the user (both modules use this).

Called on first use of a module's action, never when a module opens.  PyTorch goes
through the SlicerPyTorch extension's installer when it is present (it picks the
CUDA or CPU build for the computer), otherwise pip with the given requirement.
Imports ``slicer`` only when called; nothing here runs outside Slicer.
"""
from __future__ import annotations

import importlib.util
import re
from typing import Iterable, Optional

#: pip distribution name -> import name, where they differ.
_IMPORT_NAMES = {
    "scikit-learn": "sklearn",
    "scikit-image": "skimage",
    "simpleitk": "SimpleITK",
    "connected-components-3d": "cc3d",
    "pyside6-essentials": "PySide6",
    "pillow": "PIL",
}


def import_name(requirement: str) -> str:
    """Import name of a requirement string ('scikit-learn>=1.3' -> 'sklearn')."""
    name = re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].strip().lower()
    return _IMPORT_NAMES.get(name, name)


def missing_requirements(requirements: Iterable[str]) -> list[str]:
    """The requirements whose package cannot be imported in this Python."""
    return [r for r in requirements if importlib.util.find_spec(import_name(r)) is None]


def _has_packaging() -> bool:
    try:
        import slicer.packaging  # noqa: F401  (Slicer >= 5.10)
    except ImportError:
        return False
    return True


def ensure_packages(requirements: Iterable[str], *, requester: str, torch_requirement: Optional[str] = None,
                    parent=None) -> None:
    """Install what is missing of ``requirements`` (and torch) after a confirmation dialog.

    Raises RuntimeError naming the packages when the user declines; does nothing when
    everything is installed.
    """
    import slicer
    from slicer.i18n import tr as _

    needed = missing_requirements(requirements)
    torch_missing = torch_requirement is not None and importlib.util.find_spec("torch") is None
    if not needed and not torch_missing:
        return
    what = ", ".join(([torch_requirement] if torch_missing else []) + needed)
    if not slicer.util.confirmOkCancelDisplay(
            _("{requester} needs these Python packages, which are not installed yet:\n{what}\n\n"
              "Install them now (download from the Python Package Index)? "
              "This modifies Slicer's Python environment.").format(requester=requester, what=what),
            windowTitle=_("Install Python packages"), parent=parent):
        raise RuntimeError(_("Python packages not installed: {what}").format(what=what))
    if torch_missing:
        try:
            import PyTorchUtils  # SlicerPyTorch extension: chooses the CUDA/CPU build for this computer

            torch_logic = PyTorchUtils.PyTorchUtilsLogic()
            if not torch_logic.torchInstalled():
                torch_logic.installTorch(askConfirmation=False,
                                         torchVersionRequirement=torch_requirement.replace("torch", "", 1))
        except ImportError:
            needed = [torch_requirement] + needed
    if needed:
        if _has_packaging():  # dependency checks with a progress dialog
            import slicer.packaging

            slicer.packaging.pip_ensure(needed, prompt_install=False, requester=requester)
        else:
            slicer.util.pip_install(" ".join(f'"{r}"' for r in needed))
