"""spark-submit entry point: candidate items for every active user as of --ds."""

import sys

from rankflow.jobs import main

if __name__ == "__main__":
    sys.exit(main("candidates"))
