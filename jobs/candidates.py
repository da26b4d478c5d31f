"""spark-submit entry point: candidate items for every active user as of --ds."""

import sys

from rankflow.steps import candidates
from rankflow.steps.runner import main

if __name__ == "__main__":
    sys.exit(main(candidates.run))
