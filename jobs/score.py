"""spark-submit entry point: score candidates with the champion; top-K lists to gold."""

import sys

from rankflow.steps import score
from rankflow.steps.runner import main

if __name__ == "__main__":
    sys.exit(main(score.run))
