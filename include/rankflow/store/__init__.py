"""The Redis contract: keys, encoding, versioned writer, version switch, reader, client.

A nightly publication writes every user's list into a NEW version beside the current one, checks
it, then makes it visible with one atomic Lua step; readers never see a half-written version. The
key layout and the value encoding are a contract for readers in any language and are documented
in ``docs/redis-layout.md``: keep that page, the pure functions of ``keys`` and ``encoding``
and the Lua scripts of this package in step.

Lifecycle (driver = Spark driver or Airflow task, executors = Spark tasks)::

    version = new_version_id(ds, run_id)                          # driver
    begin_version(client, prefix, surface, version, ds=ds, model_version=mv, k=k)
    stats = write_arrow(url, prefix, surface, version, batches, part=name)  # executors
    write_fallback(client, prefix, surface, version, popular_items)
    result = commit_version(client, prefix, surface, version, users, expected_parts=parts)
    expire_old_versions(client, prefix, surface, ttl_seconds=settings.old_version_ttl_seconds)

Readers need only this package's face: ``from rankflow.store import RankingReader``. Writers and
operators import the submodules (``store.writer``, ``store.versions``, ``store.keys``).
"""

from rankflow.store.errors import NoCurrentVersionError, RedisStoreError
from rankflow.store.reader import Lookup, RankingReader

__all__ = ["Lookup", "NoCurrentVersionError", "RankingReader", "RedisStoreError"]
