"""spark-submit entry point: item, user and seen-pair features as of the end of --ds."""

import sys

from rankflow.steps import features
from rankflow.steps.runner import main

if __name__ == "__main__":
    sys.exit(main(features.run))
