"""The shared in-Slicer package installer: requirement parsing, and it asks before it installs."""
import ast
from pathlib import Path

from NeonatalBrainLib import slicer_packages

REPO = Path(__file__).resolve().parents[1]


def test_import_names_of_requirements():
    assert slicer_packages.import_name("scikit-learn>=1.3") == "sklearn"
    assert slicer_packages.import_name("connected-components-3d>=3.12") == "cc3d"
    assert slicer_packages.import_name("monai[nibabel]>=1.5") == "monai"
    assert slicer_packages.import_name("torch==2.13.0") == "torch"


def test_missing_requirements_lists_only_absent_packages():
    missing = slicer_packages.missing_requirements(["numpy>=1.26", "surely-not-installed-pkg>=1"])
    assert missing == ["surely-not-installed-pkg>=1"]


def test_installer_asks_before_installing_and_modules_use_it():
    tree = ast.parse((REPO / "NeonatalBrainLib" / "slicer_packages.py").read_text())
    ensure = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "ensure_packages")
    src = ast.unparse(ensure)
    asked = src.index("confirmOkCancelDisplay")
    assert asked < src.index("pip_install") and asked < src.index("pip_ensure") and asked < src.index("installTorch")
    for module in ("NeonatalVessels/NeonatalVessels.py", "NeonatalClassify/NeonatalClassify.py"):
        text = (REPO / module).read_text()
        assert "ensure_packages(" in text and "pip_install(" not in text, module


def test_every_module_requirement_maps_to_an_installed_import_name():
    # the test environment holds every requirement: one listed missing has a wrong import name,
    # and Slicer would offer to install it at every Apply (pillow imports as PIL)
    import re

    for module, name in (("NeonatalVessels/NeonatalVessels.py", "REQUIREMENTS"),
                         ("NeonatalClassify/NeonatalClassify.py", "BASE_REQUIREMENTS")):
        text = (REPO / module).read_text()
        requirements = ast.literal_eval(re.search(rf"^{name} = (\(.*?\))$", text, re.S | re.M).group(1))
        assert requirements and slicer_packages.missing_requirements(requirements) == [], module
    assert slicer_packages.import_name("pillow>=10.1") == "PIL"
