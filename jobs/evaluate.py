"""spark-submit entry point: evaluate the new model on --ds against baselines; gate promotion."""

import sys

from rankflow.jobs import main

if __name__ == "__main__":
    sys.exit(main("evaluate"))
