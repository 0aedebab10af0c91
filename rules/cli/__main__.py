"""``python -m rules.cli``: the same as the ``dacp`` command."""

import sys

from rules.cli.run import main

sys.exit(main())
