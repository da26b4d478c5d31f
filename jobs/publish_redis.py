"""spark-submit entry point: publish the lists of --ds as a new Redis version, then switch."""

import sys

from rankflow.steps import publish_redis
from rankflow.steps.runner import main

if __name__ == "__main__":
    sys.exit(main(publish_redis.run))
