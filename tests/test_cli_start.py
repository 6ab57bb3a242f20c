"""The quick commands start quickly: `--help`, `presets` and `data info` never import PyTorch or matplotlib.

Importing torch alone takes seconds; each command imports what it needs when it runs, so these answer in a
fraction of a second. The check is on the modules imported (``python -X importtime``), not on a clock.
"""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.subprocess

HEAVY = ("torch", "matplotlib")


def imported(*args) -> tuple[set[str], str]:
    """The top-level packages ``python -m fittingroom ARGS`` imports, and its stdout."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "fittingroom", *map(str, args)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # stderr lines: "import time: <self us> | <cumulative us> | <indented module name>"
    names = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "fittingroom.cli" in names  # the report is there
    return {name.split(".")[0] for name in names}, proc.stdout


@pytest.mark.parametrize("args", [["--help"], ["presets"], ["presets", "seed"], ["data", "--help"]])
def test_help_and_presets_import_neither_torch_nor_matplotlib_nor_numpy(args):
    packages, out = imported(*args)
    assert out
    assert not packages & {*HEAVY, "numpy"}


def test_data_info_imports_neither_torch_nor_matplotlib(tiny_data):
    packages, out = imported("data", "info", "--data-dir", tiny_data, "--json")
    assert json.loads(out)["train"]["images"] == [240, 28, 28]
    assert not packages & set(HEAVY)
