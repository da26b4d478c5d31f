"""spark-submit entry point: publish the lists of --ds as a new Redis version, then switch."""

import sys

from rankflow.jobs import main

if __name__ == "__main__":
    sys.exit(main("publish_redis"))
