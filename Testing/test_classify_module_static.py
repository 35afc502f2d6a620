"""Static checks of NeonatalClassify.py (ast; no Slicer application needed).

* the module follows Slicer's scripted-module template: module / parameter node /
  widget / logic / test classes with their template methods and base classes;
* metadata: category "Neonatal", help text stating the synthetic demo model and
  "not for clinical use";
* nothing heavy (torch, MONAI) is imported when the module opens;
* every call the Logic makes into ``NeonatalClassifyLib.mrml_logic`` names a
  function that exists there, with keyword arguments that function accepts;
* every ``parameterNode.X`` the widget reads or writes is a parameter-node field;
* every button handler shows errors as messages (``slicer.util.tryWithErrorDisplay``).
"""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODULE_PY = REPO / "NeonatalClassify" / "NeonatalClassify.py"


@pytest.fixture(scope="module")
def tree() -> ast.Module:
    return ast.parse(MODULE_PY.read_text(), filename=str(MODULE_PY))


def _classes(tree) -> dict[str, ast.ClassDef]:
    return {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}


def _methods(cls: ast.ClassDef) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)}


def _base_names(cls: ast.ClassDef) -> list[str]:
    return [b.id if isinstance(b, ast.Name) else ast.unparse(b) for b in cls.bases]


