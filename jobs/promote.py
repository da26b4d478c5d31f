"""spark-submit entry point: make the model the gate accepted for --ds the champion."""

import sys

from rankflow.steps import promote
from rankflow.steps.runner import main

if __name__ == "__main__":
    sys.exit(main(promote.run))
