"""``python -m smoothflow_torch.pipeline``: the ``smoothflow`` command."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
