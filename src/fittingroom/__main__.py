"""``python -m fittingroom`` (also what ``torchrun -m fittingroom`` runs)."""

import sys

from .cli import main

sys.exit(main())
