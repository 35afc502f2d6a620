"""NeonatalVessels: deep medullary vein (DMV) segmentation and measurement on neonatal SWI in 3D Slicer.

Module, parameter node, widget, logic and test classes follow Slicer's scripted-module
template (``Utilities/Templates/Modules/Scripted/TemplateKey.py``).  All computation is
in ``NeonatalVesselsLib``: the engine (pure numpy/SciPy/SimpleITK) and
``NeonatalVesselsLib.mrml_logic`` (MRML nodes in, MRML nodes out), so everything the
widget does also runs from the Slicer Python console and headless on slicer-core.
"""
import os
import pathlib
import sys
import threading
from typing import Annotated, Optional, Union

import vtk

# Run from a source checkout (module folder added to Slicer's "Additional module paths", no CMake
# build): the shared package NeonatalBrainLib sits one folder up.  In a built extension it is
# installed beside the module and this does nothing.
_EXTENSION_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(_EXTENSION_ROOT, "NeonatalBrainLib")) and _EXTENSION_ROOT not in sys.path:
    sys.path.append(_EXTENSION_ROOT)

import qt
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
    parameterNodeWrapper,
    WithinRange,
)

from slicer import (
    vtkMRMLLabelMapVolumeNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLTableNode,
)

#: Python packages (pip requirements) the engine needs beyond what Slicer ships.
#: Kept in step with ``dependencies`` in pyproject.toml; installed on first Apply, after asking.
REQUIREMENTS = (
    "scipy>=1.11",
    "scikit-image>=0.22",
    "nibabel>=5.1",
    "pandas>=2.0",
    "numba>=0.59",
    "edt>=2.4",
    "connected-components-3d>=3.12",
    "tqdm>=4.66",
    "matplotlib>=3.7",
    "pillow>=10.1",
)

#: Name of the phantom in the Sample Data module.
SAMPLE_NAME = "NeonatalPhantomSWI"


#
# NeonatalVessels
#


class NeonatalVessels(ScriptedLoadableModule):
    """Module description shown in Slicer (title, category, help, acknowledgement)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Neonatal Vessels")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Neonatal")]
        self.parent.dependencies = []
        self.parent.contributors = ["NeonatalBrain developers"]
        self.parent.helpText = _("""
Segments and measures the deep medullary veins (DMVs) and the thalamic, anterior caudate and
internal cerebral veins on a neonatal susceptibility-weighted (SWI) magnitude volume.
<br><br>
Select the SWI and press <b>Apply</b>. The result is a segmentation with one segment per vein
region and side, one centreline curve per vein, a per-vein table (length, width in mm,
tortuosity = arc length / chord, mean curvature in 1/mm), a per-subject summary table
(DMV count per hemisphere, mean DMV width, tortuosity and curvature, thalamic and anterior
caudate vein widths) and a minimum-intensity-projection (minIP) slab volume.
<br><br>
Click a row of the vessel table to centre the slice views on that vein. Correct the result with
<b>Edit segmentation</b> (Segment Editor), then <b>Recompute metrics</b>: the edited segmentation
is measured again without re-running detection, earlier tables are kept.
<b>Export</b> writes CSV, .seg.nrrd, .mrk.json and a screenshot; the <b>Batch</b> section runs the
same engine as the command line <tt>neonatal-brain vessels-batch</tt> over a cohort.
See <a href="https://github.com/neonatalbrain/NeonatalBrain/blob/main/docs/vessels-module.md">docs/vessels-module.md</a>.
""")
        self.parent.acknowledgementText = _("""
