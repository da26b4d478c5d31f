"""spark-submit entry point: publish the gold lists of --ds to Redis as a new version and switch readers."""

import sys

from rankflow.jobs import main

if __name__ == "__main__":
    sys.exit(main("publish_redis"))
