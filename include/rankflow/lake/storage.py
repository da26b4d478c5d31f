"""Where the lake lives: a check, before a step opens Spark, that an S3 lake can be reached.

Without it a step on an ``s3a://`` lake with no credentials fails deep inside hadoop-aws, after
a JVM start and a walk through every credential provider, with a message about providers rather
than about the setting to fix.
"""

from __future__ import annotations

import os

from rankflow.config import Settings

CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


class LakeAccessError(RuntimeError):
    """The lake's storage cannot be used: missing or refused credentials, no bucket."""


def lake_bucket(settings: Settings) -> str:
    """The bucket of an ``s3a://bucket/prefix`` lake."""
    return settings.paths.lake.removeprefix("s3a://").split("/", 1)[0]


def check_lake_access(settings: Settings) -> None:
    """Raise :class:`LakeAccessError` naming what to set if an S3 lake cannot be read.

    A local lake needs nothing. Credentials come from the standard AWS chain (environment,
    profile, container or instance role); a half-set pair of variables is named as such.
    """
    if not settings.paths.lake_on_s3:
        return
    import boto3
    from botocore.exceptions import ClientError, EndpointConnectionError

    from rankflow.publish.s3 import s3_client

    lake, bucket = settings.paths.lake, lake_bucket(settings)
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
