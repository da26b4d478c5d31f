"""spark-submit entry point: labelled impressions of --ds joined to features of the day before."""

import sys

from rankflow.steps import training_set
from rankflow.steps.runner import main

if __name__ == "__main__":
    sys.exit(main(training_set.run))
