"""``python -m mona_tune.cli``: the same as the ``mona-tune`` command."""

import sys

from mona_tune.cli import main

sys.exit(main())
