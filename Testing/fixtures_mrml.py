"""Headless MRML fixtures on slicer-core (no Slicer application, no Qt).

``mrml_scene`` (function scope) gives each test a fresh, real ``vtkMRMLScene``
wired like Slicer's own start-up (see docs/architecture.md and
/work/shared/notes/platform-facts.md):

* a ``vtkMRMLCrosshairNode`` named "default";
* a ``vtkSlicerApplicationLogic`` on the scene, with its colour logic's default
  colour nodes and empty slice/view logic collections;
* module logics registered with the application logic, in this order:
  ``Colors`` (first, so volumes get a colour table; it is the application
  logic's ``vtkMRMLColorLogic`` -- ``vtkSlicerColorLogic`` needs Slicer's home
  directory for its colour files), ``Volumes``,
  ``Segmentations`` (``SetMRMLScene`` before any segment is made: it registers
  the representation converters), ``Markups``, ``Tables``,
  ``SubjectHierarchy``, ``Data``;
* ``slicer.mrmlScene`` set to the scene and ``slicer.modules`` set to a namespace
  whose ``<name>.logic()`` return those logics (``volumes``, ``segmentations``,
  ``markups``, ``tables``, ``colors``, ``subjecthierarchy``, ``data``), so
  ``slicer.util`` helpers (``getNode``, ``addVolumeFromArray``,
  ``updateSegmentBinaryLabelmapFromArray`` ...) work.  Both attributes are
  restored (or removed) after the test and the scene is cleared.

The fixture returns an :class:`MRMLContext` with ``.scene``, ``.app_logic``,
``.colors_logic``, ``.volumes_logic``, ``.segmentations_logic``,
``.markups_logic``, ``.tables_logic``, ``.sh_logic``, ``.data_logic`` and
``.logic(name)`` (by Slicer module name, e.g. ``"Volumes"``).  ``mrml_logics``
is an alias fixture returning the same object.

Cost, measured on the 2-core development machine: ``import slicer`` 1-3 s and
the first scene about 1 s (once per session), then about 40 ms per scene, so
no session-wide cache is used: each test gets independent logics and nothing
leaks between tests.  For one scene shared by several tests (a module-scoped
fixture), use the context manager ``mrml_context()`` directly.

Tests using these fixtures are skipped (with the reason) where slicer-core is
not installed.
"""
from __future__ import annotations

import contextlib
import types
from dataclasses import dataclass, field
from typing import Any

import pytest

__all__ = ["MRMLContext", "make_mrml_context", "mrml_context", "mrml_scene", "mrml_logics"]

#: (Slicer module name, slicer.modules attribute, logic class name, MRMLContext attribute)
_MODULE_LOGICS = (
    ("Colors", "colors", None, "colors_logic"),  # the application logic's own colour logic
    ("Volumes", "volumes", "vtkSlicerVolumesLogic", "volumes_logic"),
    ("Segmentations", "segmentations", "vtkSlicerSegmentationsModuleLogic", "segmentations_logic"),
    ("Markups", "markups", "vtkSlicerMarkupsLogic", "markups_logic"),
    ("Tables", "tables", "vtkSlicerTablesLogic", "tables_logic"),
    ("SubjectHierarchy", "subjecthierarchy", "vtkSlicerSubjectHierarchyModuleLogic", "sh_logic"),
    ("Data", "data", "vtkSlicerDataModuleLogic", "data_logic"),
)


class _ModuleStub:
    """Stands in for ``slicer.modules.<name>``: only ``logic()``, ``name`` and ``title``."""

    def __init__(self, name: str, logic: Any):
        self.name = name
        self.title = name
        self._logic = logic

    def logic(self):
        return self._logic


@dataclass
class MRMLContext:
    """A headless scene and its logics (see the module docstring)."""

    scene: Any
    app_logic: Any
    colors_logic: Any = None
    volumes_logic: Any = None
    segmentations_logic: Any = None
    markups_logic: Any = None
    tables_logic: Any = None
    sh_logic: Any = None
    data_logic: Any = None
    by_name: dict = field(default_factory=dict)

    def logic(self, module_name: str):
        """Module logic by Slicer module name ("Volumes", "Segmentations", ...)."""
        return self.by_name[module_name]

    @property
    def modules(self) -> types.SimpleNamespace:
        """Namespace with ``<lowercase name>.logic()`` accessors (what ``slicer.modules`` gets)."""
        ns = types.SimpleNamespace()
        for module_name, attr, _cls, _ctx in _MODULE_LOGICS:
            setattr(ns, attr, _ModuleStub(module_name, self.by_name[module_name]))
        return ns


def make_mrml_context():
    """Build a scene + application logic + module logics (no global state touched)."""
    import slicer
    import vtk

    scene = slicer.vtkMRMLScene()
    crosshair = slicer.vtkMRMLCrosshairNode()
    crosshair.SetName("default")
    crosshair.SetSingletonTag("default")
    scene.AddNode(crosshair)

    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    app_logic.GetColorLogic().SetMRMLScene(scene)
    app_logic.GetColorLogic().AddDefaultColorNodes()
    app_logic.SetSliceLogics(vtk.vtkCollection())
    app_logic.SetViewLogics(vtk.vtkCollection())

    ctx = MRMLContext(scene=scene, app_logic=app_logic)
    for module_name, _attr, class_name, ctx_attr in _MODULE_LOGICS:
        if class_name is None:
            logic = app_logic.GetColorLogic()  # already on the scene, default colour nodes added
        else:
            logic = getattr(slicer, class_name)()
            logic.SetMRMLApplicationLogic(app_logic)
            logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(module_name, logic)
        setattr(ctx, ctx_attr, logic)
        ctx.by_name[module_name] = logic
    return ctx


_MISSING = object()


@contextlib.contextmanager
def mrml_context():
    """Context manager behind :func:`mrml_scene`: installs ``slicer.mrmlScene``/``slicer.modules``
    for the block and restores (or removes) them afterwards."""
    import slicer

    ctx = make_mrml_context()
    saved = {name: getattr(slicer, name, _MISSING) for name in ("mrmlScene", "modules")}
    slicer.mrmlScene = ctx.scene
    slicer.modules = ctx.modules
    try:
        yield ctx
    finally:
        for name, value in saved.items():
            if value is _MISSING:
                if hasattr(slicer, name):
                    delattr(slicer, name)
            else:
                setattr(slicer, name, value)
        # detach the logics first: clearing a large scene then fires no logic callbacks
        for name in ("Data", "SubjectHierarchy", "Tables", "Markups", "Segmentations", "Volumes", "Colors"):
            ctx.logic(name).SetMRMLScene(None)
        ctx.scene.Clear(1)
        ctx.app_logic.SetMRMLScene(None)


@pytest.fixture
def mrml_scene():
    """A fresh headless MRML scene with Slicer's module logics; returns :class:`MRMLContext`.

    Sets ``slicer.mrmlScene`` and ``slicer.modules`` for the test and restores them after.
    """
    pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
    with mrml_context() as ctx:
        yield ctx


@pytest.fixture
def mrml_logics(mrml_scene):
    """Alias of :func:`mrml_scene` (same :class:`MRMLContext`) for readability in tests."""
    return mrml_scene
