"""NeonatalVessels engine: deep medullary vein segmentation and measurement on SWI (no Slicer import)."""
