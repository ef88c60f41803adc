"""Launch DDPM Studio: `python main.py [RUN_DIR]` (the built-in data and the bundled model by default)."""

import sys

from studio.app import run

if __name__ == "__main__":
    sys.exit(run())
