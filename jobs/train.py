"""spark-submit entry point: train LambdaMART on the days before --ds; register in MLflow."""

import sys

from rankflow.steps import train
from rankflow.steps.runner import main

if __name__ == "__main__":
    sys.exit(main(train.run))
