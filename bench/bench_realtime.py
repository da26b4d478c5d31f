"""Benchmark the real-time half: the ranking service over HTTP, and materialisation.

``make bench-realtime`` (bench/README.md). Measured in one run, against the current feature
version and champion model in Redis and the registry (``make demo`` first):

(1) ``rankflow serve --workers 1`` as a subprocess on a free loopback port, driven by a load
    generator in another process: an open-loop constant-rate client (this file with
    ``--load-client``: asyncio on uvloop, keep-alive connections, a pacing thread; latency
    measured from each request's scheduled send time, so a slow answer delays no later
    measurement: no coordinated omission). 500 candidates per request (unsold items of the
    feature version's snapshot), users drawn from the users with features plus a share of
    unknown users:

    - p50 / p99 / p99.9 at a fixed 100 requests/s (3 runs, in turn with a second service whose
      serving log is off: the log's cost is the ratio of the two p50s, and a third whose
      refresher is parked, a diagnostic of what the champion poll costs the tail);
    - the highest constant rate whose p99 stays within 10 ms (steps up until one fails twice,
      then the best step twice more), one worker = one core;
    - ``wrk`` (closed loop, Lua script with the same bodies) at saturation: requests/s and its
      latency percentiles, as a second view;
    - Redis round trips per request from ``MONITOR`` over one run (the rank path's ``MGET``
      against the requests served; the serving log's ``XADD`` and pipelines) beside
      ``INFO commandstats`` deltas, and the fallback share from the services' ``/metrics``;
    - the floor: the p50 over in-process ``inplace_predict`` of the same 500 rows (one
      thread), and the request path's stages timed in-process with the service's functions.
(2) bytes per item vector in Redis (``STRLEN`` and ``MEMORY USAGE`` of a sample of item keys).
(3) one run of the ``materialise_features`` step (Spark Connect, as ``rankflow demo`` runs
    steps) on the latest features day: entities/s overall and while it wrote to Redis (first
    to last ``MSET``), with its timeline polled from Redis; then the target judged at scale:
    ``bench_materialise.py`` in its own process (the demo's day copied to ``--scale-users``
    users, ``--runs`` measured runs, write + switch against ``redis-benchmark``).

It is a benchmark, not a test: it prints ``met`` / ``NOT MET`` per target and exits 0 once it
has measured (1 when it cannot start: nothing published, no champion). The serving-log entries
its requests produced are deleted from the stream afterwards (``--keep-log`` keeps them). The
materialisation makes a new feature version current (older ones expire as usual); it runs
last, after the services stopped, so every service figure is of one version.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from rankflow.config import Settings
    from rankflow.serving.state import FeatureVersion

# the targets (#14, "Done when")
TARGET_P50_MS = 4.0
TARGET_P99_MS = 10.0
TARGET_RATE = 250.0  # requests/s per worker core with p99 <= TARGET_P99_MS
TARGET_ROUND_TRIPS = 1.0
TARGET_ITEM_BYTES = 150.0
TARGET_ENTITIES_PER_S = 500_000.0
TARGET_LOG_COST = 1.05  # p50 with the serving log over p50 without it

SURFACE = "search"
# what the service's refresher sends on the rank path's connections (every 2 s): not per request
REFRESHER_COMMANDS = {"mget", "get", "hgetall"}
UNKNOWN_USER_BASE = 3_900_000_000  # unknown users' ids start here (no feature version has them)


class BenchError(RuntimeError):
    """The benchmark cannot run (nothing to serve): the message says what to do."""


def say(message: str) -> None:
    """Print one progress line immediately."""
    print(message, flush=True)


def env_int(name: str, default: int) -> int:
    """Return an integer environment variable, or ``default`` when unset or empty."""
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


@dataclass(frozen=True)
class Options:
    """The scale and pacing of one run."""

    candidates: int
    bodies: int
    unknown_share: float
    fixed_rate: float
    fixed_seconds: float
    runs: int
    steps: list[float]
    step_seconds: float
    connections: int
    wrk_seconds: int
    wrk_connections: int
    seed: int
    workdir: Path
    materialise: bool
    scale_users: int
    keep_log: bool


def parse_args(argv: Sequence[str], home: Path) -> Options:
    """Options from ``BENCH_*`` variables, overridden on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=env_int("BENCH_CANDIDATES", 500))
    parser.add_argument("--bodies", type=int, default=2000, help="distinct request bodies")
    parser.add_argument("--unknown-share", type=float, default=0.1, help="share of unknown users")
    parser.add_argument("--fixed-rate", type=float, default=100.0)
    parser.add_argument("--fixed-seconds", type=float, default=15.0)
    parser.add_argument("--runs", type=int, default=3, help="runs per repeated figure (median)")
    parser.add_argument(
        "--steps", default="100,150,200,250,300,400,500,600,800,1000", help="constant rates"
    )
    parser.add_argument("--step-seconds", type=float, default=12.0)
    parser.add_argument("--connections", type=int, default=64, help="the client's connections")
    parser.add_argument("--wrk-seconds", type=int, default=10)
    parser.add_argument("--wrk-connections", type=int, default=16)
    parser.add_argument("--seed", type=int, default=env_int("BENCH_SEED", 7))
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(os.environ.get("BENCH_DIR", str(home / "bench"))),
    )
    parser.add_argument(
        "--skip-materialise", action="store_true", help="do not run the materialise step"
    )
    parser.add_argument(
        "--scale-users",
        type=int,
        default=env_int("BENCH_USERS", 500_000),
        help="users of the scaled materialisation (bench_materialise.py; 0 skips it)",
    )
    parser.add_argument(
        "--keep-log", action="store_true", help="keep the benchmark's serving-log entries"
    )
    args = parser.parse_args(argv)
    return Options(
        candidates=args.candidates,
        bodies=args.bodies,
        unknown_share=args.unknown_share,
        fixed_rate=args.fixed_rate,
        fixed_seconds=args.fixed_seconds,
        runs=max(1, args.runs),
        steps=[float(s) for s in args.steps.split(",") if s.strip()],
        step_seconds=args.step_seconds,
        connections=args.connections,
        wrk_seconds=args.wrk_seconds,
        wrk_connections=args.wrk_connections,
        seed=args.seed,
        workdir=args.workdir.resolve(),
        materialise=not args.skip_materialise,
        scale_users=args.scale_users,
        keep_log=args.keep_log,
    )


def first_api_key() -> str:
    """The first of the callers' keys (``RANKFLOW_API_KEYS``, exported by make)."""
    keys = [k.strip() for k in os.environ.get("RANKFLOW_API_KEYS", "").split(",") if k.strip()]
    if not keys:
        raise BenchError("RANKFLOW_API_KEYS is empty: run the benchmark through make")
    return keys[0]


def median_range(values: Sequence[float], unit: str = "", digits: int = 2) -> str:
    """``median [min .. max]`` (just the value when there is one)."""
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.{digits}f}{unit}"
    return f"{med:.{digits}f}{unit} [{min(values):.{digits}f} .. {max(values):.{digits}f}]"


# =========================================================================== the load client
# Runs in its own process (``--load-client SPEC``): constant rate, open loop, keep-alive.


async def drive(spec: dict[str, Any]) -> dict[str, Any]:
    """Send ``rate`` x ``seconds`` requests on schedule; return per-request times and outcomes.

    Each request's latency is measured from its scheduled send time: when every connection is
    busy the request waits in the queue and that wait counts.
    """
    import numpy as np

    host, port = spec["host"], int(spec["port"])
    bodies = Path(spec["bodies"]).read_bytes().splitlines()
    head = (
        f"POST /v1/rank HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {first_api_key()}\r\n"
        "Content-Type: application/json\r\nContent-Length: "
    ).encode()
    requests = [head + str(len(b)).encode() + b"\r\n\r\n" + b for b in bodies]
    rate, offset = float(spec["rate"]), int(spec["offset"])
    n = max(1, round(rate * float(spec["seconds"])))
    sent = np.full(n, np.nan)
    done = np.full(n, np.nan)
    status = np.zeros(n, dtype=np.int16)
    fallback = np.zeros(n, dtype=bool)
    ids: list[bytes] = [b""] * n
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    connections = [await asyncio.open_connection(host, port) for _ in range(spec["connections"])]

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            i = await queue.get()
            if i is None:
                return
            sent[i] = time.perf_counter()
            writer.write(requests[(offset + i) % len(requests)])
            try:
                header = await reader.readuntil(b"\r\n\r\n")
                at = header.lower().find(b"content-length:")
                length = int(header[at + 15 : header.index(b"\r\n", at)]) if at >= 0 else 0
                body = await reader.readexactly(length)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                status[i] = -1
                return
            done[i] = time.perf_counter()
            status[i] = int(header[9:12])
            fallback[i] = b'"fallback":true' in body
            if body.startswith(b'{"request_id":"'):
                ids[i] = body[15:47]

    workers = [asyncio.create_task(worker(r, w)) for r, w in connections]
    loop = asyncio.get_running_loop()
    start = time.perf_counter() + 0.05
    schedule = start + np.arange(n) / rate

    def pace() -> None:
        # a thread that sleeps to each send time (nanosleep: microseconds, where the event
        # loop's timers have millisecond steps) and hands the request to the loop
        for i in range(n):
            delay = schedule[i] - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            loop.call_soon_threadsafe(queue.put_nowait, i)
        for _ in workers:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    cpu = time.process_time()
    pacer = threading.Thread(target=pace, daemon=True)
    pacer.start()
    await loop.run_in_executor(None, pacer.join)
    _, pending = await asyncio.wait(workers, timeout=float(spec["drain_seconds"]))
    cpu = time.process_time() - cpu
    for task in pending:
        task.cancel()
    for _, writer in connections:
        writer.close()
    return {
        "scheduled": schedule - start,
        "sent": sent - start,
        "done": done - start,
        "status": status,
        "fallback": fallback,
        "ids": ids,
        "cpu": np.array([cpu, time.perf_counter() - start]),  # the client's CPU s, wall s
    }


