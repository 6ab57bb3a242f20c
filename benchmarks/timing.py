"""The yardstick: a fixed PyTorch workload (``../shared/yardstick.py``) whose time says how fast this machine is now.

Speed on these machines drifts by 30-50% from hour to hour, so every benchmark here runs the yardstick before and
after its measurement, in the same invocation, and reports ``seconds / yardstick_seconds`` beside the seconds.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

YARDSTICK = Path(__file__).resolve().parents[2] / "shared" / "yardstick.py"


def yardstick(path: Path = YARDSTICK) -> float:
    """Seconds the yardstick takes now (it runs in its own process, as it was calibrated)."""
    if not path.is_file():
        raise SystemExit(f"{path}: no yardstick script there; pass --yardstick PATH")
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, check=True).stdout
    return float(re.search(r"yardstick_seconds=([\d.]+)", out).group(1))
