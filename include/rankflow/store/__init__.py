"""The Redis contract: keys, encoding, versioned writer, version switch, reader, client.

Readers need only this package's face: ``from rankflow.store import RankingReader``. Writers and
operators import the submodules (``store.writer``, ``store.versions``, ``store.keys``).
"""

from rankflow.store.errors import NoCurrentVersionError, RedisStoreError
from rankflow.store.reader import Lookup, RankingReader

__all__ = ["Lookup", "NoCurrentVersionError", "RankingReader", "RedisStoreError"]
