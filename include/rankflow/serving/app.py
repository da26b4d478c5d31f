"""The ranking service's HTTP face: Starlette + msgspec, API keys, fallback, metrics.

``POST /v1/rank`` re-ranks a candidate set for one user (``serving.ranker``); past the
deadline, or when Redis or the model fails, the answer is the user's nightly list (or the
fallback list held in memory when Redis is down) with ``fallback: true`` and a reason — a valid
request never gets a 5xx. ``GET /v1/lists/{surface}/{user_id}`` serves the nightly list.
``POST /v1/events`` takes the app's events and new listings (``{"events": [...], "items":
[...]}``, up to ``stream.max_events_per_call``), checks each with ingest's rules and appends them
to the event log (202), or refuses the whole call with every refused record's reason (400).
``/healthz``, ``/readyz`` and ``/metrics`` need no key; everything else a bearer API key from
``RANKFLOW_API_KEYS`` (comma-separated).
"""

from __future__ import annotations

import hmac
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import msgspec
import numpy as np

from rankflow.config import SURFACES, Settings
from rankflow.serving.metrics import Metrics

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from rankflow.quality.live import LogRecord
    from rankflow.serving.log import ServedRecord
    from rankflow.serving.ranker import Ranked
    from rankflow.serving.snapshot import ItemSnapshot
    from rankflow.serving.state import ServingState

log = logging.getLogger("rankflow.serving")
ItemId = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
UserId = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class RankRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/rank``: a user, a surface and the candidates to re-rank."""

    user_id: UserId
    surface: str
    candidates: list[ItemId] | None = None
    k: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    context: dict[str, Any] | None = None


class RankedItem(msgspec.Struct):
    """One returned item (``score`` is null for items the model did not score)."""

    item_id: int
    score: float | None


class RankResponse(msgspec.Struct, omit_defaults=True):
    """The answer: items in order, and what produced them."""

    request_id: str
    items: list[RankedItem]
    model_version: str | None
    feature_version: str | None
    fallback: bool
    reason: str | None = None
    list_version: str | None = None


def api_keys(env: dict[str, str] | None = None) -> list[bytes]:
    """The callers' keys from ``RANKFLOW_API_KEYS`` (comma-separated; empty entries ignored)."""
    raw = (env if env is not None else os.environ).get("RANKFLOW_API_KEYS", "")
    return [k.strip().encode() for k in raw.split(",") if k.strip()]


