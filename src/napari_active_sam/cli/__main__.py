"""``python -m napari_active_sam.cli``: the same as the ``napari-active-sam`` command."""

import sys

from .main import main

sys.exit(main())
