"""spark-submit entry point: raw drops to bronze Delta tables (malformed rows to quarantine)."""

import sys

from rankflow.steps import ingest
from rankflow.steps.runner import main

if __name__ == "__main__":
    sys.exit(main(ingest.run))