def client_main(spec_path: str) -> int:
    """The load client's process: run one constant-rate phase, write the outcome (npz)."""
    import numpy as np

    spec = json.loads(Path(spec_path).read_text())
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # the plain loop keeps the same schedule, with more overhead
        pass
    out = asyncio.run(drive(spec))
    Path(spec["ids"]).write_bytes(b"\n".join(i for i in out.pop("ids") if i))
    np.savez(spec["out"], **out)
    return 0


# =========================================================================== one run's figures


@dataclass
class RunStats:
    """One constant-rate run as the client saw it (milliseconds)."""

    label: str
    rate: float
    seconds: float
    requests: int
    ok: int
    errors: int
    fallbacks: int
    p50: float
    p99: float
    p999: float
    max: float
    achieved: float  # answered requests per second of the run
    lag_p99: float  # send time minus scheduled time, p99 (client lateness + queueing)
    client_cpu: float  # the load client's CPU time over the run's wall time
    redis: dict[str, Any] = field(default_factory=dict)

    @property
    def sustained(self) -> bool:
        """Every request answered with a 200, at the rate asked for, within the p99 target."""
        return self.errors == 0 and self.p99 <= TARGET_P99_MS and self.achieved >= 0.95 * self.rate

    def line(self) -> str:
        """One line of the progress report."""
        return (
            f"    {self.label:<22} p50 {self.p50:6.2f}  p99 {self.p99:6.2f}  "
            f"p99.9 {self.p999:6.2f}  max {self.max:7.2f} ms  {self.ok}/{self.requests} ok"
            f"{f', {self.errors} errors' if self.errors else ''}"
            f"{f', {self.fallbacks} fallbacks' if self.fallbacks else ''}, "
            f"{self.achieved:.0f}/s, send lag p99 {self.lag_p99:.2f} ms, client CPU "
            f"{self.client_cpu:.0%}{'  (client late: machine busy?)' if self.client_late else ''}"
        )

    @property
    def client_late(self) -> bool:
        """The client itself sent late while connections were free: another process had the CPU.

        Below saturation a request only waits for a connection when 64 are busy, so a send lag
        over 1 ms at p99 (with the median latency low) means the client was not scheduled.
        """
        return self.lag_p99 > 1.0 and self.p50 < TARGET_P99_MS


def run_stats(label: str, rate: float, seconds: float, out: dict[str, Any]) -> RunStats:
    """Percentiles from the client's per-request times (unanswered requests: infinite)."""
    import numpy as np

    ok = out["status"] == 200
    latency = (out["done"] - out["scheduled"]) * 1000.0
    latency = np.where(ok, latency, np.inf)
    p50, p99, p999 = np.percentile(latency, [50, 99, 99.9], method="higher")
    answered = out["done"][ok]
    span = float(np.nanmax(answered) - out["scheduled"][0]) if ok.any() else float("inf")
    lag = (out["sent"] - out["scheduled"]) * 1000.0
    lag = lag[~np.isnan(lag)]
    return RunStats(
        label=label,
        rate=rate,
        seconds=seconds,
        requests=len(latency),
        ok=int(ok.sum()),
        errors=int((~ok).sum()),
        fallbacks=int(out["fallback"].sum()),
        p50=float(p50),
        p99=float(p99),
        p999=float(p999),
        max=float(latency.max()),
        achieved=float(ok.sum() / span) if span > 0 else 0.0,
        lag_p99=float(np.percentile(lag, 99)) if len(lag) else float("nan"),
        client_cpu=float(out["cpu"][0] / out["cpu"][1]),
    )


# =========================================================================== the service


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get_json(url: str) -> tuple[int, Any]:
    """GET a JSON document; return the status and the decoded body."""
    import urllib.error

    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as failure:
        return failure.code, json.loads(failure.read() or b"{}")


class Service:
    """``rankflow serve --workers 1`` on a free port, as its own process."""

    def __init__(self, name: str, workdir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"serve-{name}.log"
        command = [sys.executable, "-m", "rankflow.cli", "serve"]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, seconds: float = 120.0) -> dict[str, Any]:
        """Wait for ``/readyz`` to answer 200; return what it serves."""
        deadline = time.monotonic() + seconds
        last: Any = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(
                    f"rankflow serve ({self.name}) exited with {self.process.returncode}: "
                    f"{self.log_path.read_text()[-1500:]}"
                )
            try:
                status, last = get_json(f"{self.base}/readyz")
                if status == 200:
                    return dict(last)
            except OSError:
                pass
            time.sleep(0.25)
        raise BenchError(
            f"rankflow serve ({self.name}) never became ready: /readyz said {last}; is there a "
            "current feature version and a champion of the same feature schema? Run `make demo`"
        )

    def metrics(self) -> dict[str, float]:
        """The service's Prometheus samples as ``name{labels}`` -> value."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"{self.base}/metrics", timeout=5) as response:
            text = response.read().decode()
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return samples

    def stop(self) -> None:
        """Stop the service (SIGTERM: uvicorn drains and the serving log sends its queue)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def gc_pauses(samples: dict[str, float]) -> dict[str, dict[str, float]]:
    """Per generation: collections, their total seconds and how many took over 50 ms."""
    found: dict[str, dict[str, float]] = {}
    for generation in ("0", "1", "2"):
        count = metric_sum(samples, "rankflow_gc_pause_seconds_count", generation=generation)
        total = metric_sum(samples, "rankflow_gc_pause_seconds_sum", generation=generation)
        quick = metric_sum(
            samples, "rankflow_gc_pause_seconds_bucket", generation=generation, le="0.05"
        )
        found[generation] = {"count": count, "seconds": total, "over_50ms": count - quick}
    return found


