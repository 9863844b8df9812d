"""`python -m redirector.cli`: the same as the `redirector` command."""

import sys

from redirector.cli.main import main

sys.exit(main())
