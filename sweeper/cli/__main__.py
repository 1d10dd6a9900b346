"""`python -m sweeper.cli`: what the SLURM workers and the tests run, the same app as `sweep`."""

import sys

from sweeper.cli import app

sys.exit(app())