def authorised(request: Request, keys: list[bytes]) -> bool:
    """Whether the request carries one of the keys as a bearer token (constant-time compare)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    given = token.strip().encode()
    return any(hmac.compare_digest(given, key) for key in keys)


def error(status: int, message: str) -> Response:
    """A JSON error response."""
    from starlette.responses import Response

    body = msgspec.json.encode({"error": message})
    return Response(body, status_code=status, media_type="application/json")


def served_record(
    request_id: str,
    ts_ms: int,
    req: RankRequest,
    k: int,
    candidates: np.ndarray | None,
    result: RankResponse,
    ranked: Ranked | None,
) -> ServedRecord:
    """What the serving log keeps of one answer (the inputs only when they were kept)."""
    from rankflow.serving.log import ServedRecord, floats_bytes, ids_bytes

    scores = [item.score for item in result.items if item.score is not None]
    inputs = ranked.inputs if ranked is not None else None
    return ServedRecord(
        request_id=request_id,
        ts_ms=ts_ms,
        user_id=req.user_id,
        surface=req.surface,
        k=k,
        candidates=ids_bytes(candidates) if candidates is not None else b"",
        item_ids=ids_bytes([item.item_id for item in result.items]),
        scores=floats_bytes(scores),
        model_version=result.model_version,
        feature_version=result.feature_version,
        fallback=result.fallback,
        reason=result.reason,
        scored_ids=ids_bytes(inputs.item_ids) if inputs is not None else b"",
        scored_scores=floats_bytes(inputs.scores) if inputs is not None else b"",
        inputs=floats_bytes(inputs.matrix) if inputs is not None else b"",
        stream_cutoff_ms=(inputs.stream_cutoff_ms or 0) if inputs is not None else 0,
    )


class EventSink(Protocol):
    """Where ``POST /v1/events`` appends checked records: the event log (``rankflow.stream``)."""

    def append(self, records: Sequence[LogRecord]) -> None:
        """Append records; return once the log holds them."""

    def close(self) -> None:
        """Release connections."""


def create_app(
    settings: Settings | None = None,
    state: ServingState | None = None,
    event_log: Callable[[], EventSink] | None = None,
) -> Starlette:
    """Build the ASGI app (``rankflow.ops.service.create_service`` wires it for uvicorn).

    ``event_log`` opens the event log at the first ``POST /v1/events``; without one that
    endpoint answers 503.
    """
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import Response
    from starlette.routing import Route

    from rankflow.config import load_settings
    from rankflow.features.registry import STREAM_LAG_SECONDS
    from rankflow.features.stream import cutoff_ms
    from rankflow.serving.log import ServingLog, append_refusal, vectors_sampled
    from rankflow.serving.ranker import FreshInputs, fetch_user, fresh_keys, nightly_order, rank
    from rankflow.serving.state import ServingState, describe
    from rankflow.store import RankingReader
    from rankflow.store.client import redis_client
    from rankflow.store.errors import RedisStoreError
    from rankflow.store.keys import refusals_log_key, served_log_key

    settings = settings or load_settings()
    config = settings.pipeline["serving"]
    deadline = float(config["deadline_ms"]) / 1000.0
    max_candidates = int(config["max_candidates"])
    max_body = int(config["max_body_bytes"])
    default_k = int(config["default_k"])
    keys = api_keys()
    if not keys:
        raise RuntimeError("RANKFLOW_API_KEYS is empty: the ranking service needs callers' keys")
    prefix = settings.redis.key_prefix
    client = redis_client(settings.redis.lookup_url, socket_timeout=max(deadline, 0.05))
    reader = RankingReader(client, prefix, version_cache_seconds=2.0)
    serving = state or ServingState(
        settings, client, registry_poll_seconds=float(config["registry_poll_seconds"])
    )
    metrics = Metrics()
    serving_log = None
    log_client = redis_client(settings.redis.log_url, socket_timeout=2.0)
    if config["log"]:
        serving_log = ServingLog(
            log_client,
            served_log_key(prefix),
            max_queue=int(config["log_queue"]),
            max_stream_length=int(config["log_max_stream_length"]),
            flush_seconds=float(config["log_flush_seconds"]),
            on_count=metrics.count_log,
        )

    from rankflow.quality.live import Batch, Window, check_batch

    stream_config = settings.pipeline["stream"]
    opened_logs: list[EventSink] = []  # the event log, opened at the first POST /v1/events

    def events_log() -> EventSink:
        if event_log is None:
            raise LookupError("this service was started without an event log")
        if not opened_logs:
            opened_logs.append(event_log())
        return opened_logs[0]

    max_events = int(stream_config["max_events_per_call"])
    max_line = int(settings.pipeline["ingest"]["max_line_bytes"])
    batch_decoder = msgspec.json.Decoder(Batch)
    from rankflow.serving.live import LiveCatalogue

    # its own connection: a whole read of the sets must not wait behind, or time out like, a
    # lookup (whose timeout is the request deadline)
    live_client = redis_client(settings.redis.lookup_url, socket_timeout=5.0)
    live = LiveCatalogue(
        live_client, prefix, float(stream_config["poll_seconds"]),
        stale_after_ms=int(float(stream_config["stale_after_seconds"]) * 1000),
        partitions=int(stream_config["partitions"]), backend=str(stream_config["backend"]),
    )  # fmt: skip
    window_ms = int(stream_config["session_window_seconds"]) * 1000

    def record_refusal(refusal: dict[str, str]) -> None:
        metrics.refused.inc()
        try:
            append_refusal(log_client, refusals_log_key(prefix), refusal)
        except Exception as problem:  # the log line and the counter remain
            log.warning("could not record the refusal in Redis: %s", problem)

    serving.on_refusal = record_refusal

    def follow_listings(snapshot: ItemSnapshot) -> None:
        try:
            live.follow(snapshot)
        except Exception as problem:  # Redis away: the poll thread reads them again
            log.warning("could not read the live sales and listings again: %s", problem)

    serving.on_features = follow_listings
    sample_percent = float(config["log_vectors_percent"])
    sample_seed = int(config["log_sample_seed"])
    fallbacks: dict[str, list[int]] = {}  # surface -> the nightly fallback list, for Redis outages
    encoder = msgspec.json.Encoder()
    decoder = msgspec.json.Decoder(RankRequest)

    def remember_fallbacks() -> None:
        from rankflow.store.commands import _bytes
        from rankflow.store.encoding import decode_items
        from rankflow.store.keys import fallback_key

        for surface in SURFACES:
            try:
                version = reader.current_version(surface)
                value = _bytes(client.get(fallback_key(prefix, surface, version)))
                if value is not None:
                    fallbacks[surface] = decode_items(value)
            except Exception:  # a surface never published, or Redis away: keep the old copy
                continue

    def refresh() -> None:
        serving.refresh_quietly()
        remember_fallbacks()
        if serving.served is not None:
            metrics.show_served(serving.served.model.version, serving.served.features.version)
            listed = live.listed_for(serving.served.features.snapshot)
            metrics.live_listings.set(sum(len(table.item_ids) for table in listed))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        import gc
        import threading

        gc.callbacks.append(metrics.watch_gc)
        refresh()
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(float(config["refresh_seconds"])):
                refresh()

        thread = threading.Thread(target=loop, name="rankflow-refresh", daemon=True)
        thread.start()
        if serving_log is not None:
            serving_log.start()
        live.start()
        yield
        live.stop()
        stop.set()
        if serving_log is not None:
            serving_log.stop()
        gc.callbacks.remove(metrics.watch_gc)
        for opened in opened_logs:
            opened.close()
        log_client.close()
        live_client.close()
        client.close()
        metrics.close()

    def answer(body: RankResponse, status: int = 200) -> Response:
        return Response(encoder.encode(body), status_code=status, media_type="application/json")

    def fallback_answer(
        request_id: str, req: RankRequest, candidates: np.ndarray | None, reason: str, k: int
    ) -> RankResponse:
        metrics.fallbacks.labels(reason).inc()
        served = serving.served
        list_version = None
        try:
            found = reader.lookup_cached(req.user_id, req.surface)
            nightly, list_version = found.items, found.version
        except RedisStoreError:  # no nightly list of this surface is published
            nightly = []
        except Exception:  # Redis is away: the fallback list held in memory
            nightly = fallbacks.get(req.surface, [])
            reason = f"{reason}+redis_unavailable" if "redis" not in reason else reason
        unsold = live.remove_sold(np.asarray(nightly, np.int64)).tolist()
        items = [RankedItem(i, None) for i in nightly_order(unsold, candidates, k)]
        return RankResponse(
            request_id,
            items,
            served.model.version if served else None,
            served.features.version if served else None,
            True,
            reason,
            list_version,
        )

    async def rank_endpoint(request: Request) -> Response:
        started = time.perf_counter()
        if not authorised(request, keys):
            metrics.requests.labels("401").inc()
            return error(401, "missing or unknown API key (Authorization: Bearer <key>)")
        body = await request.body()
        if len(body) > max_body:
            metrics.requests.labels("400").inc()
            return error(400, f"body of {len(body)} bytes is over the {max_body}-byte limit")
        try:
            req = decoder.decode(body)
        except msgspec.DecodeError as problem:
            metrics.requests.labels("400").inc()
            return error(400, f"malformed request: {problem}")
        if req.surface not in SURFACES:
            metrics.requests.labels("400").inc()
            return error(400, f"unknown surface {req.surface!r}: one of {list(SURFACES)}")
        candidates = None
        if req.candidates is not None:
            if len(req.candidates) > max_candidates:
                metrics.requests.labels("400").inc()
                return error(400, f"{len(req.candidates)} candidates: at most {max_candidates}")
            candidates = np.asarray(req.candidates, dtype=np.int64)
            ordered = np.sort(candidates)
            if len(ordered) > 1 and bool((ordered[1:] == ordered[:-1]).any()):
                metrics.requests.labels("400").inc()
                return error(400, "candidate ids repeat: send each item once")
        k = req.k or default_k
        request_id = uuid.uuid4().hex
        ts_ms = time.time_ns() // 1_000_000
        keep_inputs = serving_log is not None and vectors_sampled(
            req.user_id, sample_percent, sample_seed
        )
        unsold = live.remove_sold(candidates) if candidates is not None else None
        result, ranked = answer_rank(request_id, req, unsold, k, started, keep_inputs)
        metrics.requests.labels("200").inc()
        metrics.latency.observe(time.perf_counter() - started)
        if serving_log is not None:
            serving_log.append(served_record(request_id, ts_ms, req, k, candidates, result, ranked))
        return answer(result)

    def answer_rank(
        request_id: str,
        req: RankRequest,
        candidates: np.ndarray | None,
        k: int,
        started: float,
        keep_inputs: bool,
    ) -> tuple[RankResponse, Ranked | None]:
        """The model's answer, or the fallback with its reason."""
        served = serving.served
        if served is None:
            return fallback_answer(request_id, req, candidates, "not_ready", k), None
        if candidates is None:
            return fallback_answer(request_id, req, None, "no_candidates", k), None
        fresh_at = None
        extra: list[str] = []
        now_ms = time.time_ns() // 1_000_000
        if served.model.reads_stream:  # the request's time, less the declared lag
            fresh_at = cutoff_ms(now_ms, STREAM_LAG_SECONDS)
            extra = fresh_keys(prefix, req.user_id, candidates, fresh_at)
        try:
            fetched, fresh_values = fetch_user(
                client, prefix, served.features.version, req.user_id, extra
            )
        except Exception as problem:
            log.warning("redis failed for a rank request: %s", problem)
            return fallback_answer(request_id, req, candidates, "redis_unavailable", k), None
        if time.perf_counter() - started > deadline:
            return fallback_answer(request_id, req, candidates, "deadline", k), None
        fresh = None
        if fresh_at is not None:
            fresh = FreshInputs(fresh_at, window_ms, fresh_values[0], fresh_values[1:],
                                live.stale(now_ms))  # fmt: skip
        try:
            listed = live.listed_for(served.features.snapshot)
            ranked = rank(served, fetched, candidates, k, keep_inputs, fresh, listed)
        except Exception as problem:
            log.exception("the model failed: %s", problem)
            return fallback_answer(request_id, req, candidates, "model_error", k), None
        metrics.unknown.inc(ranked.unknown)
        if time.perf_counter() - started > deadline:
            return fallback_answer(request_id, req, candidates, "deadline", k), None
        items = [RankedItem(i, s) for i, s in zip(ranked.item_ids, ranked.scores, strict=True)]
        result = RankResponse(
            request_id, items, served.model.version, served.features.version, False
        )
        return result, ranked

    async def events_endpoint(request: Request) -> Response:
        if not authorised(request, keys):
            return error(401, "missing or unknown API key (Authorization: Bearer <key>)")
        body = await request.body()
        limit = max_events * max_line
        if len(body) > limit:
            return error(400, f"body of {len(body)} bytes is over the {limit}-byte limit")
        try:
            batch = batch_decoder.decode(body)
        except msgspec.DecodeError as problem:
            return error(400, f"malformed request: {problem}")
        received = len(batch.events) + len(batch.items)
        if received > max_events:
            return error(400, f"{received} records: at most {max_events} per call")
        window = Window.around(
            time.time_ns() // 1_000_000,
            float(stream_config["max_event_age_seconds"]),
            float(stream_config["max_clock_skew_seconds"]),
        )
        checked = check_batch(
            [bytes(r) for r in batch.events], [bytes(r) for r in batch.items], max_line, window
        )
        if checked.rejected:
            metrics.events.labels("rejected").inc(received)
            refused = [{"kind": r.kind, "index": r.index, "reason": r.reason}
                       for r in checked.rejected[:100]]  # fmt: skip
            return Response(
                encoder.encode({"error": f"{len(checked.rejected)} of {received} records "
                                         "refused; none was logged", "rejected": refused}),
                status_code=400, media_type="application/json",
            )  # fmt: skip
        try:  # a pipeline or a broker's acknowledgement: off the event loop
            await run_in_threadpool(events_log().append, checked.records)
        except LookupError as problem:
            return error(503, str(problem))
        except Exception as problem:  # the caller retries; event ids make a retry harmless
            log.warning("event log append failed: %s", problem)
            metrics.events.labels("unavailable").inc(received)
            return error(503, "the event log is unreachable: retry (event ids deduplicate)")
        metrics.events.labels("logged").inc(received)
        return Response(encoder.encode({"logged": received}), status_code=202,
                        media_type="application/json")  # fmt: skip

    async def list_endpoint(request: Request) -> Response:
        if not authorised(request, keys):
            return error(401, "missing or unknown API key (Authorization: Bearer <key>)")
        surface = request.path_params["surface"]
        user = request.path_params["user_id"]
        if surface not in SURFACES:
            return error(400, f"unknown surface {surface!r}: one of {list(SURFACES)}")
        if not user.isdigit():
            return error(400, f"user ids are non-negative integers, got {user!r}")
        try:
            found = reader.lookup(int(user), surface)
        except Exception as problem:
            log.warning("nightly list lookup failed: %s", problem)
            items = fallbacks.get(surface)
            if items is None:
                return error(503, "Redis is unreachable and no fallback list is loaded")
            return Response(
                encoder.encode({"user_id": int(user), "surface": surface, "items": items,
                                "fallback": True, "reason": "redis_unavailable"}),
                media_type="application/json",
            )  # fmt: skip
        answer_body = found.as_dict()
        answer_body["items"] = live.remove_sold(np.asarray(found.items, np.int64)).tolist()
        return Response(encoder.encode(answer_body), media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def readyz(request: Request) -> Response:
        status = describe(serving.served)
        if serving.last_error:
            status["last_refresh_error"] = serving.last_error
        return Response(encoder.encode(status), status_code=200 if status["ready"] else 503,
                        media_type="application/json")  # fmt: skip

    async def metrics_endpoint(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def openapi(request: Request) -> Response:
        from rankflow.serving.openapi import openapi_document

        return Response(encoder.encode(openapi_document()), media_type="application/json")

    routes = [
        Route("/v1/rank", rank_endpoint, methods=["POST"]),
        Route("/v1/events", events_endpoint, methods=["POST"]),
        Route("/v1/lists/{surface}/{user_id}", list_endpoint, methods=["GET"]),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_endpoint),
        Route("/openapi.json", openapi),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
