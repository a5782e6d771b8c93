"""``python -m fclens``: the same as the ``fclens`` command."""

import sys

from fclens.cli import main

sys.exit(main())
