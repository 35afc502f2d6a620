"""Static check of a Slicer scripted module's ``.ui`` file against its ``.py`` (no Slicer needed).

For a module ``M`` (``M/M.py`` + ``M/Resources/UI/M.ui``) it checks that

1. the ``.ui`` parses (XML, then Qt's ``QUiLoader`` from PySide6 on the offscreen
   platform; Slicer/CTK classes Qt does not know are built as ``QWidget``, their
   dynamic properties stay readable);
2. every ``self.ui.<name>`` the module uses (also through an alias ``ui = self.ui``
   and ``getattr(self.ui, "<name>")``) names an object of the ``.ui``
   (``slicer.util.childWidgetVariables`` exposes every named QObject: widgets,
   layouts, the top-level widget);
3. every ``SlicerParameterName`` dynamic property names a field of the class
   decorated with ``@parameterNodeWrapper`` (its annotated class attributes;
   a dotted name ``pack.field`` is followed into a ``@parameterPack`` class of
   the same file);
4. a widget bound to a parameter has a matching kind: a MRML node selector
   (``qMRMLNodeComboBox``) is bound to a field annotated with MRML node classes
   and each of its ``nodeTypes`` is one of them or a subclass (checked with
   slicer-core's classes when installed, else by name); any other widget is
   bound to a non-node field;
5. every ``self.resourcePath("...")`` the module loads exists under ``M/Resources``.

Use: ``python Testing/uicheck.py [MODULE_DIR ...]`` (exit status 1 on problems),
or :func:`check_module` / :func:`check_files` from tests.
"""
from __future__ import annotations

import ast
import os
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

PARAMETER_PROPERTY = "SlicerParameterName"
#: Widget classes that select MRML nodes (bound to node-typed parameters).
NODE_SELECTORS = ("qMRMLNodeComboBox", "qMRMLCheckableNodeComboBox")


@dataclass
class UIReport:
    """Outcome of one check; ``problems`` is empty when the module passes."""

    ui_path: Path
    py_path: Path
    ui_names: set[str] = field(default_factory=set)
    used_names: dict[str, int] = field(default_factory=dict)  # name -> first line used
    parameter_class: str | None = None
    parameter_fields: set[str] = field(default_factory=set)
    bindings: dict[str, str] = field(default_factory=dict)  # widget name -> SlicerParameterName
    widget_classes: dict[str, str] = field(default_factory=dict)  # widget name -> class in the .ui
    node_types: dict[str, list[str]] = field(default_factory=dict)  # node selector -> nodeTypes
    kind_mismatches: list[tuple[str, str]] = field(default_factory=list)  # (widget, parameter)
    missing_ui_names: list[str] = field(default_factory=list)
    unknown_parameters: list[tuple[str, str]] = field(default_factory=list)  # (widget, parameter)
    missing_resources: list[str] = field(default_factory=list)
    qt_warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        head = f"{self.py_path.name} + {self.ui_path.name}: "
        if self.ok:
            return head + (f"OK ({len(self.used_names)} self.ui names, {len(self.bindings)} parameter bindings "
                           f"to {self.parameter_class})")
        return head + f"{len(self.problems)} problem(s)\n  " + "\n  ".join(self.problems)


# ----------------------------------------------------------------------------- .ui side
def _qt_app():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    return QApplication.instance() or QApplication([])


def widget_classes(ui_path: Path) -> dict[str, str]:
    """Widget name -> class name as written in the ``.ui`` (before Qt substitutes unknown classes)."""
    root = ET.parse(ui_path).getroot()
    return {w.get("name"): w.get("class") for w in root.iter("widget") if w.get("name")}


