"""spark-submit entry point: train the LambdaMART ranker on the days before --ds and register it in MLflow."""

import sys

from rankflow.jobs import main

if __name__ == "__main__":
    sys.exit(main("train"))
