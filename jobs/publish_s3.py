"""spark-submit entry point: export the lists of --ds to S3 (manifest last, then pointer)."""

import sys

from rankflow.steps import publish_s3
from rankflow.steps.runner import main

if __name__ == "__main__":
    sys.exit(main(publish_s3.run))