def load_ui(ui_path: Path) -> tuple[set[str], dict[str, str], list[str], dict[str, list[str]]]:
    """(object names, widget name -> SlicerParameterName, Qt warnings, widget name -> nodeTypes)
    of a ``.ui`` file.

    Raises ``ValueError`` naming the file and the problem if it does not parse.
    """
    ui_path = Path(ui_path)
    try:
        root = ET.parse(ui_path).getroot()
    except ET.ParseError as exc:
        raise ValueError(f"{ui_path}: not well-formed XML: {exc}") from None
    if root.tag != "ui" or root.find("widget") is None:
        raise ValueError(f"{ui_path}: not a Qt Designer file (no <ui><widget>)")

    _qt_app()
    from PySide6.QtCore import QFile, QIODevice, QObject, qInstallMessageHandler
    from PySide6.QtUiTools import QUiLoader

    warnings: list[str] = []
    previous = qInstallMessageHandler(lambda _mode, _ctx, msg: warnings.append(msg))
    try:
        loader = QUiLoader()
        qfile = QFile(str(ui_path))
        if not qfile.open(QIODevice.ReadOnly):
            raise ValueError(f"{ui_path}: cannot be opened")
        try:
            widget = loader.load(qfile)
        finally:
            qfile.close()
        if widget is None:
            raise ValueError(f"{ui_path}: QUiLoader could not build it: {loader.errorString()}")
        objects = [widget] + widget.findChildren(QObject)
        names = {o.objectName() for o in objects if o.objectName()}
        bindings, node_types = {}, {}
        for o in objects:
            value = o.property(PARAMETER_PROPERTY)
            if value is not None:
                bindings[o.objectName() or f"<unnamed {type(o).__name__}>"] = str(value)
            types = o.property("nodeTypes")
            if types is not None and o.objectName():
                node_types[o.objectName()] = [str(t) for t in (types if isinstance(types, (list, tuple)) else [types])]
        widget.deleteLater()
    finally:
        qInstallMessageHandler(previous)
    return names, bindings, warnings, node_types


# ----------------------------------------------------------------------------- .py side
def _decorator_name(node: ast.expr) -> str:
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return ""


def _class_fields(cls: ast.ClassDef) -> dict[str, ast.expr]:
    return {stmt.target.id: stmt.annotation for stmt in cls.body
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)}


def _annotation_names(annotation: ast.expr) -> set[str]:
    return {n.id for n in ast.walk(annotation) if isinstance(n, ast.Name)} | \
           {n.attr for n in ast.walk(annotation) if isinstance(n, ast.Attribute)}


