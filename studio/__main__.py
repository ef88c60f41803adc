"""`python -m studio [RUN]`: the same as the `ddpm-studio` command."""

import sys

from studio.app import run

sys.exit(run())
