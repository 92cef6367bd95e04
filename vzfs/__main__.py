"""`python -m vzfs` is the `vzfs` command."""

import sys

from .cli import main

sys.exit(main())
