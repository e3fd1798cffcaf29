"""``python -m qkv``: the ``qkv`` command (:func:`qkv.cli.main`)."""

import sys

from qkv.cli import main

sys.exit(main())