def metric_sum(samples: dict[str, float], name: str, **labels: str) -> float:
    """Sum the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total


def reasons(samples: dict[str, float]) -> dict[str, float]:
    """Fallback answers by reason."""
    found: dict[str, float] = {}
    for key, value in samples.items():
        match = re.fullmatch(r'rankflow_rank_fallbacks_total\{reason="([^"]*)"\}', key)
        if match and value:
            found[match.group(1)] = value
    return found


# =========================================================================== the benchmark


class Bench:
    """One benchmark run: the data, the services, the phases and their figures."""

    def __init__(self, settings: Settings, options: Options) -> None:
        from rankflow.store.client import redis_client

        self.settings = settings
        self.options = options
        self.prefix = settings.redis.key_prefix
        if not settings.redis.admin_url:
            raise BenchError("RANKFLOW_REDIS_ADMIN_URL is unset: run the benchmark through make")
        self.admin = redis_client(settings.redis.admin_url)
        self.reader = redis_client(settings.redis.lookup_url)
        self.workdir = options.workdir / f"realtime-{os.getpid()}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.bodies_path = self.workdir / "bodies.jsonl"
        self.ids: dict[bytes, str] = {}  # request id -> phase, for the serving log
        self.candidate_sets: set[bytes] = set()  # every body's candidates, as the log has them
        self.offset = 0  # the next request body a run starts at
        self.result: dict[str, Any] = {}
        self.codecs: dict[str, Any] = {}  # the service's JSON decoder and encoder, made once
        self.latencies: dict[str, np.ndarray] = {}  # each run's latencies (ms), by label
        self.floor_input: tuple[Any, np.ndarray]  # the champion (1 thread) and one request's rows

    # ----------------------------------------------------------------------- what is served

    def current_feature_version(self) -> str:
        """The feature version readers get now."""
        from rankflow.store.keys import FEATURES
        from rankflow.store.versions import version_pointers

        version, _ = version_pointers(self.reader, self.prefix, FEATURES)
        if version is None:
            raise BenchError("no feature version is current in Redis: run `make demo` first")
        return version

    def preflight(self) -> tuple[str, str, FeatureVersion]:
        """The current feature version and champion, or a clear error to run ``make demo``."""
        from rankflow.model.registry import served_model
        from rankflow.serving.state import load_feature_version
        from rankflow.store.keys import FEATURES
        from rankflow.store.versions import version_pointers

        try:
            version, _ = version_pointers(self.reader, self.prefix, FEATURES)
        except Exception as problem:
            raise BenchError(f"cannot read the feature version pointer ({problem})") from problem
        if version is None:
            raise BenchError(
                f"no feature version is current in Redis ({self.prefix}:features:current): "
                "run `make demo` first"
            )
        try:
            model, model_hash = served_model(self.settings)
        except Exception as problem:
            raise BenchError(
                f"no champion model in the registry ({problem}): run `make demo` first"
            ) from problem
        try:
            features = load_feature_version(self.reader, self.prefix, version)
        except Exception as problem:
            raise BenchError(
                f"cannot load feature version {version} ({problem}): run `make demo` first"
            ) from problem
        if model_hash != features.schema_hash:
            raise BenchError(
                f"the champion (model {model}, feature schema {model_hash}) does not match the "
                f"current feature version {version} (schema {features.schema_hash}): the service "
                "would refuse it; run `make demo` first"
            )
        return version, model, features

    def known_users(self, version: str) -> list[int]:
        """Every user with a vector in the feature version (SCAN of its ``u`` keys)."""
        from rankflow.store.commands import scan_keys
        from rankflow.store.keys import feature_key

        pattern = feature_key(self.prefix, version, "u", 0)[:-1] + "*"
        users = {int(key.rsplit(b":", 1)[1]) for key in scan_keys(self.admin, pattern, count=5000)}
        if not users:
            raise BenchError(f"feature version {version} has no user vectors: run `make demo`")
        return sorted(users)

    def write_bodies(self, features: FeatureVersion, users: list[int]) -> list[bytes]:
        """Request bodies (one JSON a line): a user, ``search``, N unsold snapshot items."""
        import msgspec
        import numpy as np

        rng = np.random.default_rng(self.options.seed)
        snapshot = features.snapshot
        unsold = snapshot.item_ids[~snapshot.is_sold]
        if len(unsold) < self.options.candidates:
            raise BenchError(
                f"the snapshot has {len(unsold)} unsold items, fewer than "
                f"{self.options.candidates} candidates"
            )
        bodies = []
        for n in range(self.options.bodies):
            unknown = rng.random() < self.options.unknown_share
            user = UNKNOWN_USER_BASE + n if unknown else int(rng.choice(users))
            candidates = rng.choice(unsold, self.options.candidates, replace=False)
            body = {"user_id": user, "surface": SURFACE, "candidates": candidates.tolist()}
            bodies.append(msgspec.json.encode(body))
            self.candidate_sets.add(candidates.astype("<u4").tobytes())
        self.bodies_path.write_bytes(b"\n".join(bodies) + b"\n")
        return bodies

    # ----------------------------------------------------------------------- in process

    def in_process(
        self, features: FeatureVersion, bodies: list[bytes], samples: int = 300
    ) -> dict[str, Any]:
        """The floor and the request path's stages, timed in this process (one thread).

        The champion is loaded as the service loads it (``load_model``, ``booster_from_bytes``
        with one thread); each stage calls the service's own functions in the order of
        ``serving.ranker.rank`` and ``serving.app``.
        """
        import msgspec
        import numpy as np

        from rankflow.model.fit import booster_from_bytes
        from rankflow.model.registry import load_model, served_model
        from rankflow.serving.ranker import fetch_user, rank
        from rankflow.serving.state import Served, ServedModel, input_layout

        raw, version = load_model(self.settings, "champion")
        booster = booster_from_bytes(raw, nthread=1)
        model = ServedModel(
            version, features.schema_hash, booster, input_layout(list(booster.feature_names or []))
        )
        served = Served(model, features)
        found: dict[str, Any] = {
            "model_version": version,
            "trees": int(booster.num_boosted_rounds()),
            "model_inputs": len(model.layout),
        }
        stages: dict[str, list[float]] = {}
        whole: list[float] = []
        matrix = None
        try:
            for body in bodies[:samples]:
                times, matrix_of = self.stages_of(served, body)
                for stage, seconds in times.items():
                    stages.setdefault(stage, []).append(seconds * 1000.0)
                matrix = matrix if matrix is not None else matrix_of
        except Exception as problem:  # the library changed under the replica: say so
            found["stages_error"] = f"{type(problem).__name__}: {problem}"
            stages = {}
        decoder = msgspec.json.Decoder()
        for body in bodies[:samples]:
            req = decoder.decode(body)
            candidates = np.asarray(req["candidates"], dtype=np.int64)
            fetched, _ = fetch_user(self.reader, self.prefix, features.version, req["user_id"])
            started = time.perf_counter()
            rank(served, fetched, candidates, int(self.settings.pipeline["serving"]["default_k"]))
            whole.append((time.perf_counter() - started) * 1000.0)
        if matrix is None:  # the replica failed: build the rows through rank() itself
            req = decoder.decode(bodies[0])
            candidates = np.asarray(req["candidates"], dtype=np.int64)
            fetched, _ = fetch_user(self.reader, self.prefix, features.version, req["user_id"])
            kept = rank(served, fetched, candidates, 10, keep_inputs=True)
            assert kept.inputs is not None
            matrix = kept.inputs.matrix
        self.floor_input = (booster, matrix)
        floor = self.floor()
        polls = []
        for _ in range(5):
            started = time.perf_counter()
            served_model(self.settings)
            polls.append((time.perf_counter() - started) * 1000.0)
        found |= {
            "rows": int(matrix.shape[0]),
            "floor_ms": [floor],
            "rank_ms": statistics.median(whole),
            "stages_ms": {k: statistics.median(v) for k, v in stages.items()},
            "stages_mean_ms": {k: statistics.fmean(v) for k, v in stages.items()},
            "champion_poll_ms": statistics.median(polls),
        }
        return found

    def floor(self, calls: int = 1000) -> float:
        """Median ms of ``inplace_predict`` of the same rows (the floor), after 50 unmeasured."""
        booster, matrix = self.floor_input
        for _ in range(50):
            booster.inplace_predict(matrix)
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            booster.inplace_predict(matrix)
            times.append((time.perf_counter() - started) * 1000.0)
        return statistics.median(times)

    def stages_of(self, served: Any, body: bytes) -> tuple[dict[str, float], np.ndarray]:
        """Time one request's stages with the service's functions (seconds per stage)."""
        import uuid

        import msgspec
        import numpy as np

        from rankflow.serving.app import RankedItem, RankRequest, RankResponse, served_record
        from rankflow.serving.ranker import (
            candidate_rows,
            fetch_user,
            ranked_answer,
            user_inputs,
            user_item_features,
        )
        from rankflow.serving.state import model_matrix

        clock = time.perf_counter
        decoder, encoder = self.codecs.setdefault(
            "json", (msgspec.json.Decoder(RankRequest), msgspec.json.Encoder())
        )
        t0 = clock()
        req = decoder.decode(body)
        candidates = np.asarray(req.candidates, dtype=np.int64)
        if len(np.unique(candidates)) != len(candidates):
            raise ValueError("repeated candidates")
        k = int(self.settings.pipeline["serving"]["default_k"])
        t1 = clock()
        (value, history), _ = fetch_user(
            self.reader, self.prefix, served.features.version, req.user_id
        )
        t2 = clock()
        rows = candidate_rows(served, candidates)
        t3 = clock()
        user = user_inputs((value, history), rows.ids)
        t4 = clock()
        cross = user_item_features(served, rows, user)
        t5 = clock()
        matrix = model_matrix(served, rows.vectors, user.vector, cross)
        t6 = clock()
        scores = served.model.booster.inplace_predict(matrix)
        t7 = clock()
        ranked = ranked_answer(candidates, rows, scores, k, value is not None)
        t8 = clock()
        request_id = uuid.uuid4().hex
        items_out = [RankedItem(i, s) for i, s in zip(ranked.item_ids, ranked.scores, strict=True)]
        result = RankResponse(
            request_id, items_out, served.model.version, served.features.version, False
        )
        encoder.encode(result)
        t9 = clock()
        record = served_record(request_id, 0, req, k, candidates, result, ranked)
        msgspec.msgpack.encode(record)
        t10 = clock()
        marks = [t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10]
        names = [
            "decode request (msgspec, ids)",
            "MGET (redis-py, loopback)",
            "snapshot positions, sold",
            "user vector/profile/history",
            "cross_features",
            "model_matrix",
            "inplace_predict",
            "order (lexsort, lists)",
            "response + JSON encode",
            "log record + msgpack",
        ]
        times = {name: marks[n + 1] - marks[n] for n, name in enumerate(names)}
        return times, matrix

    # ----------------------------------------------------------------------- Redis counters

    def counters(self) -> dict[str, Any]:
        """``INFO all``: every command's calls and the server's read and write events."""
        info: Any = self.admin.info("all")
        calls = {k[8:]: int(v["calls"]) for k, v in info.items() if k.startswith("cmdstat_")}
        return {
            "t": time.perf_counter(),
            "calls": calls,
            "commands": int(info["total_commands_processed"]),
            "writes": int(info["total_writes_processed"]),
        }

    @staticmethod
    def delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
        """Counter differences between two snapshots."""
        names = set(before["calls"]) | set(after["calls"])
        calls = {n: after["calls"].get(n, 0) - before["calls"].get(n, 0) for n in names}
        return {
            "seconds": after["t"] - before["t"],
            "calls": {n: c for n, c in calls.items() if c},
            "commands": after["commands"] - before["commands"],
            "writes": after["writes"] - before["writes"],
        }

    # ----------------------------------------------------------------------- load phases

    def load(self, service: Service, label: str, rate: float, seconds: float) -> RunStats:
        """One constant-rate phase from a separate client process."""
        import numpy as np

        out_path, ids_path = self.workdir / "run.npz", self.workdir / "run.ids"
        spec: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": service.port,
            "bodies": str(self.bodies_path),
            "rate": rate,
            "seconds": seconds,
            "offset": self.offset,
            "connections": self.options.connections,
            "drain_seconds": 10.0,
            "out": str(out_path),
            "ids": str(ids_path),
        }
        self.offset += round(rate * seconds)
        spec_path = self.workdir / "run.json"
        spec_path.write_text(json.dumps(spec))
        command = [sys.executable, str(Path(__file__).resolve()), "--load-client", str(spec_path)]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 120, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"the load client failed: {done.stderr[-2000:]}")
        with np.load(out_path) as data:
            out = {k: data[k] for k in data.files}
        for rid in ids_path.read_bytes().split(b"\n"):
            if rid:
                self.ids[rid] = label
        ok = out["status"] == 200
        self.latencies[label] = np.where(ok, (out["done"] - out["scheduled"]) * 1000.0, np.inf)
        return run_stats(label, rate, seconds, out)

    def measured(
        self, service: Service, label: str, rate: float, seconds: float
    ) -> tuple[RunStats, dict[str, Any], dict[str, float]]:
        """A phase with the Redis counters and the service's metrics around it."""
        metrics_before = service.metrics()
        before = self.counters()
        stats = self.load(service, label, rate, seconds)
        after = self.counters()
        metrics_after = service.metrics()
        metrics = {
            k: metrics_after.get(k, 0.0) - metrics_before.get(k, 0.0)
            for k in set(metrics_after) | set(metrics_before)
        }
        return stats, self.delta(before, after), metrics

    # ----------------------------------------------------------------------- MONITOR

    def monitored(
        self, service: Service, version: str, rate: float, seconds: float
    ) -> dict[str, Any]:
        """Every command the service sends during one run, from Redis's ``MONITOR``.

        Exact where ``INFO commandstats`` is server-wide: the rank path's ``MGET`` s are those of
        the feature version's user keys; the service's other commands (on the connections that
        sent those, or the serving log's ``XADD`` s) are its refresher's. ``XADD`` s less than
        5 ms apart on one connection are counted as one pipeline flush (the logger sends
        one every 50 ms or 256 records).
        """
        from rankflow.store.client import redis_client
        from rankflow.store.keys import feature_key, served_log_key

        user_keys = feature_key(self.prefix, version, "u", 0)[:-1].encode()
        stream = served_log_key(self.prefix).encode()
        stop = threading.Event()
        seen: list[tuple[bytes, bytes, bytes, float]] = []  # client, command, first arg, time

        def watch() -> None:
            client = redis_client(self.settings.redis.admin_url)
            with client.monitor() as monitor:
                while not stop.is_set():
                    line = monitor.connection.read_response()
                    if not isinstance(line, bytes):
                        continue
                    stamp, _, rest = line.partition(b" [")
                    where, _, args = rest.partition(b"] ")
                    parts = args.split(b'" "', 2)
                    name = parts[0].strip(b'"').lower()
                    first = parts[1].strip(b'"') if len(parts) > 1 else b""
                    seen.append((where, name, first, float(stamp)))
            client.close()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        time.sleep(0.5)
        before = service.metrics()
        stats = self.load(service, "monitor", rate, seconds)
        after = service.metrics()
        time.sleep(0.5)  # the serving log's last pipeline
        stop.set()
        self.admin.ping()  # one more command for the monitor to wake up to
        watcher.join(5)
        requests = metric_sum(after, "rankflow_rank_requests_total", status="200") - metric_sum(
            before, "rankflow_rank_requests_total", status="200"
        )
        rank_path = {w for w, n, f, _ in seen if n == b"mget" and f.startswith(user_keys)}
        logger = {w for w, n, f, _ in seen if n == b"xadd" and f == stream}
        mgets = sum(1 for w, n, f, _ in seen if n == b"mget" and f.startswith(user_keys))
        others: dict[str, int] = {}
        for where, name, first, _ in seen:
            if where in rank_path and not (name == b"mget" and first.startswith(user_keys)):
                others[name.decode()] = others.get(name.decode(), 0) + 1
        flushes = xadds = 0
        for connection in logger:
            times = sorted(t for w, n, _, t in seen if w == connection and n == b"xadd")
            xadds += len(times)
            flushes += 1 + sum(1 for a, b in itertools.pairwise(times) if b - a > 0.005)
        return {
            "requests": requests,
            "client": asdict(stats),
            "rank_mgets": mgets,
            "rank_mgets_per_request": mgets / requests if requests else None,
            "rank_connections": len(rank_path),
            "other_commands_on_those_connections": others,
            "xadd": xadds,
            "xadd_per_request": xadds / requests if requests else None,
            "flushes": flushes,
            "flushes_per_request": flushes / requests if requests else None,
            "seconds": seconds,
        }

    # ----------------------------------------------------------------------- wrk

    def wrk(self, service: Service, label: str) -> dict[str, Any]:
        """``wrk`` (closed loop) at saturation with the same bodies; parse its report."""
        ids_path = self.workdir / f"wrk-{label}.ids"
        script = self.workdir / "rank.lua"
        script.write_text(WRK_SCRIPT)
        command = ["wrk", "-t1", f"-c{self.options.wrk_connections}"]
        command += [f"-d{self.options.wrk_seconds}s", "--latency", "-s", str(script)]
        command += [f"{service.base}/v1/rank", "--", str(self.bodies_path), str(ids_path)]
        env = {**os.environ, "RANKFLOW_BENCH_KEY": first_api_key()}
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=self.options.wrk_seconds + 60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"wrk failed: {done.stderr[-1000:]}")
        if ids_path.exists():
            for rid in ids_path.read_bytes().split(b"\n"):
                if rid:
                    self.ids[rid] = label
        return parse_wrk(done.stdout)

    # ----------------------------------------------------------------------- the serving log

    def stream_end(self) -> bytes:
        """The last id of the serving-log stream (``0-0`` when it does not exist)."""
        from rankflow.store.keys import served_log_key

        key = served_log_key(self.prefix)
        if not self.admin.exists(key):
            return b"0-0"
        found: Any = self.admin.xinfo_stream(key)
        last = found.get("last-generated-id", b"0-0")
        return last if isinstance(last, bytes) else str(last).encode()

    def serving_log_entries(self, start: bytes) -> dict[str, list[int]]:
        """The benchmark's stream entries by phase (entry milliseconds); delete them unless kept.

        Entries are the benchmark's when their record's request id is one the clients were
        answered with, or their candidates are one of the benchmark's candidate sets (requests
        wrk left in flight, or answered after a client gave up); the rest is left alone.
        """
        from rankflow.serving.log import RECORD_FIELD, decode_record
        from rankflow.store.keys import served_log_key

        key = served_log_key(self.prefix)
        by_phase: dict[str, list[int]] = {}
        ours: list[bytes] = []
        cursor = b"(" + start
        while True:
            chunk: Any = self.admin.xrange(key, min=cursor, max="+", count=1000)
            if not chunk:
                break
            for entry_id, fields in chunk:
                record = decode_record(fields[RECORD_FIELD])
                phase = self.ids.get(record.request_id.encode())
                if phase is not None:
                    by_phase.setdefault(phase, []).append(int(entry_id.split(b"-")[0]))
                if phase is not None or record.candidates in self.candidate_sets:
                    ours.append(entry_id)
            cursor = b"(" + chunk[-1][0]
        if not self.options.keep_log:
            for n in range(0, len(ours), 1000):
                self.admin.xdel(key, *ours[n : n + 1000])
        self.result["serving_log_entries"] = len(ours)
        self.result["serving_log_deleted"] = 0 if self.options.keep_log else len(ours)
        return by_phase

    # ----------------------------------------------------------------------- memory

    def item_bytes(self, version: str, sample: int = 1000) -> dict[str, Any]:
        """Bytes per item vector: ``MEMORY USAGE`` of a sample of buckets over their items."""
        import json

        import numpy as np

        from rankflow.store.keys import feature_key, schema_key

        schema = json.loads(self.admin.get(schema_key(self.prefix, version)) or b"{}")
        buckets = int(schema.get("item_buckets", 0))
        if not buckets:
            return {"version": version, "buckets": 0}  # a version from before item buckets
        rng = np.random.default_rng(self.options.seed)
        chosen = rng.choice(buckets, min(sample, buckets), replace=False)
        keys = [feature_key(self.prefix, version, "i", int(b)) for b in chosen]
        pipe = self.admin.pipeline(transaction=False)
        for key in keys:
            pipe.hlen(key)
            pipe.memory_usage(key, samples=0)
            pipe.object("encoding", key)
            pipe.hrandfield(key, 1, withvalues=True)
        replies = pipe.execute()
        entries = sum(int(v) for v in replies[0::4])
        usage = sum(int(v or 0) for v in replies[1::4])
        encodings = sorted({e.decode() if isinstance(e, bytes) else str(e) for e in replies[2::4]})
        values = [len(pair[1]) for pair in replies[3::4] if pair]
        return {
            "version": version,
            "sample": len(keys),
            "items_in_sample": entries,
            "missing": 0,
            "value_bytes": statistics.fmean(values) if values else 0.0,
            "memory_usage": usage / max(entries, 1),
            "bucket_encoding": ",".join(encodings),
            "buckets": buckets,
        }

    # ----------------------------------------------------------------------- materialisation

    def materialise(self) -> dict[str, Any]:
        """Run the ``materialise_features`` step once, as ``rankflow demo`` runs steps.

        Its timeline is polled from Redis every 50 ms: the new version's meta appearing
        (``begin_version``), the first and the last ``MSET`` of the writers, the current pointer
        moving to it (the switch), and the process's exit.
        """
        from rankflow.config import repo_root
        from rankflow.lake.session import job_command
        from rankflow.runs import read_run_record
        from rankflow.store.keys import FEATURES, current_key, meta_key, new_version_id

        ds = latest_features_day(self.settings)
        if ds is None:
            raise BenchError("no features run record under runs/: run `make demo` first")
        run_id = f"bench-realtime-{datetime.now(UTC):%Y%m%dT%H%M%S}"
        # the version id the step will make (materialise_features.py's formula)
        commits = read_run_record(self.settings, ds, "features")["delta_versions"]
        joined = ",".join(f"{k}={int(v)}" for k, v in sorted(commits.items()))
        expected = new_version_id(ds, f"{run_id}|features|{joined}")
        command, extra = job_command(
            self.settings, "materialise_features", ["--ds", ds.isoformat(), "--run-id", run_id]
        )
        say(f"(5) materialise_features --ds {ds} --run-id {run_id} ({' '.join(command[:2])}) ...")
        polls: list[tuple[float, int, bool, bool]] = []  # time, MSETs, meta exists, switched
        stop = threading.Event()

        def poll() -> None:
            from rankflow.store.client import redis_client

            client = redis_client(self.settings.redis.admin_url)
            meta = meta_key(self.prefix, FEATURES, expected)
            pointer = current_key(self.prefix, FEATURES)
            while not stop.is_set():
                pipe = client.pipeline(transaction=False)
                pipe.info("commandstats")
                pipe.exists(meta)
                pipe.get(pointer)
                info, exists, current = pipe.execute()
                stats = [info.get(f"cmdstat_{name}", {}) for name in ("mset", "hset")]
                calls = sum(int(c.get("calls", 0)) for c in stats)  # users: MSET, items: HSET
                switched = current == expected.encode()
                polls.append((time.perf_counter(), calls, bool(exists), switched))
                stop.wait(0.05)
            client.close()

        poller = threading.Thread(target=poll, daemon=True)
        log_path = self.workdir / "materialise.log"
        started = time.perf_counter()
        poller.start()
        with log_path.open("w") as log:
            status = subprocess.run(
                command,
                env={**os.environ, **extra},
                cwd=repo_root(),
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            ).returncode
        wall = time.perf_counter() - started
        stop.set()
        poller.join(5)
        if status != 0:
            raise RuntimeError(
                f"materialise_features exited with {status}: {log_path.read_text()[-2000:]}"
            )
        record = read_run_record(self.settings, ds, "materialise-features")
        entities = int(sum(record.get("entities", {}).values()))
        base = polls[0][1]
        final = polls[-1][1]

        def first(check: Callable[[tuple[float, int, bool, bool]], bool]) -> float | None:
            return next((p[0] - started for p in polls if check(p)), None)

        marks = {
            "begin": first(lambda p: p[2] or p[3]),
            "first_mset": first(lambda p: p[1] > base),
            "last_mset": first(lambda p: p[1] == final and final > base),
            "switch": first(lambda p: p[3]),
            "exit": wall,
        }
        writing = None
        if marks["first_mset"] is not None and marks["last_mset"] is not None:
            writing = marks["last_mset"] - marks["first_mset"]
        return {
            "ds": ds.isoformat(),
            "run_id": run_id,
            "version": record.get("version"),
            "expected_version": expected,
            "status": record.get("status"),
            "entities": entities,
            "by_group": record.get("entities"),
            "step_seconds": float(record.get("seconds", wall)),
            "wall_seconds": wall,
            "writing_seconds": writing,
            "timeline_s": marks,
            "mset_calls": final - base,
            "value_bytes": record.get("value_bytes"),
            "snapshot_bytes": record.get("snapshot_bytes"),
            "audited": record.get("audited"),
            "phase_seconds": record.get("phase_seconds"),
        }


