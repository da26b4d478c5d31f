"""spark-submit entry point: raw drops to bronze Delta tables (malformed rows to quarantine)."""

import sys

from rankflow.jobs import main

if __name__ == "__main__":
    sys.exit(main("ingest"))
