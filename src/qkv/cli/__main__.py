"""``python -m qkv.cli``: the ``qkv`` command (:func:`qkv.cli.main`)."""

import sys

from qkv.cli import main

if __name__ == "__main__":
    sys.exit(main())