Built on 3D Slicer's scripted module template (Jean-Christophe Fillion-Robin, Kitware; Andras Lasso,
PerkLab; Steve Pieper, Isomics; NIH grant 3P41RR013218-12S1). Vesselness after Frangi et al.,
MICCAI 1998; tortuosity (distance metric) after Bullitt et al., IEEE TMI 2003.
""")

        # Sample data are registered after start-up (the Sample Data module must exist then).
        slicer.app.connect("startupCompleted()", registerSampleData)


#
# Register sample data sets in Sample Data module
#


def registerSampleData():
    """Add the digital neonatal phantom SWI to the Sample Data module.

    Nothing is downloaded: the phantom is generated locally (a few seconds) into
    ``slicer.app.temporaryPath`` on first use and loaded from there afterwards.
    """
    import SampleData

    iconsPath = os.path.join(os.path.dirname(__file__), "Resources/Icons")
    SampleData.SampleDataLogic.registerCustomSampleDataCategory("NeonatalBrain", title=_("Neonatal brain"))
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="NeonatalBrain",
        sampleName=SAMPLE_NAME,
        thumbnailFileName=os.path.join(iconsPath, "NeonatalVessels.png"),
        uris=None,
        fileNames="swi.nii.gz",
        nodeNames=SAMPLE_NAME,
        customDownloader=loadPhantomSample,
    )


def loadPhantomSample(source=None):
    """Generate (first time) and load the phantom SWI; returns the volume node."""
    from NeonatalVesselsLib import sampledata

    folder = os.path.join(slicer.app.temporaryPath, "NeonatalBrainPhantom")
    with slicer.util.tryWithErrorDisplay(_("Could not generate the neonatal phantom."), waitCursor=True):
        paths = sampledata.ensure_phantom(folder)
        return slicer.util.loadVolume(str(paths["swi"]), properties={"name": SAMPLE_NAME})
    return None


#
# NeonatalVesselsParameterNode
#


@parameterNodeWrapper
class NeonatalVesselsParameterNode:
    """
    The parameters of the module (saved with the scene).

    inputVolume - SWI magnitude volume (veins dark).
    brainMask - optional brain mask on the SWI grid (labelmap volume or segmentation).
    ventricles - optional lateral + third ventricle mask (labelmap volume or segmentation).
    vesselnessScaleMinMm, vesselnessScaleMaxMm - smallest and largest Gaussian scale (sigma, mm).
    vesselnessScaleCount - number of scales between them (geometric spacing).
    vesselnessThresholdHigh, vesselnessThresholdLow - hysteresis thresholds of the vesselness (0..1).
    minDmvLengthMm - shorter vessels (centreline arc length, mm) are not counted as DMVs.
    dmvTrackingMm - DMV pieces too short to count are grown by tracking at most this far (mm) from each end (0: off).
    minDmvProbability - DMVs the DMV scorer (a model fitted on phantoms) rates below this are reported as other (0: off).
    minipSlabMm - thickness (mm) of the minimum-intensity-projection slab.
    outputSegmentation, outputVesselTable, outputSummaryTable, outputMinip - the current result.
    exportDirectory - folder for Export.
    batchCasesPath, batchOutputDirectory, batchJobs - the Batch section.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    brainMask: Optional[Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode]] = None
    ventricles: Optional[Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode]] = None
    vesselnessScaleMinMm: Annotated[float, WithinRange(0.1, 2.0)] = 0.35
    vesselnessScaleMaxMm: Annotated[float, WithinRange(0.1, 3.0)] = 0.8
    vesselnessScaleCount: Annotated[int, WithinRange(1, 8)] = 3
    vesselnessThresholdHigh: Annotated[float, WithinRange(0.01, 1.0)] = 0.10
    vesselnessThresholdLow: Annotated[float, WithinRange(0.005, 1.0)] = 0.03
    minDmvLengthMm: Annotated[float, WithinRange(0.0, 30.0)] = 4.5
    dmvTrackingMm: Annotated[float, WithinRange(0.0, 50.0)] = 25.0
    minDmvProbability: Annotated[float, WithinRange(0.0, 0.95)] = 0.2
    minipSlabMm: Annotated[float, WithinRange(1.0, 40.0)] = 8.0
    outputSegmentation: vtkMRMLSegmentationNode
    outputVesselTable: vtkMRMLTableNode
    outputSummaryTable: vtkMRMLTableNode
    outputMinip: vtkMRMLScalarVolumeNode
    exportDirectory: pathlib.Path = pathlib.Path.home()
    batchCasesPath: pathlib.Path = pathlib.Path.home()
    batchOutputDirectory: pathlib.Path = pathlib.Path.home()
    batchJobs: Annotated[int, WithinRange(1, 64)] = 1


#
# NeonatalVesselsWidget
#


class NeonatalVesselsWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: binds the .ui to the parameter node and calls the logic."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._progress = None  # NeonatalBrainLib.progress.Progress of the running job, if any
        self._showProgress = lambda: None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/NeonatalVessels.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = NeonatalVesselsLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.editSegmentationButton.connect("clicked(bool)", self.onEditSegmentationButton)
        self.ui.recomputeButton.connect("clicked(bool)", self.onRecomputeButton)
        self.ui.exportButton.connect("clicked(bool)", self.onExportButton)
        self.ui.runBatchButton.connect("clicked(bool)", self.onRunBatchButton)
        self.ui.vesselTableView.connect("clicked(QModelIndex)", self.onVesselRowClicked)
        self.ui.progressBar.setVisible(False)
        self.ui.summaryTableView.transposed = True  # one metric per line
        self.ui.batchCasesPathLineEdit.filters = ctkPathFilters()

        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        if self._progress is not None:
            self._progress.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode: Optional[NeonatalVesselsParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
            self._updateButtons()

    # ------------------------------------------------------------------ state
    def _updateButtons(self, caller=None, event=None) -> None:
        pn = self._parameterNode
        running = self._progress is not None
        hasInput = bool(pn and pn.inputVolume)
        hasResult = bool(pn and pn.outputSegmentation)
        self.ui.applyButton.enabled = hasInput and not running
        self.ui.applyButton.toolTip = (_("Segment and measure the veins of the selected SWI volume.") if hasInput
                                       else _("Select an SWI volume first."))
        self.ui.cancelButton.enabled = running
        for button in (self.ui.editSegmentationButton, self.ui.recomputeButton, self.ui.exportButton):
            button.enabled = hasResult and not running
        self.ui.runBatchButton.enabled = not running
        vesselTable, summaryTable = self.logic.currentTables(pn.outputSegmentation if pn else None)
        self.ui.vesselTableView.setMRMLTableNode(vesselTable or (pn.outputVesselTable if pn else None))
        self.ui.summaryTableView.setMRMLTableNode(summaryTable or (pn.outputSummaryTable if pn else None))

    def _startProgress(self, progressBar, statusLabel):
        """A Progress shown as stage and percent; Cancel sets it to raise at the next checkpoint.

        Updates from the engine's worker thread are only stored; the main thread shows
        them (Qt widgets must not be touched from another thread).
        """
        from NeonatalBrainLib.progress import Progress

        progressBar.setVisible(True)
        progressBar.value = 0
        state = {"fraction": 0.0, "stage": ""}

        def show() -> None:
            progressBar.value = int(round(100 * state["fraction"]))
            if state["stage"]:
                statusLabel.text = f"{state['stage']} ({100 * state['fraction']:.0f} %)"

        def callback(fraction: float, stage: str) -> None:
            state["fraction"], state["stage"] = fraction, stage
            if threading.current_thread() is threading.main_thread():
                show()
                slicer.app.processEvents()  # lets Cancel be clicked

        self._showProgress = show
        self._progress = Progress(callback)
        self._updateButtons()
        return self._progress

    def _stopProgress(self, progressBar) -> None:
        self._progress = None
        if progressBar is self.ui.progressBar:
            progressBar.setVisible(False)
        self._updateButtons()

    def _runInBackground(self, fn):
        """``fn()`` in a worker thread (engine work only, no MRML); Slicer stays responsive meanwhile."""
        outcome = {}

        def target():
            try:
                outcome["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                outcome["error"] = exc

        thread = threading.Thread(target=target, name="NeonatalVesselsEngine", daemon=True)
        thread.start()
        while thread.is_alive():
            self._showProgress()
            slicer.app.processEvents()
            thread.join(0.05)
        self._showProgress()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def _ensureDependencies(self) -> bool:
        """Install missing Python packages (after the user confirms) before the first run."""
        from NeonatalBrainLib.slicer_packages import ensure_packages

        try:
            with slicer.util.tryWithErrorDisplay(_("Installing Python packages failed."), waitCursor=True):
                ensure_packages(REQUIREMENTS, requester="NeonatalVessels", parent=slicer.util.mainWindow())
        except RuntimeError as exc:  # the user declined
            self.ui.statusLabel.text = _("Not run: {reason}").format(reason=exc)
            return False
        return True

    # ------------------------------------------------------------------ actions
    def onApplyButton(self) -> None:
        if not self._ensureDependencies():
            return
        from NeonatalBrainLib.progress import OperationCancelled

        pn = self._parameterNode
        progress = self._startProgress(self.ui.progressBar, self.ui.statusLabel)
        try:
            with slicer.util.tryWithErrorDisplay(_("Vessel analysis failed."), waitCursor=True):
                try:
                    outputs = self.logic.process(
                        pn.inputVolume, pn.brainMask, pn.ventricles, params=self.logic.parametersFromNode(pn),
                        progress=progress, runner=self._runInBackground)
                except OperationCancelled:
                    self.ui.statusLabel.text = _("Cancelled: nothing was added to the scene.")
                    return
                self._showOutputs(outputs)
                self.ui.statusLabel.text = self.logic.summaryText(outputs)
        finally:
            self._stopProgress(self.ui.progressBar)

    def onCancelButton(self) -> None:
        if self._progress is not None:
            self._progress.cancel()
            self.ui.statusLabel.text = _("Cancelling...")

    def _showOutputs(self, outputs) -> None:
        pn = self._parameterNode
        pn.outputSegmentation = outputs.segmentation
        pn.outputVesselTable = outputs.vessel_table
        pn.outputSummaryTable = outputs.summary_table
        pn.outputMinip = outputs.minip
        slicer.util.setSliceViewerLayers(background=outputs.minip or outputs.input_node, fit=True)

    def onEditSegmentationButton(self) -> None:
        pn = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Could not open the Segment Editor."), waitCursor=True):
            slicer.util.selectModule("SegmentEditor")
            editor = slicer.modules.SegmentEditorWidget.editor
            editor.setSegmentationNode(pn.outputSegmentation)
            source = pn.inputVolume
            if hasattr(editor, "setSourceVolumeNode"):
                editor.setSourceVolumeNode(source)
            else:  # Slicer < 5.4
                editor.setMasterVolumeNode(source)

    def onRecomputeButton(self) -> None:
        if not self._ensureDependencies():
            return
        from NeonatalBrainLib.progress import OperationCancelled

        pn = self._parameterNode
        progress = self._startProgress(self.ui.progressBar, self.ui.statusLabel)
        try:
            with slicer.util.tryWithErrorDisplay(_("Recomputing the metrics failed."), waitCursor=True):
                try:
                    outputs = self.logic.recompute(pn.outputSegmentation, progress=progress,
                                                   runner=self._runInBackground)
                except OperationCancelled:
                    self.ui.statusLabel.text = _("Cancelled: the previous tables are unchanged.")
                    return
                self._showOutputs(outputs)
                self.ui.statusLabel.text = self.logic.summaryText(outputs)
        finally:
            self._stopProgress(self.ui.progressBar)

    def onExportButton(self) -> None:
        pn = self._parameterNode
        folder = str(pn.exportDirectory)
        with slicer.util.tryWithErrorDisplay(_("Export failed."), waitCursor=True):
            existing = self.logic.existingExportFiles(pn.outputSegmentation, folder)
            overwrite = False
            if existing:
                overwrite = slicer.util.confirmYesNoDisplay(
                    _("These files already exist in {folder}:\n\n{files}\n\nOverwrite them?").format(
                        folder=folder, files="\n".join(os.path.basename(p) for p in existing)),
                    _("Neonatal Vessels - export"))
                if not overwrite:
                    self.ui.statusLabel.text = _("Export not done: choose another folder.")
                    return
            screenshot = self._captureScreenshot()
            written = self.logic.export(pn.outputSegmentation, folder, overwrite=overwrite, screenshot=screenshot)
            self.ui.statusLabel.text = _("Exported {n} files to {folder}").format(n=len(written), folder=folder)

    def _captureScreenshot(self):
        """PNG bytes of the view layout (None where no layout is shown)."""
        layoutManager = slicer.app.layoutManager()
        if layoutManager is None:
            return None
        slicer.util.forceRenderAllViews()
        pixmap = layoutManager.viewport().grab()
        buffer = qt.QBuffer()
        buffer.open(qt.QIODevice.WriteOnly)
        pixmap.save(buffer, "PNG")
        data = buffer.data()  # QByteArray
        return bytes(data.data()) if hasattr(data, "data") else bytes(data)

    def onVesselRowClicked(self, index) -> None:
        """Centre the slice views on the vessel of the clicked row (its id is the row's first column)."""
        pn = self._parameterNode
        if not pn or not pn.outputSegmentation:
            return
        model = self.ui.vesselTableView.model()  # the view's (sortable) model: read the id from the row shown
        try:
            vesselId = int(float(model.data(model.index(index.row(), 0))))
        except (TypeError, ValueError):
            return  # a header row or an empty cell
        with slicer.util.tryWithErrorDisplay(_("Could not locate the vessel."), waitCursor=False):
            self.logic.centerViewsOnVessel(pn.outputSegmentation, vesselId)

    def onRunBatchButton(self) -> None:
        if not self._ensureDependencies():
            return
        import concurrent.futures

        from NeonatalBrainLib.progress import OperationCancelled

        pn = self._parameterNode
        progress = self._startProgress(self.ui.batchProgressBar, self.ui.batchStatusLabel)
        # Threads, not processes: Slicer's executable cannot serve as a worker process.
        executor = concurrent.futures.ThreadPoolExecutor(max_workers=pn.batchJobs)
        try:
            with slicer.util.tryWithErrorDisplay(_("Batch run failed."), waitCursor=False):
                try:
                    # the module's method settings, as Apply uses them
                    results = self.logic.runBatch(str(pn.batchCasesPath), str(pn.batchOutputDirectory),
                                                  jobs=pn.batchJobs, progress=progress, executor=executor,
                                                  runner=self._runInBackground,
                                                  params=self.logic.parametersFromNode(pn))
                except OperationCancelled:
                    self.ui.batchStatusLabel.text = _("Cancelled after the running cases; run again to finish "
                                                      "the remaining cases.")
                    return
                self.ui.batchStatusLabel.text = self.logic.batchText(results)
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            self._stopProgress(self.ui.batchProgressBar)


def ctkPathFilters():
    """Files and folders are both valid batch inputs (a cases CSV or a folder of SWI files)."""
    import ctk

    return ctk.ctkPathLineEdit.Files | ctk.ctkPathLineEdit.Dirs | ctk.ctkPathLineEdit.Readable


#
# NeonatalVesselsLogic
#


class NeonatalVesselsLogic(ScriptedLoadableModuleLogic):
    """MRML-level logic; never touches widgets.  Delegates to ``NeonatalVesselsLib.mrml_logic``.

    Usable from the Slicer Python console::

        logic = slicer.util.getModuleLogic("NeonatalVessels")
        outputs = logic.process(slicer.util.getNode("swi"))
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return NeonatalVesselsParameterNode(super().getParameterNode())

    @staticmethod
    def _lib():
        from NeonatalVesselsLib import mrml_logic

        return mrml_logic

    def parametersFromNode(self, parameterNode):
        """Engine parameters (``VesselParams``) from the parameter node's method settings."""
        return self._lib().vessel_params(
            scale_min_mm=parameterNode.vesselnessScaleMinMm,
            scale_max_mm=parameterNode.vesselnessScaleMaxMm,
            scale_count=parameterNode.vesselnessScaleCount,
            threshold_high=parameterNode.vesselnessThresholdHigh,
            threshold_low=parameterNode.vesselnessThresholdLow,
            min_dmv_length_mm=parameterNode.minDmvLengthMm,
            track_max_mm=parameterNode.dmvTrackingMm,
            dmv_min_probability=parameterNode.minDmvProbability,
            minip_slab_mm=parameterNode.minipSlabMm)

    def process(self, inputVolume, brainMask=None, ventricles=None, params=None, progress=None, runner=None):
        """Segment and measure the veins of ``inputVolume``; returns ``mrml_logic.VesselsOutputNodes``.

        ``runner(fn)`` (optional) runs the engine step, e.g. in a worker thread.  Raises
        ``OperationCancelled`` when ``progress`` is cancelled (the scene is left unchanged).
        """
        if not inputVolume:
            raise ValueError("input SWI volume: none selected")
        return self._lib().analyze_volume_node(slicer.mrmlScene, inputVolume, brain_mask_node=brainMask,
                                               ventricles_node=ventricles, params=params, progress=progress,
                                               runner=runner)

    def outputsOf(self, segmentationNode):
        """The result nodes belonging to a result segmentation (works after scene save/load)."""
        return self._lib().outputs_from_segmentation(slicer.mrmlScene, segmentationNode)

    def recompute(self, segmentationNode, progress=None, runner=None):
        """Measure the (edited) result segmentation again; new, versioned tables; old ones kept."""
        outputs = self.outputsOf(segmentationNode)
        return self._lib().recompute_from_segmentation(slicer.mrmlScene, outputs, segmentationNode,
                                                       progress=progress, runner=runner)

    def centerViewsOnVessel(self, segmentationNode, vesselId):
        """Centre the slice views on vessel ``vesselId`` of a result; returns the RAS point (mm)."""
        lib = self._lib()
        center = lib.vessel_center_ras(self.outputsOf(segmentationNode), vesselId)
        lib.jump_slices_to(slicer.mrmlScene, center)
        return center

    def currentTables(self, segmentationNode):
        """(vessel table, summary table) of the latest version of a result; (None, None) for other nodes."""
        if segmentationNode is None:
            return None, None
        return (segmentationNode.GetNodeReference("NeonatalVessels.vesselTable"),
                segmentationNode.GetNodeReference("NeonatalVessels.summaryTable"))

    def existingExportFiles(self, segmentationNode, folder):
        return self._lib().existing_export_files(self.outputsOf(segmentationNode), folder)

    def export(self, segmentationNode, folder, overwrite=False, screenshot=None):
        """Write the result files into ``folder``; refuses to overwrite unless ``overwrite``."""
        return self._lib().export_results(self.outputsOf(segmentationNode), folder, overwrite=overwrite,
                                          screenshot_png=screenshot)

    def runBatch(self, cases, outputDirectory, jobs=1, progress=None, executor=None, runner=None, params=None):
        """The engine over a cases CSV or folder (as ``neonatal-brain vessels-batch``) with the engine
        parameters ``params`` (None: defaults); per-case results."""
        return self._lib().run_batch(cases, outputDirectory, progress=progress, jobs=jobs, executor=executor,
                                     runner=runner, params=params)

    def summaryText(self, outputs):
        return self._lib().summary_text(outputs)

    def batchText(self, results):
        return self._lib().batch_text(results)


#
# NeonatalVesselsTest
#


class NeonatalVesselsTest(ScriptedLoadableModuleTest):
    """Phantom scenario in Slicer (``Slicer --testing``): apply, check against truth, edit, recompute."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_NeonatalVessels_phantom()

    def test_NeonatalVessels_phantom(self):
        from NeonatalVesselsLib import mrml_logic, sampledata

        self.delayDisplay("Generating the neonatal phantom")
        folder = os.path.join(slicer.app.temporaryPath, "NeonatalBrainPhantom")
        paths = sampledata.ensure_phantom(folder)
        truth = sampledata.truth_dmv_counts(paths["vessels_json"])
        inputVolume = slicer.util.loadVolume(str(paths["swi"]))
        self.delayDisplay("Loaded the phantom SWI")

        logic = NeonatalVesselsLogic()
        outputs = logic.process(inputVolume, params=logic.parametersFromNode(logic.getParameterNode()))
        summary = mrml_logic.summary_from_table(outputs.summary_table)
        for side in ("left", "right"):
            found, expected = summary[f"dmv_count_{side}"], truth[side]
            self.assertLessEqual(abs(found - expected), max(1, round(0.1 * expected)),
                                 f"DMV count {side}: found {found}, truth {expected}")
        self.assertEqual(len(outputs.curves), outputs.vessel_table.GetNumberOfRows())
        self.delayDisplay(f"DMVs found: {summary['dmv_count']} (truth {truth['left'] + truth['right']})")

        # Erase one DMV in the segmentation, as a user would with the Segment Editor's eraser.
        vesselId = mrml_logic.first_vessel_id(outputs, region="dmv", isolated=True)
        segmentId = mrml_logic.segment_id_of_vessel(outputs, vesselId)
        segmentArray = slicer.util.arrayFromSegmentBinaryLabelmap(outputs.segmentation, segmentId, inputVolume)
        vesselArray = mrml_logic.vessel_mask_kji(outputs, vesselId)
        segmentArray[vesselArray] = 0
        slicer.util.updateSegmentBinaryLabelmapFromArray(segmentArray, outputs.segmentation, segmentId, inputVolume)

        before = summary["dmv_count"]
        recomputed = logic.recompute(outputs.segmentation)
        after = mrml_logic.summary_from_table(recomputed.summary_table)["dmv_count"]
        self.assertEqual(after, before - 1)
        self.assertIsNotNone(slicer.mrmlScene.GetNodeByID(outputs.vessel_table.GetID()))
        self.delayDisplay("Test passed")
