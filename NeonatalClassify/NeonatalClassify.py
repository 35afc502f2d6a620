"""NeonatalClassify: deep grey-matter injury classification of neonatal T1 in 3D Slicer.

Module, widget, logic and test classes following Slicer's scripted-module
template (``Utilities/Templates/Modules/Scripted/TemplateKey.py``): a
``parameterNodeWrapper`` parameter node bound to the ``.ui`` through
``SlicerParameterName`` properties, a widget that only binds and calls the
logic, and a logic that delegates to :mod:`NeonatalClassifyLib.mrml_logic`
(which also runs headless on slicer-core).

Heavy dependencies (PyTorch, MONAI) are installed on first use after the user
confirms, never when the module opens.
"""
from __future__ import annotations

import json
import os
import pathlib
import sys
from typing import Annotated

import ctk
import qt
import vtk

# Run from a source checkout (module folder added to Slicer's "Additional module paths", no CMake
# build): the shared package NeonatalBrainLib sits one folder up.  In a built extension it is
# installed beside the module and this does nothing.
_EXTENSION_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(_EXTENSION_ROOT, "NeonatalBrainLib")) and _EXTENSION_ROOT not in sys.path:
    sys.path.append(_EXTENSION_ROOT)

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin
from slicer.parameterNodeWrapper import (
    Choice,
    WithinRange,
    parameterNodeWrapper,
)

from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode

#: Architectures the engine can train (MONAI networks, no weight download).
ARCHITECTURES = ("resnet18", "densenet121", "efficientnet-b0")

#: Python packages needed for ROI extraction (besides what Slicer ships: numpy, SimpleITK, vtk).
BASE_REQUIREMENTS = ("scipy>=1.11", "pandas>=2.0", "matplotlib>=3.7", "tqdm>=4.66",
                     "statsmodels>=0.14", "scikit-learn>=1.3")
#: PyTorch version the extension is tested with; MONAI builds the networks.
TORCH_REQUIREMENT = "torch==2.13.0"
DEEP_LEARNING_REQUIREMENTS = ("monai>=1.5",)


#
# NeonatalClassify
#


class NeonatalClassify(ScriptedLoadableModule):
    """Module description (title, category, help) for Slicer's module list."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Neonatal Classify")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Neonatal")]
        self.parent.dependencies = []
        self.parent.contributors = ["NeonatalBrain developers"]
        self.parent.helpText = _("""
Deep grey-matter injury classification on a neonatal T1-weighted MRI.
<ol>
<li><b>Extract ROIs</b>: globus pallidus, putamen, caudate and thalamus (left and right) by atlas
registration, as a segmentation you can correct in the Segment Editor; the classifier uses your edits.</li>
<li><b>Classify</b> with a model from the local catalogue: probability of injury, predicted class,
threshold, a per-slice table and the Grad-CAM heatmap over the T1 (opacity and lower threshold).</li>
<li><b>Cohort</b> tab: train, evaluate, compare (DeLong) and fit a nomogram on a cohort CSV; ROC,
calibration and decision curves and the nomogram are shown and saved.</li>
</ol>
<p><b>The bundled demo model was trained on SYNTHETIC phantom data only. It is a software
demonstration, not a medical device, and must not be used for clinical decisions.</b></p>
<p>Nothing is downloaded at run time except, after your confirmation, the PyTorch and MONAI Python
packages on first use.</p>
""")
        self.parent.acknowledgementText = _("""
