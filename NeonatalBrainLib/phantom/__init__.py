"""Digital neonatal brain phantom (SWI + T1 with exact ground truth)."""
