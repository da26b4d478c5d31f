"""spark-submit entry point: score every candidate with the champion; top-K lists per user to gold."""

import sys

from rankflow.jobs import main

if __name__ == "__main__":
    sys.exit(main("score"))
