"""``python -m attnzoo`` (and ``torchrun ... -m attnzoo train``): the ``attnzoo`` command line."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