def materialise_at_scale(options: Options) -> dict[str, Any]:
    """``bench_materialise.py`` in its own process: the target judged at a scale that shows it.

    The demo's feature day is Spark's per-job cost, not Redis's (the row above); the scaled
    day (the demo's copied to ``--scale-users`` users) is where writers dominate.
    """
    out = options.workdir / "materialise-at-scale.json"
    out.unlink(missing_ok=True)
    command = [
        sys.executable, str(Path(__file__).with_name("bench_materialise.py")),
        "--users", str(options.scale_users), "--runs", str(options.runs), "--json", str(out),
    ]  # fmt: skip
    say(f"(5b) materialisation at scale: {' '.join(command[1:])} ...")
    done = subprocess.run(command, check=False)
    if done.returncode != 0 or not out.exists():
        raise BenchError(f"bench_materialise.py exited with {done.returncode}")
    figures: dict[str, Any] = json.loads(out.read_text())
    return figures


def latest_features_day(settings: Settings) -> date | None:
    """The latest day with a ``features`` run record (what materialise_features reads)."""
    days = []
    for path in (settings.paths.home / "runs").glob("ds=*/features.json"):
        try:
            days.append(date.fromisoformat(path.parent.name[3:]))
        except ValueError:
            continue
    return max(days) if days else None


