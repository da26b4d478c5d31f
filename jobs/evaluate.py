"""spark-submit entry point: evaluate the new model on --ds against baselines and gate it."""

import sys

from rankflow.jobs import main

if __name__ == "__main__":
    sys.exit(main("evaluate"))