def _string_value(node) -> str:
    """Text of a string literal, also inside a call like _("...")."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Call) and node.args:
        return _string_value(node.args[0])
    return ""


def test_template_classes_and_methods(tree):
    classes = _classes(tree)
    expected = {
        "NeonatalClassify": (["ScriptedLoadableModule"], {"__init__"}),
        "NeonatalClassifyWidget": (["ScriptedLoadableModuleWidget", "VTKObservationMixin"],
                                   {"__init__", "setup", "cleanup", "enter", "exit", "onSceneStartClose",
                                    "onSceneEndClose", "initializeParameterNode", "setParameterNode"}),
        "NeonatalClassifyLogic": (["ScriptedLoadableModuleLogic"], {"__init__", "getParameterNode"}),
        "NeonatalClassifyTest": (["ScriptedLoadableModuleTest"], {"setUp", "runTest"}),
    }
    for name, (bases, methods) in expected.items():
        assert name in classes, f"class {name} missing"
        assert _base_names(classes[name]) == bases, f"{name} bases {_base_names(classes[name])}"
        missing = methods - set(_methods(classes[name]))
        assert not missing, f"{name} lacks {sorted(missing)}"
    test_methods = [m for m in _methods(classes["NeonatalClassifyTest"]) if m.startswith("test_")]
    assert test_methods, "NeonatalClassifyTest has no test_ method"
    run_test = ast.unparse(_methods(classes["NeonatalClassifyTest"])["runTest"])
    assert all(m in run_test for m in test_methods), "runTest does not call every test_ method"


def test_parameter_node_wrapper(tree):
    classes = _classes(tree)
    node = classes["NeonatalClassifyParameterNode"]
    assert any(isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in node.decorator_list)
    fields = {s.target.id: ast.unparse(s.annotation) for s in node.body if isinstance(s, ast.AnnAssign)}
    assert fields["inputVolume"] == "vtkMRMLScalarVolumeNode"
    assert fields["roiSegmentation"] == "vtkMRMLSegmentationNode"
    assert fields["modelId"] == "str"
    for ranged in ("heatmapOpacity", "heatmapThreshold"):
        assert "WithinRange(0.0, 1.0)" in fields[ranged], f"{ranged} needs a 0-1 range: {fields[ranged]}"
    assert fields["heatmapVolume"] == "vtkMRMLScalarVolumeNode"
    # the logic wraps the scripted module node in the typed wrapper
    get = _methods(classes["NeonatalClassifyLogic"])["getParameterNode"]
    assert "NeonatalClassifyParameterNode(super().getParameterNode())" in ast.unparse(get)


def test_module_metadata(tree):
    init = _methods(_classes(tree)["NeonatalClassify"])["__init__"]
    values = {}
    for stmt in ast.walk(init):
        if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Attribute):
            values[stmt.targets[0].attr] = stmt.value
    categories = [n.value for n in ast.walk(values["categories"]) if isinstance(n, ast.Constant)]
    assert "Neonatal" in categories, categories
    help_text = _string_value(values["helpText"]).lower()
    assert "synthetic" in help_text and "not" in help_text and "clinical" in help_text
    assert "demo model" in help_text


def test_no_heavy_imports_at_module_open(tree):
    top_level = set()
    for stmt in tree.body:
        if isinstance(stmt, ast.Import):
            top_level |= {a.name.split(".")[0] for a in stmt.names}
        elif isinstance(stmt, ast.ImportFrom):
            top_level.add((stmt.module or "").split(".")[0])
    assert not top_level & {"torch", "monai", "NeonatalClassifyLib", "NeonatalBrainLib", "numpy", "pandas"}, \
        f"imports at module open: {sorted(top_level)}"
    # the dependency installer asks before installing and never runs from setup()
    widget = _classes(tree)["NeonatalClassifyWidget"]
    setup_src = ast.unparse(_methods(widget)["setup"])
    assert "ensureDependencies" not in setup_src and "pip" not in setup_src
    ensure = ast.unparse(_methods(_classes(tree)["NeonatalClassifyLogic"])["ensureDependencies"])
    assert "ensure_packages" in ensure  # the shared installer (asks first; tested in test_slicer_packages.py)


def test_logic_calls_exist_in_mrml_logic(tree):
    """Every ``self._lib().f(...)`` / ``lib.f(...)`` names a mrml_logic function accepting those keywords."""
    from NeonatalClassifyLib import mrml_logic

    logic = _classes(tree)["NeonatalClassifyLogic"]
    calls = []
    for node in ast.walk(logic):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = ast.unparse(node.func.value)
            if owner in ("self._lib()", "lib"):
                calls.append(node)
    assert len(calls) >= 12, f"only {len(calls)} calls into mrml_logic found"
    for call in calls:
        name = call.func.attr
        assert hasattr(mrml_logic, name), f"mrml_logic has no {name}"
        params = inspect.signature(getattr(mrml_logic, name)).parameters
        accepts_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        positional = [p for p in params.values()
                      if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        assert len(call.args) <= len(positional), f"{name}: {len(call.args)} positional arguments"
        for kw in call.keywords:
            assert kw.arg in params or accepts_kwargs, f"mrml_logic.{name} takes no keyword {kw.arg!r}"


def test_widget_uses_only_parameter_node_fields(tree):
    classes = _classes(tree)
    fields = {s.target.id for s in classes["NeonatalClassifyParameterNode"].body if isinstance(s, ast.AnnAssign)}
    wrapper_methods = {"StartModify", "EndModify", "connectGui", "disconnectGui", "parameterNode"}
    widget = classes["NeonatalClassifyWidget"]
    used = set()
    for func in _methods(widget).values():
        aliases = {"self._parameterNode"}
        for node in ast.walk(func):
            if isinstance(node, ast.Assign) and ast.unparse(node.value) == "self._parameterNode":
                aliases |= {ast.unparse(t) for t in node.targets}
        for node in ast.walk(func):
            if isinstance(node, ast.Attribute) and ast.unparse(node.value) in aliases:
                used.add(node.attr)
    unknown = used - fields - wrapper_methods
    assert not unknown, f"widget uses parameter-node attributes that are no fields: {sorted(unknown)}"
    assert {"inputVolume", "roiSegmentation", "heatmapOpacity", "heatmapThreshold", "heatmapVolume"} <= used


def test_button_handlers_show_errors_as_messages(tree):
    widget = _classes(tree)["NeonatalClassifyWidget"]
    methods = _methods(widget)
    connected = []
    for node in ast.walk(methods["setup"]):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "connect" \
                and len(node.args) == 2 and "clicked" in _string_value(node.args[0]):
            connected.append(ast.unparse(node.args[1]).removeprefix("self."))
    assert len(connected) >= 12, connected
    for name in connected:
        assert name in methods, f"handler {name} missing"
        src = ast.unparse(methods[name])
        # directly, or through self._run (which wraps tryWithErrorDisplay), or trivially safe
        assert "tryWithErrorDisplay" in src or "self._run(" in src or name in ("onCancel", "refreshModelList") \
            or len(methods[name].body) <= 3, f"{name} does not show errors as messages"
    assert "tryWithErrorDisplay" in ast.unparse(methods["_run"])
