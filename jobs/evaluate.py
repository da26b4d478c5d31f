"""spark-submit entry point: evaluate the new model on --ds against baselines and gate it."""

import sys

from rankflow.steps import evaluate
from rankflow.steps.runner import main

if __name__ == "__main__":
    sys.exit(main(evaluate.run))
