"""``python -m scoresde.cli``: the ``scoresde`` command."""

import sys

from . import main

sys.exit(main())
