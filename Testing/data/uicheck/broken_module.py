"""Fixture for Testing/test_ui_static.py: a module whose .ui (broken.ui) does not match.  Parsed, never imported.

Expected problems: self.ui.runButton, ui.statusLabel and getattr(self.ui, "outputSelector") are not in
the .ui; SlicerParameterName 'thresholdHU' (case) and 'options.iterations' are not fields; the
input selector offers vtkMRMLModelNode for a scalar-volume field; a node selector is bound to the
float 'maskThreshold'; a line edit is bound to the table node 'outputTable'; the resource
UI/missing.ui does not exist.
"""
import slicer
from slicer.parameterNodeWrapper import parameterNodeWrapper, parameterPack


@parameterPack
class BrokenOptions:
    smoothingIterations: int = 2


@parameterNodeWrapper
class BrokenParameterNode:
    inputVolume: slicer.vtkMRMLScalarVolumeNode
    thresholdHu: float = 0.0
    options: BrokenOptions
    maskThreshold: float = 0.5
    outputTable: slicer.vtkMRMLTableNode


class BrokenWidget:
    def setup(self):
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/missing.ui"))
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        self.ui.applyButton.connect("clicked(bool)", self.onApply)
        self.ui.runButton.connect("clicked(bool)", self.onApply)
        ui = self.ui
        ui.statusLabel.text = ""
        getattr(self.ui, "outputSelector").setMRMLScene(slicer.mrmlScene)

    def onApply(self):
        self.ui.inputSelector.enabled = True
