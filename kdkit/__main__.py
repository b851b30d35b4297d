"""``python -m kdkit`` is the ``kdkit`` command."""

import sys

from kdkit.cli import main

sys.exit(main())
