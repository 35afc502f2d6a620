"""pytest configuration: shared fixtures live in fixtures_*.py modules (one owner each)."""
import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MPLBACKEND", "Agg")

TESTING_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTING_DIR.parent
if str(TESTING_DIR) not in sys.path:
    sys.path.insert(0, str(TESTING_DIR))

from fixtures_mrml import *  # noqa: E402,F401,F403  (mrml_scene ...)
from fixtures_phantom import *  # noqa: E402,F401,F403  (phantom_dir ...)
