"""Chaos: SIGKILL the real Redis server and the real publish steps at many points, then retry.

Each night publishes new gold lists over the previous night's with the real
``jobs/publish_redis.py`` or ``jobs/publish_s3.py`` (Spark Connect clients of the server
``make up`` runs, as under Airflow). The test follows what the step sends — Redis's ``MONITOR``
stream, the S3 endpoint's request log — and at each kill point, chosen by seed, SIGKILLs the
Redis server (restarted at once on its AOF, ``appendfsync always``) or the step's process, then
retries the step as Airflow would, until it succeeds. A night's first attempts die at up to
three points in publication order; the next attempt must succeed. All the while a reader thread
reads what is served (a Redis lookup; the S3 pointer, its manifest and every part) and checks each
answer against what the version it names must hold (Redis: a lookup every 2 ms; S3: the
pointer, manifest and parts back to back). Asserted: every night ends published; the
pointer is always the old or the new version; no reader saw a partial, mixed or missing list;
every user of the new version is there; the ledger holds each publication exactly once;
every phase was killed at least once (a phase whose commands the step stopped sending would
otherwise go untested unnoticed: the Redis mid-write phase matched MSET long after the lists
moved to HSET buckets). Two kill points per phase by default (``RANKFLOW_CHAOS_KILLS``).
"""

from __future__ import annotations

import hashlib
import os
import queue
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from rankflow.config import Settings, load_settings, repo_root
from rankflow.lake.gold import write_gold
from rankflow.lake.ledger import read_ledger
from rankflow.lake.session import job_command
from rankflow.runs import read_run_record, write_run_record
from rankflow.store.client import redis_client
from rankflow.store.commands import lua_source
from rankflow.store.keys import publication_version
from rankflow.store.reader import RankingReader
from rankflow.store.versions import count_users, version_pointers
from redis_servers import RedisServer, free_port

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.spark, pytest.mark.services]

SEED = int(os.environ.get("RANKFLOW_CHAOS_SEED", "20261202"))
# kill points per test; by default two per phase of the publication
KILLS = int(os.environ.get("RANKFLOW_CHAOS_KILLS", "0"))
KILLS_PER_NIGHT = 4  # a night's first attempts die at up to four points; then one must succeed
MAX_ATTEMPTS = KILLS_PER_NIGHT + 2  # and one spare: a killed attempt may leave zombie writers
USERS = 3000
FIRST_DAY = date(2024, 3, 1)
STEP_TIMEOUT = 180  # seconds an attempt may take before the test gives up on it

Match = Callable[[str], bool]


@dataclass(frozen=True)
class KillPoint:
    """Kill ``target`` once the ``nth`` event matching ``match`` is seen (``phase``: its order)."""

    name: str
    match: Match
    target: str  # "redis" or "step"
    nth: int = 1
    phase: int = 0


def script_sha(name: str) -> str:
    """The SHA1 redis-py's EVALSHA sends for a shipped Lua script."""
    return hashlib.sha1(lua_source(name).encode()).hexdigest()


def draw(
    rng: random.Random, phases: list[tuple[str, Match, int]], targets: tuple[str, ...]
) -> list[KillPoint]:
    """``KILLS`` points, every phase in turn, targets drawn by seed, in a seeded order."""
    points = []
    for number in range(KILLS or 2 * len(phases)):
        phase = number % len(phases)
        name, match, nth = phases[phase]
        points.append(KillPoint(name, match, rng.choice(targets), nth, phase))
    rng.shuffle(points)
    return points


def redis_phases(rng: random.Random) -> list[tuple[str, Match, int]]:
    """The phases of a Redis publication, as the commands the step sends show them."""
    begin, commit, retire = (script_sha(name) for name in ("begin", "commit", "retire"))
    return [
        ("before begin (the step's first command)", lambda c: c.startswith("PING"), 1),
        ("right after begin", lambda c: c.startswith(f"EVALSHA {begin}"), 1),
        # a bucket of users' lists (schema 2: HSET {version}:b:{n} user list ...)
        ("mid-write", lambda c: c.startswith("HSET") and ":parts" not in c, rng.randint(1, 5)),
        ("after a part's acknowledgement", lambda c: c.startswith("HSET") and ":parts" in c, 1),
        ("after the fallback", lambda c: c.startswith("SET") and ":fallback" in c, 1),
        ("between the last write and the switch", lambda c: "value_bytes" in c, 1),
        ("right after the switch", lambda c: c.startswith(f"EVALSHA {commit}"), 1),
        ("after the switch, retiring old versions", lambda c: c.startswith(f"EVALSHA {retire}"), 1),
        ("after the switch, the expiry's key scan", lambda c: c.startswith("SCAN"), 1),
        ("after the ledger write", lambda c: c.startswith("MEMORY"), 1),
    ]


