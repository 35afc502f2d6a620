"""NeonatalClassify engine: deep grey-matter ROIs, slice classifiers, Grad-CAM, deep features (no Slicer import)."""
