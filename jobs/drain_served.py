"""spark-submit entry point: the serving log of --ds from its Redis stream into bronze/served."""

import sys

from rankflow.steps import drain_served
from rankflow.steps.runner import main

if __name__ == "__main__":
    sys.exit(main(drain_served.run))
