"""``python -m pyfastgrad.bench`` (the same as ``python -m pyfastgrad bench``)."""
import sys

from .cli import cli

sys.exit(cli())
