"""spark-submit entry point: replay the answers served on --ds against the offline features."""

import sys

from rankflow.steps import check_skew
from rankflow.steps.runner import main

if __name__ == "__main__":
    sys.exit(main(check_skew.run))
