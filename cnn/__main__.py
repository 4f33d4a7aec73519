"""Entry point for `python -m cnn`."""
import sys

from .cli import main

sys.exit(main())
