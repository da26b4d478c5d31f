"""spark-submit entry point: the features of --ds as a new, audited online feature version."""

import sys

from rankflow.steps import materialise_features
from rankflow.steps.runner import main

if __name__ == "__main__":
    sys.exit(main(materialise_features.run))
