"""The package's structure: import-linter's contracts in pyproject.toml (layers, no cycles) hold, and vulture
finds no dead code (its exceptions, with their reasons, are in pyproject.toml's [tool.vulture])."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tool(name: str) -> str:
    """A console script of this virtual environment (else of the PATH)."""
    path = Path(sys.executable).with_name(name)
    return str(path) if path.exists() else shutil.which(name) or name


def test_imports_flow_down_the_layers_without_cycles():
    proc = subprocess.run([tool("lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 kept, 0 broken" in proc.stdout


def test_vulture_finds_no_dead_code():
    # the paths, decorators and names it skips come from pyproject.toml, as for `make lint`
    proc = subprocess.run([tool("vulture")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, ""), "unused code (remove it, or add it to "\
        "[tool.vulture] in pyproject.toml with the reason it is used):\n" + proc.stdout + proc.stderr


def test_vulture_would_find_an_unused_function(tmp_path):
    dead = tmp_path / "dead.py"
    dead.write_text("def never_called():\n    return 1\n")
    proc = subprocess.run([tool("vulture"), "src", str(dead)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3 and "unused function 'never_called'" in proc.stdout, proc.stdout + proc.stderr
