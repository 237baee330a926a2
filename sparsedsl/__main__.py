"""``python -m sparsedsl`` runs the command line."""
import sys

from sparsedsl.cli import main

sys.exit(main())
