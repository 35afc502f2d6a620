"""NeonatalBrain shared library: I/O, geometry, anatomy tables, phantom, statistics, MRML adapter, CLI.

Importable without 3D Slicer or Qt.  The MRML adapter (:mod:`NeonatalBrainLib.mrml`)
imports ``slicer`` only when called.
"""
__version__ = "0.7.1"