# wrk: one thread; each request the next body of the file (one JSON a line); every response's
# request id is written to a file (the serving log's entries of the benchmark are deleted after)
WRK_SCRIPT = """
local requests = {}
local count = 0
local ids = nil
function init(args)
  local headers = {}
  headers["Content-Type"] = "application/json"
  headers["Authorization"] = "Bearer " .. os.getenv("RANKFLOW_BENCH_KEY")
  for line in io.lines(args[1]) do
    if #line > 0 then
      requests[#requests + 1] = wrk.format("POST", nil, headers, line)
    end
  end
  ids = io.open(args[2], "w")
  ids:setvbuf("line")
end
function request()
  count = count + 1
  return requests[(count % #requests) + 1]
end
function response(status, headers, body)
  ids:write(string.sub(body, 16, 47), "\\n")
end
"""


def parse_wrk(text: str) -> dict[str, Any]:
    """Requests/s, latency percentiles (ms), errors from wrk's ``--latency`` report."""
    units = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    found: dict[str, Any] = {"percentiles_ms": {}}
    for line in text.splitlines():
        match = re.match(r"\s+(50|75|90|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", line)
        if match:
            found["percentiles_ms"][match.group(1)] = float(match.group(2)) * units[match.group(3)]
        if line.startswith("Requests/sec:"):
            found["rps"] = float(line.split()[1])
        match = re.search(r"(\d+) requests in ([\d.]+)(\w+)", line)
        if match:
            found["requests"] = int(match.group(1))
        if "Non-2xx or 3xx responses" in line:
            found["non_2xx"] = int(line.split()[-1])
        if "Socket errors" in line:
            found["socket_errors"] = line.split(":", 1)[1].strip()
    if "rps" not in found:
        raise RuntimeError(f"cannot parse wrk's report: {text[-800:]}")
    return found


