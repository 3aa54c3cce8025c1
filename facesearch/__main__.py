"""``python -m facesearch``: the ``facesearch`` command."""

import sys

from facesearch.cli import main

sys.exit(main())
