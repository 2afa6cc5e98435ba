"""Import contracts (pyproject's [tool.importlinter]): domain packages stay free of Flask."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def test_import_contracts_hold():
    exe = shutil.which("lint-imports")
    assert exe, "import-linter is part of the test extra"
    proc = subprocess.run([exe], capture_output=True, text=True, cwd=Path(__file__).parents[1], timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
