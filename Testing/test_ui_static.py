"""Static .ui checks (Testing/uicheck.py): the checker on fixtures, then on the real modules."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("PySide6.QtUiTools", reason="PySide6-Essentials is not installed")

import uicheck  # noqa: E402  (Testing/ is on sys.path, see conftest.py)

DATA = Path(__file__).resolve().parent / "data" / "uicheck"
REPO = Path(__file__).resolve().parent.parent
MODULES = ("NeonatalVessels", "NeonatalClassify")


def test_checker_passes_a_matching_module():
    pytest.importorskip("slicer", reason="the subclass check (labelmap for a scalar-volume field) uses slicer-core")
    report = uicheck.check_files(DATA / "UI" / "good.ui", DATA / "good_module.py", resources_dir=DATA)
    assert report.ok, report.summary()
    assert report.parameter_class == "GoodParameterNode"
    assert report.bindings == {"inputSelector": "inputVolume", "thresholdSliderWidget": "thresholdHu",
                               "smoothingSpinBox": "options.smoothingIterations", "maskSelector": "mask"}
    assert report.node_types == {"inputSelector": ["vtkMRMLScalarVolumeNode"],
                                 "maskSelector": ["vtkMRMLLabelMapVolumeNode"]}
    # names found through self.ui, an alias and getattr; a layout counts (childWidgetVariables exposes it)
    assert set(report.used_names) == {"applyButton", "inputsCollapsibleButton", "inputSelector", "mainLayout",
                                      "thresholdSliderWidget"}
    assert any("qMRMLNodeComboBox" in w for w in report.qt_warnings)  # unknown classes were substituted


def test_checker_reports_every_mismatch():
    report = uicheck.check_files(DATA / "UI" / "broken.ui", DATA / "broken_module.py", resources_dir=DATA)
    assert not report.ok
    assert report.missing_ui_names == ["runButton", "statusLabel", "outputSelector"]
    assert sorted(report.unknown_parameters) == [("smoothingSpinBox", "options.iterations"),
                                                 ("thresholdSliderWidget", "thresholdHU")]
    assert report.missing_resources == ["UI/missing.ui"]
    assert sorted(report.kind_mismatches) == [("inputSelector", "inputVolume"), ("maskSelector", "maskThreshold"),
                                              ("outputTableLineEdit", "outputTable")]
    assert len(report.problems) == 9
    text = report.summary()
    assert "self.ui.runButton" in text and "thresholdHU" in text


def test_checker_reports_unparsable_ui_and_missing_wrapper(tmp_path):
    report = uicheck.check_files(DATA / "UI" / "malformed.ui", DATA / "good_module.py")
    assert not report.ok and "not well-formed" in report.problems[0]

    no_wrapper = tmp_path / "plain.py"
    no_wrapper.write_text("class W:\n    def setup(self):\n        self.ui.applyButton.enabled = True\n")
    report = uicheck.check_files(DATA / "UI" / "good.ui", no_wrapper)
    assert report.problems == ["good.ui binds 4 widgets with SlicerParameterName but plain.py has no "
                               "@parameterNodeWrapper class"]


@pytest.mark.parametrize("module", MODULES)
def test_module_ui_matches_module(module):
    py_path, ui_path = uicheck.module_paths(REPO / module)
    if not py_path.exists() or not ui_path.exists():
        pytest.skip(f"{module}: {py_path.name} / {ui_path.name} not written yet")
    report = uicheck.check_module(REPO / module)
    assert report.ok, report.summary()
    assert report.parameter_class, f"{module}.py has no @parameterNodeWrapper class"
    assert report.bindings, f"{ui_path.name} binds no widget to the parameter node"
