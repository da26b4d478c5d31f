"""spark-submit entry point: measure the night's run of --ds into the monitoring history."""

import sys

from rankflow.steps import monitor
from rankflow.steps.runner import main

if __name__ == "__main__":
    sys.exit(main(monitor.run))
