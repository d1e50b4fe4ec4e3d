"""``python -m hudd_core.cli ...``: the ``hudd`` command."""

import sys

from hudd_core.cli import main

sys.exit(main())
