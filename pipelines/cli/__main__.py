"""`python -m pipelines.cli ...`: the `assemblenet` command line (pipelines.cli.main)."""

import sys

from pipelines.cli import main

sys.exit(main())
