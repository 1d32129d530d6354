"""``python -m stream.cli``: the same as ``segstream``."""

import sys

from stream.cli.main import main

sys.exit(main())