Built with 3D Slicer's scripted module template, MONAI, PyTorch and SimpleITK.
""")


#
# NeonatalClassifyParameterNode
#


@parameterNodeWrapper
class NeonatalClassifyParameterNode:
    """
    The parameters of the module (saved with the scene).

    inputVolume - neonatal T1 volume.
    roiSegmentation - deep grey-matter ROI segmentation (from "Extract ROIs", possibly edited).
    atlas - atlas for ROI extraction: "" = the model's atlas, else a built-in name or a folder.
    modelId - catalogue id of the selected model.
    heatmapOpacity - foreground opacity of the Grad-CAM heatmap (0-1).
    heatmapThreshold - heatmap values below this fraction of its maximum are transparent (0-1).
    heatmapVolume, resultTable, sliceTable - outputs of the last classification.
    exportDirectory, export* - Export section.
    cohortCsv, validationCsv, cohortOutputDirectory, architecture, epochs, seed,
    useCohortLabels (ROIs from the cohort's labels instead of the atlas), clinicalVariables - Cohort tab.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    roiSegmentation: vtkMRMLSegmentationNode
    atlas: str = ""
    modelId: str = ""
    heatmapOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    heatmapThreshold: Annotated[float, WithinRange(0.0, 1.0)] = 0.2
    heatmapVolume: vtkMRMLScalarVolumeNode
    resultTable: vtkMRMLTableNode
    sliceTable: vtkMRMLTableNode
    exportDirectory: pathlib.Path
    exportResults: bool = True
    exportHeatmap: bool = True
    exportSegmentation: bool = True
    exportScreenshots: bool = True
    cohortCsv: pathlib.Path
    validationCsv: pathlib.Path
    cohortOutputDirectory: pathlib.Path
    architecture: Annotated[str, Choice(list(ARCHITECTURES))] = "resnet18"
    epochs: Annotated[int, WithinRange(1, 500)] = 8
    seed: Annotated[int, WithinRange(0, 2147483647)] = 0
    useCohortLabels: bool = False
    clinicalVariables: str = "birthweight_g"


def _path_or_none(path) -> pathlib.Path | None:
    """A parameter-node path, or None when unset (empty or '.')."""
    if path is None or str(path) in ("", "."):
        return None
    return pathlib.Path(path)


#
# NeonatalClassifyWidget
#


class NeonatalClassifyWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """GUI: binds the .ui to the parameter node and calls :class:`NeonatalClassifyLogic`."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._lastOutputs = None
        self._cohortProgress = None
        self._cohortFigures = {}
        self._lastPredictionsCsv = None
        self._lastOverlay = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/NeonatalClassify.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = NeonatalClassifyLogic()

        self.ui.cohortCsvPathLineEdit.filters = ctk.ctkPathLineEdit.Files
        self.ui.cohortCsvPathLineEdit.nameFilters = ["Cohort CSV (*.csv)"]
        self.ui.validationCsvPathLineEdit.filters = ctk.ctkPathLineEdit.Files
        self.ui.validationCsvPathLineEdit.nameFilters = ["Cohort CSV (*.csv)"]
        self.ui.sliceTableView.setMRMLScene(slicer.mrmlScene)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.extractRoisButton.connect("clicked(bool)", self.onExtractRois)
        self.ui.editRoisButton.connect("clicked(bool)", self.onEditRois)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelSelected)
        self.ui.viewModelCardButton.connect("clicked(bool)", self.onViewModelCard)
        self.ui.importModelButton.connect("clicked(bool)", self.onImportModel)
        self.ui.refreshModelsButton.connect("clicked(bool)", self.refreshModelList)
        self.ui.classifyButton.connect("clicked(bool)", self.onClassify)
        self.ui.exportButton.connect("clicked(bool)", self.onExport)
        self.ui.trainButton.connect("clicked(bool)", self.onTrain)
        self.ui.evaluateButton.connect("clicked(bool)", self.onEvaluate)
        self.ui.compareButton.connect("clicked(bool)", self.onCompare)
        self.ui.nomogramButton.connect("clicked(bool)", self.onNomogram)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.showFigureButton.connect("clicked(bool)", self.onShowFigure)

        self.refreshModelList()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode and not firstVolumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode: NeonatalClassifyParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._selectModelInCombo(self._parameterNode.modelId)
            self.onModelSelected()  # stores the combo's model in the parameter node and updates the buttons

    # ------------------------------------------------------------------ state
    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if not p:
            return
        hasInput = bool(p.inputVolume)
        hasModel = bool(self.ui.modelComboBox.currentData)
        self.ui.extractRoisButton.enabled = hasInput
        self.ui.editRoisButton.enabled = hasInput and bool(p.roiSegmentation)
        self.ui.classifyButton.enabled = hasInput and hasModel
        self.ui.classifyButton.toolTip = (_("Classify the T1 with the selected model") if hasInput and hasModel
                                          else _("Select a T1 volume and a model"))
        self.ui.exportButton.enabled = bool(p.heatmapVolume) and _path_or_none(p.exportDirectory) is not None
        # re-apply the overlay only when the heatmap, its opacity or its threshold changed
        overlay = (p.heatmapVolume.GetID() if p.heatmapVolume else None, p.heatmapOpacity, p.heatmapThreshold)
        if p.heatmapVolume and p.inputVolume and overlay != self._lastOverlay:
            self._lastOverlay = overlay
            self.logic.setHeatmapOverlay(p.inputVolume, p.heatmapVolume, p.heatmapOpacity, p.heatmapThreshold)

    def _selectModelInCombo(self, modelId: str) -> None:
        index = self.ui.modelComboBox.findData(modelId) if modelId else -1
        if index >= 0:
            self.ui.modelComboBox.currentIndex = index

    def refreshModelList(self) -> None:
        """Fill the model selectors from the local catalogue (demo model + user models)."""
        current = self._parameterNode.modelId if self._parameterNode else ""
        entries = []
        with slicer.util.tryWithErrorDisplay(_("Failed to read the model catalogue."), waitCursor=True):
            entries = self.logic.listModels()
        for combo in (self.ui.modelComboBox, self.ui.compareModelComboBox):
            wasBlocked = combo.blockSignals(True)
            combo.clear()
            for entry in entries:
                combo.addItem(entry["label"], entry["id"])
            combo.blockSignals(wasBlocked)
        self._selectModelInCombo(current)
        self.onModelSelected()

    def onModelSelected(self, index=None) -> None:
        modelId = self.ui.modelComboBox.currentData or ""
        self.ui.modelInfoLabel.text = self.logic.modelSummary(modelId) if modelId else _("No model installed.")
        if self._parameterNode and self._parameterNode.modelId != modelId:
            self._parameterNode.modelId = modelId
        self._onParameterNodeModified()

    # ------------------------------------------------------------------ progress
    def _makeProgress(self, label):
        """A Progress that updates the progress bar, keeps the GUI responsive and honours Cancel."""
        from NeonatalBrainLib.progress import Progress

        def callback(fraction, stage):
            self.ui.cohortProgressBar.value = int(round(100 * fraction))
            text = f"{label}: {stage}" if stage else label
            self.ui.cohortStatusLabel.text = text
            slicer.util.showStatusMessage(text)
            slicer.app.processEvents()

        progress = Progress(callback)
        self._cohortProgress = progress
        self.ui.cancelButton.enabled = True
        self.ui.cohortProgressBar.value = 0
        return progress

    def _endProgress(self, message="") -> None:
        self._cohortProgress = None
        self.ui.cancelButton.enabled = False
        if message:
            self.ui.cohortStatusLabel.text = message
            slicer.util.showStatusMessage(message, 5000)

    def onCancel(self) -> None:
        if self._cohortProgress is not None:
            self._cohortProgress.cancel()
            self.ui.cohortStatusLabel.text = _("Cancelling at the next checkpoint...")

    def _run(self, errorMessage, label, function):
        """Run ``function(progress)`` with progress/cancel; errors shown as a message box."""
        from NeonatalBrainLib.progress import OperationCancelled

        progress = self._makeProgress(label)
        result = None
        try:
            with slicer.util.tryWithErrorDisplay(errorMessage, waitCursor=True):
                try:
                    result = function(progress)
                except OperationCancelled:
                    self._endProgress(_("{label} cancelled; nothing was kept.").format(label=label))
                    return None
        finally:
            if self._cohortProgress is progress:
                self._endProgress(_("{label} finished.").format(label=label) if result is not None else "")
        return result

    # ------------------------------------------------------------------ dependencies
    def _ensureDependencies(self, deepLearning: bool) -> bool:
        """Install missing Python packages after confirmation (first use only); False if declined."""
        try:
            self.logic.ensureDependencies(deepLearning=deepLearning, parent=slicer.util.mainWindow())
        except RuntimeError as exc:
            slicer.util.warningDisplay(str(exc), windowTitle=_("Neonatal Classify"))
            return False
        return True

    # ------------------------------------------------------------------ subject tab
    def onExtractRois(self) -> None:
        p = self._parameterNode
        if not self._ensureDependencies(deepLearning=False):
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to extract the ROIs."), waitCursor=True):
            seg = self.logic.extractRois(p.inputVolume, atlas=p.atlas or None,
                                         modelId=self.ui.modelComboBox.currentData or None,
                                         segmentationNode=None, progress=self._statusProgress(_("Extracting ROIs")))
            p.roiSegmentation = seg
            slicer.util.setSliceViewerLayers(background=p.inputVolume, fit=True)
            slicer.util.showStatusMessage(_("ROIs extracted: edit them in the Segment Editor if needed."), 5000)

    def _statusProgress(self, label):
        from NeonatalBrainLib.progress import Progress

        def callback(fraction, stage):
            slicer.util.showStatusMessage(f"{label} {int(100 * fraction)}%: {stage}")
            slicer.app.processEvents()

        return Progress(callback)

    def onEditRois(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Failed to open the Segment Editor."), waitCursor=False):
            slicer.util.selectModule("SegmentEditor")
            editor = slicer.modules.SegmentEditorWidget.editor
            editor.setSegmentationNode(p.roiSegmentation)
            if hasattr(editor, "setSourceVolumeNode"):
                editor.setSourceVolumeNode(p.inputVolume)
            else:  # Slicer < 5.2
                editor.setMasterVolumeNode(p.inputVolume)

    def onViewModelCard(self) -> None:
        modelId = self.ui.modelComboBox.currentData
        if not modelId:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to read the model card."), waitCursor=False):
            card = self.logic.modelCard(modelId)
            dialog = qt.QDialog(slicer.util.mainWindow())
            dialog.setWindowTitle(_("Model card: {model}").format(model=modelId))
            layout = qt.QVBoxLayout(dialog)
            header = qt.QLabel(self.logic.modelSummary(modelId))
            header.wordWrap = True
            layout.addWidget(header)
            text = qt.QPlainTextEdit()
            text.readOnly = True
            text.setPlainText(json.dumps(card, indent=2, sort_keys=True))
            layout.addWidget(text)
            buttons = qt.QDialogButtonBox(qt.QDialogButtonBox.Close)
            buttons.connect("rejected()", dialog.reject)
            layout.addWidget(buttons)
            dialog.resize(640, 560)
            dialog.exec_()

    def onImportModel(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(
            slicer.util.mainWindow(), _("Model folder (checkpoint + model card) to import"))
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to import the model."), waitCursor=True):
            modelId = self.logic.importModel(folder)
            self.refreshModelList()
            self._selectModelInCombo(modelId)
            slicer.util.infoDisplay(_("Model '{model}' was verified (checksum and architecture) and added to "
                                      "the catalogue.").format(model=modelId), windowTitle=_("Import model"))

    def onClassify(self) -> None:
        p = self._parameterNode
        if not self._ensureDependencies(deepLearning=True):
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to classify."), waitCursor=True):
            outputs = self.logic.classify(
                p.inputVolume, self.ui.modelComboBox.currentData, roiSegmentationNode=p.roiSegmentation,
                atlas=p.atlas or None, heatmapOpacity=p.heatmapOpacity, heatmapThreshold=p.heatmapThreshold,
                progress=self._statusProgress(_("Classifying")))
            self._lastOutputs = outputs
            self.ui.probabilityValueLabel.text = f"{outputs.probability:.3f}"
            self.ui.predictedClassValueLabel.text = outputs.predicted_class
            self.ui.thresholdValueLabel.text = f"{outputs.threshold:.3f}"
            self.ui.roiSourceValueLabel.text = outputs.roi_source
            self.ui.sliceTableView.setMRMLTableNode(outputs.slice_table_node)
            wasModifying = p.StartModify()
            p.roiSegmentation = outputs.roi_segmentation_node
            p.heatmapVolume = outputs.heatmap_node
            p.resultTable = outputs.summary_table_node
            p.sliceTable = outputs.slice_table_node
            p.EndModify(wasModifying)
            slicer.util.setSliceViewerLayers(background=p.inputVolume, foreground=outputs.heatmap_node,
                                             foregroundOpacity=p.heatmapOpacity, fit=True)
            self.logic.setHeatmapOverlay(p.inputVolume, outputs.heatmap_node, p.heatmapOpacity, p.heatmapThreshold)

    def onExport(self) -> None:
        from NeonatalBrainLib.outputs import OutputExistsError

        p = self._parameterNode
        folder = _path_or_none(p.exportDirectory)
        if folder is None or not p.heatmapVolume:
            return
        options = dict(results=p.exportResults, heatmap=p.exportHeatmap, segmentation=p.exportSegmentation,
                       screenshots=p.exportScreenshots)
        with slicer.util.tryWithErrorDisplay(_("Failed to export."), waitCursor=True):
            try:
                written = self.logic.export(folder, p.inputVolume, p.heatmapVolume, p.roiSegmentation,
                                            p.resultTable, p.sliceTable, overwrite=False, **options)
            except OutputExistsError as exc:
                if not slicer.util.confirmYesNoDisplay(
                        _("{problem}\n\nOverwrite these files?").format(problem=exc),
                        windowTitle=_("Export")):
                    return
                written = self.logic.export(folder, p.inputVolume, p.heatmapVolume, p.roiSegmentation,
                                            p.resultTable, p.sliceTable, overwrite=True, **options)
            if p.exportScreenshots:
                written += self.logic.captureViews(folder)
            slicer.util.infoDisplay(_("Wrote {n} files to {folder}.").format(n=len(written), folder=folder),
                                    detailedText="\n".join(str(w) for w in written), windowTitle=_("Export"))

    # ------------------------------------------------------------------ cohort tab
    def _cohortInputs(self):
        """(cohort CSV, output folder), or None after telling the user what is missing."""
        p = self._parameterNode
        csv = _path_or_none(p.cohortCsv)
        out = _path_or_none(p.cohortOutputDirectory)
        missing = ([_("a cohort CSV")] if csv is None or not csv.is_file() else []) + \
                  ([_("an output folder")] if out is None else [])
        if missing:
            slicer.util.warningDisplay(_("Choose {what} first.").format(what=_(" and ").join(missing)),
                                       windowTitle=_("Neonatal Classify"))
            return None
        return csv, out

    def _showCohortResult(self, title, result) -> None:
        self.ui.cohortResultsTextEdit.setPlainText(f"{title}\n" + json.dumps(result.summary, indent=2, default=str))
        self._cohortFigures = dict(result.figures)
        wasBlocked = self.ui.cohortFigureComboBox.blockSignals(True)
        self.ui.cohortFigureComboBox.clear()
        for name in self._cohortFigures:
            self.ui.cohortFigureComboBox.addItem(name)
        self.ui.cohortFigureComboBox.blockSignals(wasBlocked)
        if self._cohortFigures:
            self.onShowFigure()

    def onShowFigure(self) -> None:
        name = self.ui.cohortFigureComboBox.currentText
        node = self._cohortFigures.get(name)
        if node is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to show the figure."), waitCursor=False):
            self.logic.showFigure(node)

    def onTrain(self) -> None:
        if not self._ensureDependencies(deepLearning=True):
            return
        p = self._parameterNode
        if (inputs := self._cohortInputs()) is None:
            return
        csv, out = inputs
        result = self._run(_("Training failed."), _("Training"), lambda progress: self.logic.train(
            csv, out, architecture=p.architecture, epochs=p.epochs, seed=p.seed,
            atlas=p.atlas or None, progress=progress))
        if result is not None:
            self.refreshModelList()
            self._selectModelInCombo(result.summary.get("model_id", ""))
            self._showCohortResult(_("Training"), result)

    def onEvaluate(self) -> None:
        if not self._ensureDependencies(deepLearning=True):
            return
        if (inputs := self._cohortInputs()) is None:
            return
        csv, out = inputs
        modelId = self.ui.modelComboBox.currentData
        rois = "cohort" if self._parameterNode.useCohortLabels else "atlas"
        result = self._run(_("Evaluation failed."), _("Evaluation"),
                           lambda progress: self.logic.evaluate(csv, modelId, out, rois=rois, progress=progress))
        if result is not None:
            self._lastPredictionsCsv = (str(csv), modelId, result.files.get("predictions.csv"))
            self._showCohortResult(_("Evaluation"), result)

    def onCompare(self) -> None:
        if not self._ensureDependencies(deepLearning=True):
            return
        if (inputs := self._cohortInputs()) is None:
            return
        csv, out = inputs
        modelA = self.ui.modelComboBox.currentData
        modelB = self.ui.compareModelComboBox.currentData
        rois = "cohort" if self._parameterNode.useCohortLabels else "atlas"
        result = self._run(_("Comparison failed."), _("Comparison"),
                           lambda progress: self.logic.compare(csv, modelA, modelB, out, rois=rois,
                                                               progress=progress))
        if result is not None:
            self._showCohortResult(_("Comparison (DeLong)"), result)

    def onNomogram(self) -> None:
        if not self._ensureDependencies(deepLearning=True):
            return
        p = self._parameterNode
        if (inputs := self._cohortInputs()) is None:
            return
        csv, out = inputs
        clinical = [c.strip() for c in p.clinicalVariables.split(",") if c.strip()]
        modelId = self.ui.modelComboBox.currentData
        # reuse the last evaluation's predictions when they are of this cohort and model
        last = self._lastPredictionsCsv
        predictionsCsv = last[2] if last and last[0] == str(csv) and last[1] == modelId else None
        result = self._run(_("Nomogram failed."), _("Nomogram"), lambda progress: self.logic.nomogram(
            csv, out, clinical=clinical, predictionsCsv=predictionsCsv, modelId=modelId,
            validationCsv=_path_or_none(p.validationCsv), rois="cohort" if p.useCohortLabels else "atlas",
            progress=progress))
        if result is not None:
            self._showCohortResult(_("Nomogram"), result)


#
# NeonatalClassifyLogic
#


class NeonatalClassifyLogic(ScriptedLoadableModuleLogic):
    """MRML-level logic of the module; the work is done by :mod:`NeonatalClassifyLib.mrml_logic`.

    Usable without the widget, e.g. from Slicer's Python console::

        logic = slicer.util.getModuleLogic("NeonatalClassify")
        seg = logic.extractRois(t1Node)
        outputs = logic.classify(t1Node, "demo", roiSegmentationNode=seg)
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return NeonatalClassifyParameterNode(super().getParameterNode())

    @staticmethod
    def _lib():
        from NeonatalClassifyLib import mrml_logic

        return mrml_logic

    # dependencies
    def ensureDependencies(self, deepLearning: bool = True, parent=None) -> None:
        """Install missing packages after asking; raises RuntimeError when the user declines.

        PyTorch goes through the PyTorch extension's installer when present (it
        picks the CUDA or CPU build for this computer), else pip with
        ``TORCH_REQUIREMENT``.  Called on first use, never at module open.
        """
        from NeonatalBrainLib.slicer_packages import ensure_packages

        requirements = list(BASE_REQUIREMENTS) + (list(DEEP_LEARNING_REQUIREMENTS) if deepLearning else [])
        ensure_packages(requirements, requester="NeonatalClassify",
                        torch_requirement=TORCH_REQUIREMENT if deepLearning else None, parent=parent)

    def device(self) -> str:
        """'cuda' when PyTorch sees a GPU, else 'cpu'."""
        return self._lib().select_device()

    # models
    def listModels(self) -> list[dict]:
        return self._lib().list_models()

    def modelCard(self, modelId: str) -> dict:
        return self._lib().model_card(modelId)

    def modelSummary(self, modelId: str) -> str:
        try:
            return self._lib().model_summary(modelId)
        except Exception as exc:  # noqa: BLE001 - shown as text in the GUI
            return _("Cannot read the model card: {error}").format(error=exc)

    def importModel(self, folder) -> str:
        return self._lib().import_model(folder)

    # subject
    def extractRois(self, t1Node, atlas=None, modelId=None, segmentationNode=None, progress=None):
        return self._lib().extract_rois(slicer.mrmlScene, t1Node, atlas=atlas, model=modelId,
                                        segmentation_node=segmentationNode, progress=progress)

    def classify(self, t1Node, modelId, roiSegmentationNode=None, atlas=None, heatmapOpacity=0.5,
                 heatmapThreshold=0.2, progress=None):
        lib = self._lib()
        outputs = lib.classify_volume_node(slicer.mrmlScene, t1Node, modelId,
                                           roi_segmentation_node=roiSegmentationNode, atlas=atlas,
                                           device=lib.select_device(), progress=progress)
        lib.set_heatmap_overlay(slicer.mrmlScene, t1Node, outputs.heatmap_node, opacity=heatmapOpacity,
                                threshold_fraction=heatmapThreshold)
        return outputs

    def setHeatmapOverlay(self, t1Node, heatmapNode, opacity, thresholdFraction) -> None:
        self._lib().set_heatmap_overlay(slicer.mrmlScene, t1Node, heatmapNode, opacity=opacity,
                                        threshold_fraction=thresholdFraction)

    def export(self, folder, t1Node, heatmapNode, segmentationNode, summaryTable, sliceTable,
               overwrite=False, results=True, heatmap=True, segmentation=True, screenshots=True) -> list:
        return self._lib().export_results(
            folder, t1_node=t1Node, heatmap_node=heatmapNode, roi_segmentation_node=segmentationNode,
            summary_table_node=summaryTable, slice_table_node=sliceTable, results=results, heatmap=heatmap,
            segmentation=segmentation, figures=screenshots, overwrite=overwrite)

    def captureViews(self, folder) -> list:
        """Screenshots of the red slice view and of the whole view layout (never overwriting)."""
        import ScreenCapture
        from NeonatalBrainLib.outputs import unique_path

        folder = pathlib.Path(folder)
        capture = ScreenCapture.ScreenCaptureLogic()
        written = []
        layoutManager = slicer.app.layoutManager()
        redView = layoutManager.sliceWidget("Red").sliceView()
        target = unique_path(folder / "screenshot_red.png")
        capture.captureImageFromView(redView, str(target))
        written.append(target)
        target = unique_path(folder / "screenshot_layout.png")
        capture.captureImageFromView(None, str(target))
        written.append(target)
        return written

    # cohort
    def train(self, cohortCsv, outputFolder, architecture="resnet18", epochs=8, seed=0, atlas=None, progress=None):
        return self._lib().train_cohort(slicer.mrmlScene, cohortCsv, outputFolder, architecture=architecture,
                                        epochs=epochs, seed=seed, atlas=atlas, add_to_catalogue=True,
                                        progress=progress)

    def evaluate(self, cohortCsv, modelId, outputFolder, rois="atlas", progress=None):
        return self._lib().evaluate_cohort(slicer.mrmlScene, cohortCsv, modelId, outputFolder, rois=rois,
                                           progress=progress)

    def compare(self, cohortCsv, modelA, modelB, outputFolder, rois="atlas", progress=None):
        return self._lib().compare_models(slicer.mrmlScene, cohortCsv, modelA, modelB, outputFolder, rois=rois,
                                          progress=progress)

    def nomogram(self, cohortCsv, outputFolder, clinical, predictionsCsv=None, modelId=None, validationCsv=None,
                 rois="atlas", progress=None):
        return self._lib().fit_nomogram(slicer.mrmlScene, cohortCsv, outputFolder, clinical=clinical,
                                        predictions_csv=predictionsCsv, model=modelId,
                                        validation_csv=validationCsv, rois=rois, progress=progress)

    def showFigure(self, node) -> None:
        """Show a plot chart node in the plot view, or an image (vector volume) node in the red view."""
        if node.IsA("vtkMRMLPlotChartNode"):
            slicer.modules.plots.logic().ShowChartInLayout(node)
        else:
            layoutManager = slicer.app.layoutManager()
            layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutOneUpRedSliceView)
            slicer.util.setSliceViewerLayers(background=node, foreground=None, label=None, fit=True)


