"""Redis over TLS: the documented ``rediss://…?ssl_ca_certs=`` URL against a real TLS server."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import redis

from rankflow.config import load_settings
from rankflow.store.keys import new_version_id
from rankflow.store.reader import RankingReader
from rankflow.store.versions import commit_version
from rankflow.store.writer import begin_version, write_fallback, write_lists
from redis_servers import RedisServer, make_tls_files

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server that speaks TLS only, with rankflow's ACL users."""
    folder = tmp_path_factory.mktemp("tls")
    server = RedisServer(folder / "data", acl=True, tls=make_tls_files(folder / "certs")).start()
    yield server
    server.stop()


def test_publish_and_lookup_over_tls_with_the_ca_file(tls_server: RedisServer, tmp_path) -> None:
    settings = load_settings(
        {
            "RANKFLOW_HOME": str(tmp_path),
            "RANKFLOW_REDIS_URL": tls_server.url,
            "RANKFLOW_REDIS_READER_URL": tls_server.reader_url,
        }
    )
    assert settings.redis.url.startswith("rediss://")
    day = date(2026, 11, 1)
    version = new_version_id(day, "tls")
    users = np.arange(1, 11, dtype=np.int64)
    with redis.Redis.from_url(settings.redis.url) as writer:
        begin_version(writer, "rf", "home", version, ds=day, model_version="1", k=3)
        stats = write_lists(
            settings.redis.url, "rf", "home", version, users, users[:, None] * [1, 2, 3]
        )
        write_fallback(writer, "rf", "home", version, [7])
        assert commit_version(writer, "rf", "home", version, stats.users).status == "switched"
    reader = RankingReader.from_url(settings.redis.lookup_url)
    assert reader.lookup(4, "home").items == [4, 8, 12]
    reader.close()


def test_without_tls_or_without_the_ca_nothing_connects(tls_server: RedisServer) -> None:
    plain = tls_server.reader_url.replace("rediss://", "redis://").split("?")[0]
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis.from_url(plain, socket_timeout=2).ping()
    unverified = tls_server.reader_url.split("?")[0]  # TLS, but the system CAs only
    with pytest.raises(redis.exceptions.ConnectionError, match=r"(?i)certificate"):
        redis.Redis.from_url(unverified, socket_timeout=2).ping()


def test_an_airflow_tls_connection_becomes_the_same_url(tls_server: RedisServer) -> None:
    sys.path.insert(0, str(ROOT / "plugins"))
    from rankflow_connections import redis_url_from_connection

    reader = redis.connection.parse_url(tls_server.reader_url)
    conn = SimpleNamespace(
        host="127.0.0.1",
        port=tls_server.port,
        login=reader["username"],
        password=reader["password"],
        extra_dejson={"ssl": True, "ssl_ca_certs": reader["ssl_ca_certs"]},
    )
    url = redis_url_from_connection(conn)
    assert url.startswith("rediss://")
    assert "ssl_ca_certs=" in url
    with redis.Redis.from_url(url) as client:
        assert client.get("rf:home:current") is not None
