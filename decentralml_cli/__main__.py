"""``python -m decentralml_cli``: the same command as the installed ``decentralml`` script."""

import sys

from decentralml_cli import main

sys.exit(main())
