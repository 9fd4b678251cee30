"""``python -m tokenkeeper``: the same as the ``tokenkeeper`` command."""

import sys

from tokenkeeper.cli import main

sys.exit(main())
