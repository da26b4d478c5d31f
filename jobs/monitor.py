"""spark-submit entry point: measure the night's run of --ds into the monitoring history."""

import sys

from rankflow.jobs import main

if __name__ == "__main__":
    sys.exit(main("monitor"))
