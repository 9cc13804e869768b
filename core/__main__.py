"""`python -m core <command>`: the command line lives in core/cli.py."""
import sys

from core.cli import main

sys.exit(main())