# =========================================================================== the run


def serving_config(workdir: Path, name: str, **serving: Any) -> Path:
    """A ``RANKFLOW_CONFIG`` file: the current override (if any) with ``serving`` keys set."""
    import yaml

    base = os.environ.get("RANKFLOW_CONFIG")
    document: dict[str, Any] = (yaml.safe_load(Path(base).read_text()) or {}) if base else {}
    document.setdefault("serving", {}).update(serving)
    path = workdir / f"serving-{name}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def describe(settings: Settings, bench: Bench) -> dict[str, Any]:
    """Print and return the machine and the versions."""
    import xgboost

    cpu = ""
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    server: Any = bench.admin.info("server")
    machine = {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "xgboost": xgboost.__version__,
        "redis": server.get("redis_version"),
        "load_start": [round(x, 2) for x in os.getloadavg()],
    }
    say(
        f"machine: {machine['cores']} cores ({cpu}), {machine['memory_gib']} GiB, Python "
        f"{machine['python']}, XGBoost {machine['xgboost']}, Redis {machine['redis']}, load "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    return machine


def redis_per_request(
    deltas: list[dict[str, Any]], requests: list[float], background: dict[str, float]
) -> dict[str, float]:
    """Per rank request: MGET (raw, and net of the refreshers' background), every reader
    command net of background, and the server's reply write events net of one per command
    (what is left is the serving log's pipelines)."""
    total = sum(requests)
    seconds = sum(d["seconds"] for d in deltas)
    mget = sum(d["calls"].get("mget", 0) for d in deltas)
    xadd = sum(d["calls"].get("xadd", 0) for d in deltas)
    commands = sum(d["commands"] for d in deltas)
    writes = sum(d["writes"] for d in deltas)
    others = commands - xadd
    bg_others = sum(v for k, v in background.items() if k != "xadd") * seconds
    return {
        "requests": total,
        "mget_raw": mget / total,
        "mget": (mget - background.get("mget", 0.0) * seconds) / total,
        "reader_commands": (others - bg_others) / total,
        "xadd": xadd / total,
        "log_write_events": max(writes - others, 0) / total,
    }


def flush_groups(millis: list[int], gap_ms: int = 5) -> int:
    """Pipeline flushes: runs of stream entries whose ids are at most ``gap_ms`` apart."""
    if not millis:
        return 0
    ordered = sorted(millis)
    return 1 + sum(1 for a, b in itertools.pairwise(ordered) if b - a > gap_ms)


def main(argv: Sequence[str]) -> int:
    """Measure everything, print the summary, write the JSON; exit 0 (1 if nothing to serve)."""
    if argv[:1] == ["--load-client"]:
        return client_main(argv[1])
    from rankflow.config import load_settings

    started = time.perf_counter()
    settings = load_settings()
    options = parse_args(argv, settings.paths.home)
    if shutil.which("wrk") is None:
        say("wrk is not installed: `make bench-realtime` installs it from Debian's packages")
        return 1
    bench = Bench(settings, options)
    services: list[Service] = []
    try:
        return measure(bench, services, started)
    except BenchError as problem:
        say(f"bench-realtime cannot run: {problem}")
        return 1
    finally:
        for service in services:
            service.stop()
        shutil.rmtree(bench.workdir, ignore_errors=True)


def measure(bench: Bench, services: list[Service], started: float) -> int:
    """The phases, in order; the summary at the end."""
    settings, options, result = bench.settings, bench.options, bench.result
    result["machine"] = describe(settings, bench)
    version, model, features = bench.preflight()
    users = bench.known_users(version)
    bodies = bench.write_bodies(features, users)
    snapshot = features.snapshot
    result["scale"] = {
        "feature_version": version,
        "model_version": model,
        "users_with_features": len(users),
        "items": len(snapshot.item_ids),
        "unsold_items": int((~snapshot.is_sold).sum()),
        "candidates": options.candidates,
        "k": int(settings.pipeline["serving"]["default_k"]),
        "bodies": len(bodies),
        "unknown_share": options.unknown_share,
        "surface": SURFACE,
    }
    say(
        f"scale: feature version {version} ({len(users):,} users with features, "
        f"{len(snapshot.item_ids):,} items, {result['scale']['unsold_items']:,} unsold), "
        f"champion model {model}; {options.candidates} candidates per request, k="
        f"{result['scale']['k']}, {options.unknown_share:.0%} unknown users, "
        f"{len(bodies):,} distinct bodies (~{statistics.fmean(len(b) for b in bodies):,.0f} B)"
    )

    say("(1) in process: the champion (nthread=1), the request path's stages, the floor ...")
    inproc = bench.in_process(features, bodies)
    result["in_process"] = inproc
    result["scale"]["trees"] = inproc["trees"]
    say(
        f"    model {inproc['model_version']}: {inproc['trees']} trees, {inproc['model_inputs']} "
        f"inputs; inplace_predict of {inproc['rows']} rows: {inproc['floor_ms'][0]:.3f} ms (median "
        f"of 1000), ranker.rank(): {inproc['rank_ms']:.3f} ms"
    )
    for stage, ms in inproc["stages_ms"].items():
        say(f"      {stage:<32} {ms:7.3f} ms (mean {inproc['stages_mean_ms'][stage]:.3f})")
    if "stages_error" in inproc:
        say(f"      stages not timed: {inproc['stages_error']}")
    poll = inproc["champion_poll_ms"]
    say(f"    the refresher's champion poll (MLflow, every 2 s): {poll:.1f} ms")

    log_start = bench.stream_end()
    # the same service three times: the defaults (serving log on), the log off, and (a
    # diagnostic) the refresher parked: it polls the champion alias through MLflow every
    # serving.refresh_seconds, which holds the GIL for about the time printed above
    variants = {
        "on": serving_config(bench.workdir, "log-on", log=True),
        "off": serving_config(bench.workdir, "log-off", log=False),
        "parked": serving_config(bench.workdir, "parked", log=True, refresh_seconds=86400),
    }
    say(
        "(2) starting rankflow serve --workers 1 three times: serving log on (the defaults), "
        "log off, refresher parked (log on, serving.refresh_seconds: 86400) ..."
    )
    started_services: dict[str, Service] = {}
    for name, config in variants.items():
        service = Service(name, bench.workdir, {**os.environ, "RANKFLOW_CONFIG": str(config)})
        services.append(service)
        started_services[name] = service
    for service in started_services.values():
        ready = service.wait_ready()
        if (ready.get("feature_version"), ready.get("model_version")) != (version, model):
            raise BenchError(f"{service.name} serves {ready}, not ({version}, {model})")
    on = started_services["on"]
    say(
        "    ready on ports "
        + ", ".join(f"{s.port} ({n})" for n, s in started_services.items())
        + "; warming up ..."
    )
    for service in started_services.values():
        bench.load(service, f"warm-up-{service.name}", options.fixed_rate, 4.0)
    before = bench.counters()
    time.sleep(6.0)
    idle = bench.delta(before, bench.counters())
    background = {k: v / idle["seconds"] for k, v in idle["calls"].items()}
    say(
        "    Redis background with the services idle: "
        + ", ".join(f"{k} {v:.2f}/s" for k, v in sorted(background.items()))
    )

    say(
        f"(2) {options.fixed_rate:.0f} requests/s, {options.fixed_seconds:.0f} s a run, "
        f"open-loop constant-rate client ({options.connections} keep-alive connections), the "
        f"three services in turn (each round starting with the next), {options.runs} rounds "
        f"(load {os.getloadavg()[0]:.2f}) ..."
    )
    fixed: dict[str, list[RunStats]] = {name: [] for name in variants}
    deltas: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    served_requests: dict[str, list[float]] = {name: [] for name in variants}
    order = list(started_services.items())
    for run in range(options.runs):
        # each round starts with another service: the first run of a round meets the colder
        # machine, which must not always count against the same service
        for name, service in order[run % len(order) :] + order[: run % len(order)]:
            label = f"fixed-{name}-{run + 1}"
            stats, delta, metrics = bench.measured(
                service, label, options.fixed_rate, options.fixed_seconds
            )
            stats.redis = delta
            fixed[name].append(stats)
            deltas[name].append(delta)
            served_requests[name].append(
                metric_sum(metrics, "rankflow_rank_requests_total", status="200")
            )
            say(stats.line())
    inproc["floor_ms"].append(bench.floor())
    say(
        f"(2) Redis round trips: MONITOR over one more {options.fixed_rate:.0f} requests/s run "
        "(log on) ..."
    )
    monitor = bench.monitored(on, version, options.fixed_rate, 10.0)
    per = monitor["rank_mgets_per_request"] or 0.0
    say(
        f"    {monitor['requests']:.0f} rank requests: {monitor['rank_mgets']} MGETs of the users' "
        f"keys ({per:.3f} a request) on {monitor['rank_connections']} connection(s); their "
        f"other commands (the refresher): {monitor['other_commands_on_those_connections']}; "
        f"serving log: {monitor['xadd']} XADD in {monitor['flushes']} pipelines"
    )
    other_metrics = []
    for name in ("off", "parked"):
        service = started_services[name]
        other_metrics.append(service.metrics())
        service.stop()
        services.remove(service)

    say(f"(3) stepping the constant rate up ({options.step_seconds:.0f} s a step, log on) ...")
    steps: list[RunStats] = []
    for rate in options.steps:
        stats = bench.load(on, f"step-{rate:.0f}", rate, options.step_seconds)
        steps.append(stats)
        say(stats.line() + ("" if stats.sustained else "  <- p99 over 10 ms or not sustained"))
        if not stats.sustained:
            # one pause of the whole process (a full garbage collection takes ~0.25 s here)
            # ends a 12 s step on its own: a failed step runs once more before the sweep stops
            stats = bench.load(on, f"step-{rate:.0f}-again", rate, options.step_seconds)
            steps.append(stats)
            say(stats.line() + ("" if stats.sustained else "  <- failed twice: the sweep stops"))
            if not stats.sustained:
                break
    # the best passing rate runs twice more; when the median p99 of the three is over the
    # target, the next passing rate below it is tried the same way (two rates at most)
    passed: dict[float, RunStats] = {}
    for stats in steps:
        if stats.sustained:
            passed[stats.rate] = stats
    confirm: list[RunStats] = []
    best = None
    for rate in sorted(passed, reverse=True)[:2]:
        confirm = [passed[rate]]
        for run in range(options.runs - 1):
            stats = bench.load(on, f"confirm-{rate:.0f}-{run + 2}", rate, options.step_seconds)
            confirm.append(stats)
            say(stats.line())
        if statistics.median(s.p99 for s in confirm) <= TARGET_P99_MS:
            best = rate
            break
        say(f"    {rate:.0f} requests/s not confirmed (median p99 over 10 ms)")
    tried = [s.rate for s in confirm]

    say(
        f"(3) wrk -t1 -c{options.wrk_connections} -d{options.wrk_seconds}s --latency (closed "
        "loop, saturation) ..."
    )
    wrk_runs = []
    for run in range(options.runs):
        found = bench.wrk(on, f"wrk-{run + 1}")
        wrk_runs.append(found)
        pct = found["percentiles_ms"]
        say(
            f"    wrk run {run + 1}: {found['rps']:.0f} requests/s, p50 {pct.get('50', 0):.2f} "
            f"p90 {pct.get('90', 0):.2f} p99 {pct.get('99', 0):.2f} ms"
            f"{', non-2xx ' + str(found['non_2xx']) if found.get('non_2xx') else ''}"
        )
    on_metrics = on.metrics()
    on.stop()
    services.remove(on)
    inproc["floor_ms"].append(bench.floor())
    say(
        "    the floor again (in process, after the fixed runs and after wrk): "
        + " / ".join(f"{f:.3f}" for f in inproc["floor_ms"][1:])
        + " ms"
    )

    say("(4) the serving log's entries ...")
    by_phase = bench.serving_log_entries(log_start)
    fixed_on_entries = [by_phase.get(s.label, []) for s in fixed["on"]]
    flushes = sum(flush_groups(m) for m in fixed_on_entries)
    entries = sum(len(m) for m in fixed_on_entries)
    say(
        f"    serving log: {result['serving_log_entries']:,} entries of this benchmark "
        f"({'kept' if options.keep_log else 'deleted'})"
    )

    materialised: dict[str, Any] | None = None
    try:
        materialised = bench.materialise() if options.materialise else None
    except RuntimeError as failed:  # the figures above are kept; the summary says why
        materialised = {"error": str(failed).splitlines()[0][-400:]}
        say(f"    FAILED: {materialised['error']}")
    if materialised and "error" not in materialised:
        marks = materialised["timeline_s"]

        def at(name: str) -> str:
            return "?" if marks[name] is None else f"{marks[name]:.1f}"

        say(
            f"    {materialised['entities']:,} entities ({materialised['by_group']}) in "
            f"{materialised['step_seconds']:.1f} s (the step's record), "
            f"{materialised['wall_seconds']:.1f} s with the client's start-up; "
            f"{materialised['status']} to {materialised['version']}"
        )
        say(
            f"    timeline (s from start): begin_version {at('begin')}, first write "
            f"{at('first_mset')}, last write {at('last_mset')} ({materialised['mset_calls']} "
            f"MSET/HSET), switch {at('switch')}, exit {at('exit')}"
        )
        phases = materialised.get("phase_seconds") or {}
        say("    phases (s): " + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()))

    at_scale: dict[str, Any] | None = None
    if options.materialise and options.scale_users > 0:
        try:
            at_scale = materialise_at_scale(options)
        except BenchError as failed:
            at_scale = {"error": str(failed)}
            say(f"    FAILED: {failed}")

    say("(6) the Redis memory of the item vectors (the current feature version) ...")
    memory = bench.item_bytes(bench.current_feature_version())
    if memory["buckets"]:
        say(
            f"    {memory['value_bytes']:.0f} value bytes, {memory['memory_usage']:.0f} bytes "
            f"MEMORY USAGE per item ({memory['sample']:,} of {memory['buckets']:,} "
            f"{memory['bucket_encoding']} buckets, {memory['items_in_sample']:,} items)"
        )
    else:
        say(f"    version {memory['version']} keeps a key per item (f32le-v1): run make demo")

    # ------------------------------------------------------------------- the figures
    round_trips = redis_per_request(deltas["on"], served_requests["on"], background)
    round_trips_off = redis_per_request(deltas["off"], served_requests["off"], background)
    round_trips["serving_log_entries"] = entries / max(sum(served_requests["on"]), 1)
    round_trips["flushes"] = flushes / max(sum(served_requests["on"]), 1)
    every = [on_metrics, *other_metrics]
    requests_all = sum(metric_sum(m, "rankflow_rank_requests_total") for m in every)
    fallbacks_all = sum(metric_sum(m, "rankflow_rank_fallbacks_total") for m in every)
    fallback_reasons: dict[str, float] = {}
    for samples in every:
        for reason, count in reasons(samples).items():
            fallback_reasons[reason] = fallback_reasons.get(reason, 0) + count
    import numpy as np

    pooled = {}
    for name, runs in fixed.items():
        every_run = np.concatenate([bench.latencies[s.label] for s in runs])
        p50, p99, p999 = np.percentile(every_run, [50, 99, 99.9], method="higher")
        pooled[name] = {"requests": len(every_run), "p50": p50, "p99": p99, "p999": p999}
    p50_on = statistics.median(s.p50 for s in fixed["on"])
    p50_off = statistics.median(s.p50 for s in fixed["off"])
    result.update(
        {
            "client": "open-loop constant-rate Python client (asyncio/uvloop, separate process, "
            f"{options.connections} keep-alive connections, latency from the scheduled send "
            "time); wrk (closed loop) for the saturation view",
            "fixed": {k: [asdict(s) for s in v] for k, v in fixed.items()},
            "fixed_pooled": pooled,
            "steps": [asdict(s) for s in steps],
            "confirm": [asdict(s) for s in confirm],
            "highest_rate": best,
            "highest_step_passed": max(passed) if passed else None,
            "confirmed_rate_tried": tried[0] if tried else None,
            "wrk": wrk_runs,
            "redis_background_per_s": background,
            "redis_per_request": round_trips,
            "redis_per_request_log_off": round_trips_off,
            "redis_monitor": monitor,
            "gc_pauses": gc_pauses(on_metrics),
            "fallbacks": {
                "requests": requests_all,
                "fallbacks": fallbacks_all,
                "share": fallbacks_all / requests_all if requests_all else None,
                "reasons": fallback_reasons,
            },
            "log_cost": p50_on / p50_off,
            "item_bytes": memory,
            "materialise": materialised,
            "materialise_at_scale": at_scale,
        }
    )
    result["seconds"] = time.perf_counter() - started
    result["machine"]["load_end"] = [round(x, 2) for x in os.getloadavg()]
    stepped = [*steps, *(s for s in confirm if s not in steps)]
    print(summary(result, fixed, confirm, stepped), flush=True)
    out = options.workdir / f"realtime-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    say(f"results: {out}")
    return 0


