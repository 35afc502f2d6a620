"""Fixture for Testing/test_ui_static.py: a module whose .ui (good.ui) matches.  Parsed, never imported."""
from typing import Annotated

import slicer
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper, parameterPack


@parameterPack
class GoodOptions:
    smoothingIterations: int = 2


@parameterNodeWrapper
class GoodParameterNode:
    inputVolume: slicer.vtkMRMLScalarVolumeNode
    thresholdHu: Annotated[float, WithinRange(-100.0, 100.0)] = 0.0
    options: GoodOptions
    mask: slicer.vtkMRMLScalarVolumeNode  # the selector offers a subclass (labelmaps): allowed
    outputTable: slicer.vtkMRMLTableNode  # no widget: allowed


class GoodWidget:
    def setup(self):
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/good.ui"))
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        self.ui.applyButton.connect("clicked(bool)", self.onApply)
        ui = self.ui
        ui.inputsCollapsibleButton.collapsed = False
        getattr(self.ui, "inputSelector").setMRMLScene(slicer.mrmlScene)
        self.ui.mainLayout.addStretch(1)

    def onApply(self):
        self.ui.thresholdSliderWidget.value = 1.0
