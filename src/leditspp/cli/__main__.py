"""``python -m leditspp.cli``: the command line, as the ``leditspp`` script runs it."""

import sys

from . import main

sys.exit(main())