#
# NeonatalClassifyTest
#


class NeonatalClassifyTest(ScriptedLoadableModuleTest):
    """Phantom scenario in Slicer: ROIs, classification with the demo model, heatmap on the T1 grid."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_NeonatalClassify_phantom()

    def test_NeonatalClassify_phantom(self):
        import tempfile

        import numpy as np
        from NeonatalBrainLib import anatomy, mrml
        from NeonatalBrainLib.phantom import InjurySpec, write_phantom
        from NeonatalClassifyLib import mrml_logic

        self.delayDisplay("Generating a synthetic neonate (digital phantom, bilirubin injury)")
        folder = pathlib.Path(tempfile.mkdtemp(prefix="NeonatalClassifyTest-")) / "neonate"
        write_phantom(folder, seed=3, injury=InjurySpec("bilirubin"), modalities=("t1",))
        t1Node = mrml.load_volume_node(slicer.mrmlScene, folder / "t1.nii.gz", "neonate_T1")

        logic = NeonatalClassifyLogic()
        self.delayDisplay("Extracting ROIs")
        seg = logic.extractRois(t1Node)
        segmentation = seg.GetSegmentation()
        names = {segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())}
        self.assertEqual(names, set(anatomy.DEEP_GREY_ROIS))

        self.delayDisplay("Classifying with the demo model")
        outputs = logic.classify(t1Node, mrml_logic.DEMO_MODEL_ID, roiSegmentationNode=seg)
        self.assertTrue(0.0 <= outputs.probability <= 1.0)
        self.assertEqual(outputs.predicted_label, int(outputs.probability >= outputs.threshold))
        heat = mrml.volume_from_node(outputs.heatmap_node)
        t1 = mrml.volume_from_node(t1Node)
        self.assertEqual(heat.shape, t1.shape)
        self.assertTrue(np.allclose(heat.affine, t1.affine, atol=1e-6))
        self.assertTrue(np.all(np.isfinite(heat.array)) and float(heat.array.min()) >= 0.0)
        self.assertGreater(float(heat.array.max()), 0.0)
        self.assertGreater(outputs.slice_table_node.GetNumberOfRows(), 0)
        composite = slicer.app.layoutManager().sliceWidget("Red").sliceLogic().GetSliceCompositeNode()
        self.assertEqual(composite.GetForegroundVolumeID(), outputs.heatmap_node.GetID())
        self.delayDisplay("Test passed")
