"""spark-submit entry point: ingest raw drops into bronze Delta tables (malformed rows to quarantine)."""

import sys

from rankflow.jobs import main

if __name__ == "__main__":
    sys.exit(main("ingest"))
