"""spark-submit entry point: export the lists of --ds to S3 (manifest last, then pointer)."""

import sys

from rankflow.jobs import main

if __name__ == "__main__":
    sys.exit(main("publish_s3"))