def s3_phases(rng: random.Random) -> list[tuple[str, Match, int]]:
    """The phases of an S3 export, as the requests the endpoint logs show them."""
    return [
        ("before anything (the bucket check)", lambda r: r.startswith("HEAD /"), 1),
        ("after the manifest lookup", lambda r: "_manifest.json" in r and r.startswith("GET"), 1),
        ("mid-upload", lambda r: r.startswith("PUT") and "/part-" in r, rng.randint(1, 3)),
        ("after the manifest", lambda r: r.startswith("PUT") and "_manifest.json" in r, 1),
        ("after the pointer read", lambda r: r.startswith("GET") and "_latest.json" in r, 1),
        ("after the pointer moved (before the ledger)", lambda r: "PUT" in r and "_latest" in r, 1),
    ]


def chaos_redis(folder: Path) -> RedisServer:
    """A Redis of the test's own, durable on every write (AOF, ``appendfsync always``)."""
    return RedisServer(
        folder, "--appendonly", "yes", "--appendfsync", "always", "--maxmemory-policy", "noeviction"
    ).start()


class ChaosS3:
    """A moto S3 server of the test's own whose request log the test follows."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: queue.Queue[str] = queue.Queue()
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        threading.Thread(target=self._follow, daemon=True).start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError("the chaos S3 endpoint did not start")

    def _follow(self) -> None:
        """Queue every logged request as ``METHOD /path`` (werkzeug's access log)."""
        assert self.process.stderr is not None
        for line in self.process.stderr:
            found = re.search(r'"(?:\x1b\[[0-9;]*m)*([A-Z]+) (\S+) HTTP', line)
            if found:
                self.requests.put(f"{found.group(1)} {found.group(2)}")

    def stop(self) -> None:
        """Stop the server."""
        self.process.terminate()
        self.process.wait(timeout=10)


def kill_step(step: subprocess.Popen[bytes]) -> None:
    """SIGKILL the step's whole process group."""
    os.killpg(step.pid, signal.SIGKILL)


def watch_redis(server: RedisServer) -> Callable[[KillPoint, subprocess.Popen[bytes]], str]:
    """Follow the server's MONITOR stream and kill at the point."""

    def watch(point: KillPoint, step: subprocess.Popen[bytes]) -> str:
        seen = 0
        with redis_client(server.url, socket_timeout=1) as client, client.monitor() as monitor:
            while step.poll() is None:
                try:
                    command = monitor.next_command()["command"]
                except Exception:  # a second of silence: look at the step again
                    continue
                if point.match(command):
                    seen += 1
                    if seen == point.nth:
                        server.kill() if point.target == "redis" else kill_step(step)
                        return "killed"
        return "finished before the point"

    return watch


def watch_s3(server: ChaosS3) -> Callable[[KillPoint, subprocess.Popen[bytes]], str]:
    """Follow the endpoint's request log and kill the step at the point."""

    def watch(point: KillPoint, step: subprocess.Popen[bytes]) -> str:
        while not server.requests.empty():  # what earlier attempts and readers sent
            server.requests.get_nowait()
        seen = 0
        while step.poll() is None:
            try:
                request = server.requests.get(timeout=0.5)
            except queue.Empty:
                continue
            if point.match(request):
                seen += 1
                if seen == point.nth:
                    kill_step(step)
                    return "killed"
        return "finished before the point"

    return watch


@dataclass
class ReaderLog:
    """What a concurrent reader saw."""

    reads: int = 0
    unavailable: int = 0
    wrong: list[str] = field(default_factory=list)


def expected_items(offset: int, user: int) -> list[int]:
    """The list a user has in a night of offset ``offset`` (the gold rows are made so)."""
    return [user * 10 + offset, user * 10 + offset + 1]


def redis_reader(url: str, prefix: str) -> Callable[[dict[str, int], ReaderLog], None]:
    """A reader on one client, as an app's service keeps one."""
    reader = RankingReader.from_url(url, prefix=prefix)

    def read(offsets: dict[str, int], log: ReaderLog) -> None:
        """Look a random user up; record any answer that is not its whole list in a version."""
        user = random.randint(1, USERS)
        try:
            answer = reader.lookup(user, "home")
        except Exception:  # the server is being killed or restarted; the client reconnects
            log.unavailable += 1
            time.sleep(0.01)
            return
        log.reads += 1
        if answer.version not in offsets:
            log.wrong.append(f"user {user}: unknown version {answer.version}")
        elif answer.fallback:
            log.wrong.append(f"user {user}: the fallback list of {answer.version} (user lost)")
        elif list(answer.items) != expected_items(offsets[answer.version], user):
            log.wrong.append(f"user {user}: {answer.items} is not its list in {answer.version}")

    return read


def read_s3(settings: Settings, offsets: dict[str, int], log: ReaderLog) -> None:
    """Follow the pointer to its manifest and parts, as a consumer would, and check them all."""
    import io

    import pyarrow.parquet as pq

    from rankflow.publish.s3 import pointer_key, read_json, s3_client

    client = s3_client(settings.s3)
    pointer, _ = read_json(client, settings.s3.bucket, pointer_key(settings.s3, "home"))
    if pointer is None:
        log.unavailable += 1
        return
    log.reads += 1
    manifest, _ = read_json(client, settings.s3.bucket, pointer["manifest"])
    if manifest is None or manifest["version"] not in offsets:
        log.wrong.append(f"pointer {pointer} leads to manifest {manifest and manifest['version']}")
        return
    users = 0
    for part in manifest["parts"]:
        try:
            data = client.get_object(Bucket=settings.s3.bucket, Key=part["key"])["Body"].read()
        except Exception as error:
            log.wrong.append(f"{part['key']} of {manifest['version']} is gone: {error}")
            return
        if hashlib.sha256(data).hexdigest() != part["sha256"]:
            log.wrong.append(f"{part['key']} of {manifest['version']} was rewritten")
            return
        table = pq.read_table(io.BytesIO(data), columns=["user_id", "item_ids"]).to_pylist()
        offset = offsets[manifest["version"]]
        wrong = [r for r in table if r["item_ids"] != expected_items(offset, r["user_id"])]
        if wrong:
            log.wrong.append(f"{part['key']}: {len(wrong)} lists of another version")
            return
        users += len(table)
    if users != USERS:
        log.wrong.append(f"{manifest['version']} holds {users} users, not {USERS}")


def gold_frame(spark: Any, ds: date, offset: int) -> Any:
    """The night's ranked lists: user u gets [10u + offset, 10u + offset + 1], encoded."""
    from pyspark.sql import functions as F

    from rankflow.model.scoring import RANKED_SCHEMA
    from rankflow.store.encoding import encode_list_array

    def encode(batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            yield batch.append_column("items_u32le", encode_list_array(batch.column("item_ids")))

    lists = spark.range(1, USERS + 1, numPartitions=4).select(
        F.col("id").alias("user_id"),
        F.array(F.col("id") * 10 + offset, F.col("id") * 10 + offset + 1).alias("item_ids"),
        F.array(F.lit(0.9).cast("float"), F.lit(0.1).cast("float")).alias("scores"),
    )
    return lists.mapInArrow(encode, RANKED_SCHEMA).select(
        "*", F.lit(ds).alias("ds"), F.lit("home").alias("surface")
    )


def score_night(spark: Any, settings: Settings, ds: date, offset: int) -> str:
    """Write the night's gold partition and the score step's record; return its run id."""
    table = settings.paths.table("gold/rankings")
    snapshot = write_gold(gold_frame(spark, ds, offset), table, ds, "home")
    record = {
        "ds": ds.isoformat(),
        "surface": "home",
        "model_version": "1",
        "top_k": 2,
        "users": snapshot.users,
        "fallback": [1, 2],
        "gold": snapshot.as_record(),
    }
    write_run_record(settings, ds, "score-home", record)
    return f"scheduled__{ds.isoformat()}T02:00:00+00:00"


def start_step(
    settings: Settings, env: dict[str, str], job: str, ds: date, run_id: str, log: Path
) -> subprocess.Popen[bytes]:
    """Start ``jobs/<job>.py`` for ``ds`` as the operator would (its output to ``log``)."""
    args = ["--ds", ds.isoformat(), "--surface", "home", "--run-id", run_id]
    command, extra = job_command(settings, job, args)
    with log.open("ab") as output:
        return subprocess.Popen(
            command,
            cwd=repo_root(),
            env={**env, **extra},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@dataclass
class Chaos:
    """One chaos run of a publish step: nights, kills, retries, a concurrent reader."""

    spark: Any
    settings: Settings
    env: dict[str, str]
    job: str
    watch: Callable[[KillPoint, subprocess.Popen[bytes]], str]
    read: Callable[[dict[str, int], ReaderLog], None]
    check_night: Callable[[str, list[str]], None]
    offsets: dict[str, int] = field(default_factory=dict)
    outcomes: list[tuple[int, KillPoint, str]] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    log: ReaderLog = field(default_factory=ReaderLog)
    read_every: float = 0.0  # seconds between two reads (0: back to back)

    def run(self, points: list[KillPoint]) -> float:
        """Publish two clean nights, then nights whose attempts die until no point is left.

        A night takes the next ``KILLS_PER_NIGHT`` points in phase order (a later attempt
        resumes past the earlier phases); a point an attempt did not need (it succeeded, e.g.
        through a Redis restart) goes to the next night. Returns the seconds it took.
        """
        stop = threading.Event()
        reader = threading.Thread(target=self._read_until, args=(stop,), daemon=True)
        began = time.monotonic()
        pending = list(points)
        night = 0
        try:
            # two clean nights first: from the third on, a publication also retires old ones
            while night < 2 or pending:
                chosen = (
                    sorted(pending[:KILLS_PER_NIGHT], key=lambda p: p.phase) if night >= 2 else []
                )
                used = self.publish(night, chosen)
                pending = [p for p in pending if all(p is not u for u in used)]
                if night == 0:
                    reader.start()
                night += 1
        finally:
            stop.set()
            if reader.is_alive():
                reader.join(timeout=30)
        return time.monotonic() - began

    def _read_until(self, stop: threading.Event) -> None:
        """Read what is served until ``stop``, one read every ``read_every`` seconds."""
        while not stop.wait(self.read_every):
            self.read(self.offsets, self.log)

    def publish(self, night: int, points: list[KillPoint]) -> list[KillPoint]:
        """Publish one night, its first attempts dying at ``points``, retried until it succeeds.

        Returns the points its attempts used.
        """
        ds = FIRST_DAY + timedelta(days=night)
        offset = night % 7
        run_id = score_night(self.spark, self.settings, ds, offset)
        version = publication_version(read_run_record(self.settings, ds, "score-home"), run_id)
        self.offsets[version] = offset  # known before any of its data can be read
        for attempt in range(1, MAX_ATTEMPTS + 1):
            log_path = self.settings.paths.home / f"{self.job}-{night}-{attempt}.log"
            step = start_step(self.settings, self.env, self.job, ds, run_id, log_path)
            if attempt <= len(points):
                self.outcomes.append(
                    (night, points[attempt - 1], self.watch(points[attempt - 1], step))
                )
            try:
                status = step.wait(timeout=STEP_TIMEOUT)
            except subprocess.TimeoutExpired:
                kill_step(step)
                raise
            if status == 0:
                break
        else:
            error = log_path.read_text(errors="replace")[-3000:]
            raise AssertionError(
                f"night {night} still fails after {MAX_ATTEMPTS} attempts: {error}"
            )
        self.check_night(version, self.versions)
        self.versions.append(version)
        return points[:attempt]

    def report(self, seconds: float, kills_of_redis: int = 0) -> list[tuple[int, KillPoint, str]]:
        """Print the run's figures; return the kills."""
        kills = [o for o in self.outcomes if o[2] == "killed"]
        print(
            f"\nchaos {self.job}: {len(self.versions)} nights, {len(kills)} kills "
            f"({kills_of_redis} of Redis), {self.log.reads:,} reads "
            f"({self.log.unavailable:,} unavailable), {len(self.log.wrong)} wrong, "
            f"{seconds:.0f} s (seed {SEED})"
        )
        for night, point, what in self.outcomes:
            print(f"  night {night:2} {point.target:5} {point.name:48} {what}")
        return kills

    def ledger_versions(self, event: str, column: str) -> list[str]:
        """What the ledger records as published by ``event``."""
        ledger = read_ledger(self.spark, self.settings)
        return sorted(ledger[ledger["event"] == event][column])


def step_env(tmp_path: Path, **values: str) -> tuple[Settings, dict[str, str]]:
    """The environment of a home of the test's own, with ``values`` on top."""
    if not os.environ.get("RANKFLOW_SPARK_CONNECT"):
        pytest.fail("the chaos tests run the steps on the Spark Connect server of `make up`")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    if "RANKFLOW_REDIS_URL" in values:  # a server of the test's own, without ACL users
        env.pop("RANKFLOW_REDIS_READER_URL", None)
        env.pop("RANKFLOW_REDIS_ADMIN_URL", None)
    env.update(RANKFLOW_HOME=str(tmp_path / "home"), **values)
    return load_settings(env), env


def test_redis_publications_survive_kills_of_redis_and_of_the_step(spark, tmp_path) -> None:
    server = chaos_redis(tmp_path / "redis")
    settings, env = step_env(tmp_path, RANKFLOW_REDIS_URL=server.url)
    prefix = settings.redis.key_prefix

    def check_night(version: str, before: list[str]) -> None:
        with redis_client(server.url) as client:
            current, previous = version_pointers(client, prefix, "home")
            assert (current, previous) == (version, before[-1] if before else None)
            assert count_users(client, prefix, "home", version) == USERS

    chaos = Chaos(
        spark,
        settings,
        env,
        "publish_redis",
        watch_redis(server),
        redis_reader(server.url, prefix),
        check_night,
        # a lookup every 2 ms (33,413 in a 99 s run): what a kill leaves lasts at least until the
        # next attempt starts (seconds), so each state is still read hundreds of times; back to
        # back, the reader made 6,000 a second, each echoed through MONITOR to the watcher too
        read_every=0.002,
    )
    rng = random.Random(SEED)
    phases = redis_phases(rng)
    try:
        seconds = chaos.run(draw(rng, phases, ("redis", "step")))
    finally:
        server.stop()
    kills = chaos.report(seconds, server.kills)
    assert not chaos.log.wrong, chaos.log.wrong[:5]
    assert chaos.log.reads > 0
    assert {point.name for _, point, _ in kills} == {name for name, _, _ in phases}
    assert server.kills > 0
    assert chaos.ledger_versions("publish_redis", "redis_version") == sorted(chaos.versions)


def test_s3_exports_survive_kills_of_the_step(spark, tmp_path) -> None:
    server = ChaosS3()
    settings, env = step_env(
        tmp_path, RANKFLOW_S3_ENDPOINT=server.url, RANKFLOW_S3_BUCKET="rankflow-chaos"
    )
    from rankflow.publish.s3 import export_prefix, pointer_key, read_json, s3_client

    def check_night(version: str, before: list[str]) -> None:
        client = s3_client(settings.s3)
        pointer, _ = read_json(client, settings.s3.bucket, pointer_key(settings.s3, "home"))
        assert pointer is not None
        assert pointer["version"] == version
        manifest, _ = read_json(client, settings.s3.bucket, pointer["manifest"])
        assert manifest is not None
        assert manifest["users"] == USERS

    chaos = Chaos(
        spark,
        settings,
        env,
        "publish_s3",
        watch_s3(server),
        lambda offsets, log: read_s3(settings, offsets, log),
        check_night,
    )
    rng = random.Random(SEED + 1)
    phases = s3_phases(rng)
    try:
        seconds = chaos.run(draw(rng, phases, ("step",)))
    finally:
        server.stop()
    kills = chaos.report(seconds)
    assert not chaos.log.wrong, chaos.log.wrong[:5]
    assert chaos.log.reads > 0
    assert {point.name for _, point, _ in kills} == {name for name, _, _ in phases}
    prefixes = chaos.ledger_versions("publish_s3", "s3_prefix")
    days = [FIRST_DAY + timedelta(days=n) for n in range(len(chaos.versions))]
    expected = [
        f"s3://{settings.s3.bucket}/{export_prefix(settings.s3, 'home', ds, version)}"
        for ds, version in zip(days, chaos.versions, strict=True)
    ]
    assert prefixes == sorted(expected)  # each export exactly once
