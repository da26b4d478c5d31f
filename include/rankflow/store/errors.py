"""Errors of the Redis store, shared by its writer, version switch and reader."""

from __future__ import annotations


class RedisStoreError(RuntimeError):
    """Base class of the serving store's errors."""


class NoCurrentVersionError(RedisStoreError):
    """Raised when a surface has no published version to read."""


class VersionNotWritableError(RedisStoreError):
    """Raised when writing into a version that is published, retired or never begun."""


class VersionCheckError(RedisStoreError):
    """Raised when a version fails the checks before the switch; nothing became visible."""