def parse_module(py_path: Path) -> dict:
    """Facts from a module's source: ``ui_names`` (name -> line), ``wrapper`` (class name or None),
    ``fields`` (name -> annotation), ``packs`` (class name -> fields), ``resources`` (name -> line)."""
    py_path = Path(py_path)
    try:
        tree = ast.parse(py_path.read_text(encoding="utf-8"), filename=str(py_path))
    except SyntaxError as exc:
        raise ValueError(f"{py_path}: syntax error line {exc.lineno}: {exc.msg}") from None

    def is_self_ui(node: ast.expr) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "ui"
                and isinstance(node.value, ast.Name) and node.value.id == "self")

    aliases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and is_self_ui(node.value):
            aliases |= {t.id for t in node.targets if isinstance(t, ast.Name)}

    def is_ui(node: ast.expr) -> bool:
        return is_self_ui(node) or (isinstance(node, ast.Name) and node.id in aliases)

    used: dict[str, int] = {}
    resources: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_ui(node.value):
            used.setdefault(node.attr, node.lineno)
        elif isinstance(node, ast.Call):
            func = node.func
            if (isinstance(func, ast.Name) and func.id == "getattr" and len(node.args) >= 2
                    and is_ui(node.args[0]) and isinstance(node.args[1], ast.Constant)
                    and isinstance(node.args[1].value, str)):
                used.setdefault(node.args[1].value, node.lineno)
            if (isinstance(func, ast.Attribute) and func.attr == "resourcePath" and node.args
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                resources.setdefault(node.args[0].value, node.lineno)

    wrapper, fields, packs = None, {}, {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            decorators = {_decorator_name(d) for d in node.decorator_list}
            if "parameterNodeWrapper" in decorators and wrapper is None:
                wrapper, fields = node.name, _class_fields(node)
            if "parameterPack" in decorators:
                packs[node.name] = _class_fields(node)
    return {"ui_names": used, "wrapper": wrapper, "fields": fields, "packs": packs, "resources": resources}


def _mrml_class_accepts(node_type: str, annotated: set[str]) -> bool:
    """Whether a selector offering ``node_type`` nodes only yields instances of ``annotated`` classes."""
    if node_type in annotated:
        return True
    try:
        import slicer
    except ImportError:
        return False
    cls = getattr(slicer, node_type, None)
    return cls is not None and any(
        isinstance(getattr(slicer, a, None), type) and issubclass(cls, getattr(slicer, a)) for a in annotated)


def _parameter_known(name: str, fields: dict[str, ast.expr], packs: dict[str, dict]) -> bool:
    head, _, rest = name.partition(".")
    if head not in fields:
        return False
    if not rest:
        return True
    for pack_name in _annotation_names(fields[head]):
        if pack_name in packs:
            return _parameter_known(rest, packs[pack_name], packs)
    return False


# ----------------------------------------------------------------------------- checks
def check_files(ui_path: Path, py_path: Path, resources_dir: Path | None = None) -> UIReport:
    """Check one ``.ui`` against one module ``.py`` (see the module docstring)."""
    report = UIReport(Path(ui_path), Path(py_path))
    try:
        report.ui_names, report.bindings, report.qt_warnings, report.node_types = load_ui(report.ui_path)
        report.widget_classes = widget_classes(report.ui_path)
    except ValueError as exc:
        report.problems.append(f"UI does not parse: {exc}")
        return report
    try:
        facts = parse_module(report.py_path)
    except ValueError as exc:
        report.problems.append(f"module does not parse: {exc}")
        return report
    report.used_names = facts["ui_names"]
    report.parameter_class = facts["wrapper"]
    report.parameter_fields = set(facts["fields"])

    for name, line in sorted(report.used_names.items(), key=lambda kv: kv[1]):
        if name not in report.ui_names:
            report.missing_ui_names.append(name)
            report.problems.append(f"self.ui.{name} (line {line}) is not in {report.ui_path.name}")
    if report.bindings and report.parameter_class is None:
        report.problems.append(f"{report.ui_path.name} binds {len(report.bindings)} widgets with "
                               f"{PARAMETER_PROPERTY} but {report.py_path.name} has no @parameterNodeWrapper class")
    elif report.bindings:
        for widget, parameter in sorted(report.bindings.items()):
            if not _parameter_known(parameter, facts["fields"], facts["packs"]):
                report.unknown_parameters.append((widget, parameter))
                report.problems.append(f"widget '{widget}' has {PARAMETER_PROPERTY}='{parameter}', which is not a "
                                       f"field of {report.parameter_class}")
            elif "." not in parameter:
                problem = _kind_problem(widget, report.widget_classes.get(widget, ""),
                                        report.node_types.get(widget, []), parameter, facts["fields"][parameter])
                if problem:
                    report.kind_mismatches.append((widget, parameter))
                    report.problems.append(problem)
    if resources_dir is not None:
        for resource, line in sorted(facts["resources"].items(), key=lambda kv: kv[1]):
            if not (Path(resources_dir) / resource).exists():
                report.missing_resources.append(resource)
                report.problems.append(f"resourcePath('{resource}') (line {line}) does not exist in {resources_dir}")
    return report


def _kind_problem(widget: str, widget_class: str, node_types: list[str], parameter: str,
                  annotation: ast.expr) -> str | None:
    annotated = {n for n in _annotation_names(annotation) if n.startswith("vtkMRML")}
    if widget_class in NODE_SELECTORS:
        if not annotated:
            return (f"node selector '{widget}' ({widget_class}) is bound to '{parameter}', "
                    f"which is not annotated with a MRML node class")
        wrong = [t for t in node_types if not _mrml_class_accepts(t, annotated)]
        if wrong:
            return (f"node selector '{widget}' offers {wrong}, which '{parameter}' "
                    f"({', '.join(sorted(annotated))}) does not accept")
    elif annotated:
        return (f"widget '{widget}' ({widget_class}) is bound to node parameter '{parameter}' "
                f"({', '.join(sorted(annotated))}) but is not a node selector")
    return None


def module_paths(module_dir: Path) -> tuple[Path, Path]:
    """(``.py``, ``.ui``) of the scripted module in ``module_dir`` (named after the folder)."""
    module_dir = Path(module_dir)
    name = module_dir.name
    return module_dir / f"{name}.py", module_dir / "Resources" / "UI" / f"{name}.ui"


def check_module(module_dir: Path) -> UIReport:
    """Check ``<dir>/<dir>.py`` against ``<dir>/Resources/UI/<dir>.ui``."""
    py_path, ui_path = module_paths(module_dir)
    return check_files(ui_path, py_path, resources_dir=Path(module_dir) / "Resources")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = Path(__file__).resolve().parent.parent
    dirs = [Path(a) for a in argv] or [root / "NeonatalVessels", root / "NeonatalClassify"]
    status = 0
    for d in dirs:
        py_path, ui_path = module_paths(d)
        if not (py_path.is_file() and ui_path.is_file()):
            print(f"{d.name}: skipped ({py_path.name} or {ui_path.name} missing)")
            continue
        report = check_module(d)
        print(report.summary())
        status |= 0 if report.ok else 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
