"""Where the lake lives: the S3 client factory, and a check before a step opens Spark.

Without it a step on an ``s3a://`` lake with no credentials fails deep inside hadoop-aws, after
a JVM start and a walk through every credential provider, with a message about providers rather
than about the setting to fix.
"""

from __future__ import annotations

import os
from typing import Any

from rankflow.config import S3Settings, Settings

CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def s3_client(s3: S3Settings) -> Any:
    """Return a boto3 S3 client for the configured endpoint (credentials from the environment)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=s3.endpoint_url,
        region_name=s3.region,
        config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5),
    )


def ensure_bucket(client: Any, bucket: str) -> None:
    """Create the bucket if it does not exist (embedded endpoint and first runs)."""
    from botocore.exceptions import ClientError

    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
        client.create_bucket(Bucket=bucket)


class LakeAccessError(RuntimeError):
    """The lake's storage cannot be used: missing or refused credentials, no bucket."""


def lake_bucket(lake: str) -> str:
    """The bucket of an ``s3a://bucket/prefix`` lake."""
    return lake.removeprefix("s3a://").split("/", 1)[0]


def check_lake_access(settings: Settings) -> None:
    """Raise :class:`LakeAccessError` naming what to set if an S3 lake cannot be read.

    A local lake needs nothing. Credentials come from the standard AWS chain (environment,
    profile, container or instance role); a half-set pair of variables is named as such.
    """
    if not settings.paths.lake_on_s3:
        return
    import boto3
    from botocore.exceptions import ClientError, EndpointConnectionError

    lake, bucket = settings.paths.lake, lake_bucket(settings.paths.lake)
    missing = [name for name in CREDENTIAL_VARIABLES if not os.environ.get(name)]
    if len(missing) == 1:
        raise LakeAccessError(
            f"the lake is on {lake} but {missing[0]} is not set (the other of "
            f"{' / '.join(CREDENTIAL_VARIABLES)} is): set both, or neither to use a profile or role"
        )
    if boto3.session.Session().get_credentials() is None:
        raise LakeAccessError(
            f"the lake is on {lake} but no AWS credentials were found: set "
            f"{' and '.join(CREDENTIAL_VARIABLES)} (or AWS_PROFILE, or run with a role)"
        )
    try:
        s3_client(settings.s3).head_bucket(Bucket=bucket)
    except EndpointConnectionError as error:
        raise LakeAccessError(
            f"the lake's S3 endpoint does not answer ({error}): check RANKFLOW_S3_ENDPOINT"
        ) from None
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code"))
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise LakeAccessError(
                f"the lake's bucket {bucket!r} does not exist on "
                f"{settings.s3.endpoint_url or 'AWS'} (make cluster-up creates it locally)"
            ) from None
        raise LakeAccessError(
            f"S3 refused the lake's bucket {bucket!r} ({code}): check "
            f"{' and '.join(CREDENTIAL_VARIABLES)} (or the role's policy)"
        ) from None
