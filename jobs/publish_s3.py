"""spark-submit entry point: export the gold lists of --ds to S3 (manifest last, then the latest pointer)."""

import sys

from rankflow.jobs import main

if __name__ == "__main__":
    sys.exit(main("publish_s3"))
