"""``python -m bench``: the attention benchmark matrix (see :mod:`bench.attention`)."""

import sys

from bench import main

sys.exit(main())
