"""Publishing: gold lists to S3 and Redis, and the hourly sold-item repair."""