# =========================================================================== the summary


def summary(
    result: dict[str, Any],
    fixed: dict[str, list[RunStats]],
    confirm: list[RunStats],
    stepped: list[RunStats],
) -> str:
    """The final table: each figure, its target and whether it is met."""
    scale, machine = result["scale"], result["machine"]
    rows: list[tuple[str, str, str, str]] = []

    def row(name: str, value: str, target: str, met: bool | None) -> None:
        rows.append((name, value, target, "-" if met is None else "met" if met else "NOT MET"))

    on, off = fixed["on"], fixed["off"]
    rate = f"{on[0].rate:.0f} rps"
    p50 = statistics.median(s.p50 for s in on)
    p99 = statistics.median(s.p99 for s in on)
    row(
        f"p50 at {rate} (1 worker)",
        median_range([s.p50 for s in on], " ms"),
        f"<= {TARGET_P50_MS:.0f} ms",
        p50 <= TARGET_P50_MS,
    )
    row(
        f"p99 at {rate}",
        median_range([s.p99 for s in on], " ms"),
        f"<= {TARGET_P99_MS:.0f} ms",
        p99 <= TARGET_P99_MS,
    )
    row(f"p99.9 at {rate}", median_range([s.p999 for s in on], " ms"), "", None)
    pooled = result["fixed_pooled"]["on"]
    row(
        f"  pooled ({pooled['requests']:,} requests)",
        f"p50 {pooled['p50']:.2f}, p99 {pooled['p99']:.2f}, p99.9 {pooled['p999']:.2f} ms",
        "",
        None,
    )
    parked = fixed.get("parked") or []
    if parked:
        row(
            "  refresher parked (diagnostic)",
            f"p50 {median_range([s.p50 for s in parked], ' ms')}, p99 "
            f"{median_range([s.p99 for s in parked], ' ms')}, p99.9 "
            f"{median_range([s.p999 for s in parked], ' ms')}",
            "",
            None,
        )
    best, sweep = result["highest_rate"], result["highest_step_passed"]
    p99s = [s.p99 for s in confirm]
    if sweep is None:
        value, met = "none (no step passed)", False
    elif best is None:
        value = (
            f"none confirmed: {result['confirmed_rate_tried']:.0f} rps had p99 "
            f"{median_range(p99s, ' ms')} in 3 runs (best single step {sweep:.0f} rps)"
        )
        met = False
    else:
        runs = f"{len(confirm)} run{'s' if len(confirm) != 1 else ''}"
        value = f"{best:.0f} rps (p99 {median_range(p99s, ' ms')}, {runs})"
        if sweep > best:
            value += f"; {sweep:.0f} rps passed once, not confirmed"
        met = best >= TARGET_RATE
    row("rate/worker core, p99<=10ms", value, f">= {TARGET_RATE:.0f} rps", met)
    # a pause of the whole service: one request over 100 ms in a run well below saturation
    # (at most the confirmed rate, or the fixed rate)
    calm = [
        s for runs in (*fixed.values(), stepped) for s in runs if s.rate <= (best or on[0].rate)
    ]
    paused = [s for s in calm if s.max > 100.0]
    longest = max((s.max for s in paused), default=0.0)
    row(
        "  whole-service pauses",
        f"{len(paused)} of {len(calm)} runs at <= {best or on[0].rate:.0f} rps had a request over "
        f"100 ms (longest {longest:.0f} ms)",
        "",
        None,
    )
    pauses = result.get("gc_pauses") or {}
    row(
        "  GC pauses (log-on service)",
        ", ".join(
            f"gen {g}: {int(p['count'])} ({p['seconds'] * 1000:.0f} ms, "
            f"{int(p['over_50ms'])} over 50 ms)"
            for g, p in pauses.items()
        )
        or "-",
        "",
        None,
    )
    every_run = [s for runs in (*fixed.values(), stepped) for s in runs]
    late = [s.label for s in every_run if s.client_late]
    row(
        "  runs with the client late",
        f"{len(late)} of {len(every_run)}{': ' + ', '.join(late) if late else ''}",
        "",
        None,
    )
    wrk = result["wrk"]
    row(
        "wrk saturation (closed loop)",
        f"{median_range([w['rps'] for w in wrk], ' rps', 0)}, p50 "
        f"{statistics.median(w['percentiles_ms'].get('50', 0) for w in wrk):.2f} / p99 "
        f"{statistics.median(w['percentiles_ms'].get('99', 0) for w in wrk):.2f} ms",
        "",
        None,
    )
    trips, monitor = result["redis_per_request"], result["redis_monitor"]
    exact = monitor["rank_mgets_per_request"]
    row(
        "Redis round trips per request",
        f"{exact:.3f} MGET (MONITOR: {monitor['rank_mgets']} for {monitor['requests']:.0f}); "
        f"commandstats {trips['mget']:.3f}",
        "exactly 1",
        exact == TARGET_ROUND_TRIPS
        and set(monitor["other_commands_on_those_connections"]) <= REFRESHER_COMMANDS,
    )
    row(
        "  serving log per request",
        f"{monitor['xadd_per_request']:.3f} XADD in {monitor['flushes_per_request']:.3f} "
        f"pipelines (stream ids: {trips['serving_log_entries']:.3f} in {trips['flushes']:.3f})",
        "",
        None,
    )
    fb = result["fallbacks"]
    share = fb["share"] or 0.0
    why = ", ".join(f"{k} {v:.0f}" for k, v in fb["reasons"].items()) or "none"
    row("fallback share", f"{share:.4%} of {fb['requests']:,.0f} ({why})", "", None)
    floors = result["in_process"]["floor_ms"]
    floor = statistics.median(floors)
    row(
        "p50 / in-process inplace_predict",
        f"{p50 / floor:.1f} x ({p50:.2f} / {median_range(floors, ' ms', 3)}, measured "
        f"{len(floors)} times)",
        "(the floor)",
        None,
    )
    cost = result["log_cost"]
    row(
        "serving log cost (p50 on/off)",
        f"{cost:.3f} ({p50:.2f} / {statistics.median(s.p50 for s in off):.2f} ms; off "
        f"{median_range([s.p50 for s in off], ' ms')})",
        f"<= {TARGET_LOG_COST:.2f}",
        cost <= TARGET_LOG_COST,
    )
    memory = result["item_bytes"]
    row(
        "item vector in Redis",
        f"{memory['memory_usage']:.0f} B (bucket MEMORY USAGE / items); value "
        f"{memory['value_bytes']:.0f} B"
        if memory["buckets"]
        else "not measured: the current version predates item buckets",
        f"<= {TARGET_ITEM_BYTES:.0f} B",
        memory["memory_usage"] <= TARGET_ITEM_BYTES if memory["buckets"] else None,
    )
    done = result["materialise"]
    if done and "error" in done:
        row("materialisation (demo scale)", f"failed: {done['error']}", "(reported)", None)
    elif done:
        rate_all = done["entities"] / done["step_seconds"]
        writing = done["writing_seconds"]
        text = f"{rate_all:,.0f}/s ({done['entities']:,} in {done['step_seconds']:.1f} s)"
        if writing:
            text += f"; Redis writing {done['entities'] / writing:,.0f}/s ({writing:.1f} s)"
        row(
            "materialisation (demo scale)",
            text + "; Spark's per-job cost at this size: judged at scale",
            "(reported)",
            None,
        )
    else:
        row("materialisation entities/s", "skipped (--skip-materialise)", "", None)
    scaled = result["materialise_at_scale"]
    if scaled and "error" in scaled:
        row("materialisation at scale", f"failed: {scaled['error']}", "", False)
    elif scaled:
        rate = scaled["write_and_switch_per_s"]
        stored = scaled["redis_values_per_s"]["median"]
        reference = scaled["redis_benchmark_per_s"]["median"]
        row(
            "materialisation at scale",
            f"{rate['median']:,.0f}/s [{rate['min']:,.0f} .. {rate['max']:,.0f}] write + switch "
            f"({scaled['entities']:,} entities: {scaled['users']:,} users, {scaled['items']:,} "
            f"items; {scaled['runs']} runs; users + items "
            f"{scaled['users_and_items_per_s']['median']:,.0f}/s); Redis values "
            f"{stored / reference:.2f} x redis-benchmark ({reference:,.0f}/s)",
            f">= {TARGET_ENTITIES_PER_S / 1e6:.1f} M/s",
            bool(scaled["met"]),
        )
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    lines = [
        "=" * 100,
        f"SUMMARY  feature version {scale['feature_version']}: {scale['users_with_features']:,} "
        f"users, {scale['items']:,} items; champion {scale['model_version']} "
        f"({scale['trees']} trees); {scale['candidates']} candidates/request, k={scale['k']}",
        f"         {machine['cores']} cores, run {result['seconds'] / 60:.1f} min, load "
        f"{machine['load_start'][0]:.2f} -> {machine['load_end'][0]:.2f} (1 min); client: "
        "open-loop constant rate (Python, own process) + wrk",
        "-" * 100,
    ]
    lines += [f"{n:<{width}}  {v:<{value_width}}  {t:<12} {m}" for n, v, t, m in rows]
    lines.append("=" * 100)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
