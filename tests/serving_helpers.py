"""Helpers of the ranking service tests: a registered champion, JSON calls, a running service."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from alert_receivers import free_port
from rankflow.config import Settings
from rankflow.features.registry import MODEL_FEATURES, schema_hash

KEY = "test-api-key"  # pragma: allowlist secret (a throw-away key of the tests' servers)


def register_champion(
    settings: Settings,
    ds: date,
    *,
    seed: int = 7,
    feature_schema: str | None = None,
    names: Sequence[str] = MODEL_FEATURES,
) -> str:
    """Register a small real LambdaMART model over ``names`` (the batch inputs) as champion."""
    import xgboost as xgb

    from rankflow.model.fit import FittedRanker
    from rankflow.model.registry import log_and_register, mlflow_client, move_champion

    rng = np.random.default_rng(seed)
    features = rng.normal(size=(2000, len(names))).astype("float32")
    matrix = xgb.DMatrix(features, label=rng.integers(0, 4, 2000), feature_names=list(names))
    matrix.set_group([20] * 100)
    booster = xgb.train({"objective": "rank:ndcg", "max_depth": 4, "seed": seed}, matrix, 30)
    lineage = {
        "code_version": "test",
        "table_versions": {},
        "requirements_lock_hash": "test",
        "model_sha256": "test",
        "feature_schema_hash": feature_schema or schema_hash(),
    }
    version = log_and_register(settings, FittedRanker(booster, 29, 0.5, [0.5]), lineage, ds)[
        "model_version"
    ]
    move_champion(settings, mlflow_client(settings), version)
    return str(version)


def call(url: str, body: dict[str, Any] | None = None, key: str | None = KEY) -> tuple[int, Any]:
    """POST (or GET without a body) JSON; return status and decoded body."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as failure:
        return failure.code, json.loads(failure.read())


def metric(base: str, name: str, labels: str = "") -> float:
    """One sample of the service's /metrics (0 when absent)."""
    text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


def wait_for(check: Any, seconds: float, step: float = 0.1) -> float:
    """Poll ``check`` until it is true; return the seconds it took (fails after ``seconds``)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if check():
            return time.monotonic() - started
        time.sleep(step)
    raise AssertionError(f"not true within {seconds} s")


@contextmanager
def running_service(
    settings: Settings,
    config: Path | None = None,
    env: dict[str, str] | None = None,
    ready: bool = True,
    workers: int = 1,
) -> Iterator[str]:
    """Run `rankflow serve` on a free port as its own process; yield its base URL."""
    port = free_port()
    environment = {
        **os.environ,
        "RANKFLOW_HOME": str(settings.paths.home),
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "RANKFLOW_API_KEYS": f"other-key,{KEY}",
        **({"RANKFLOW_CONFIG": str(config)} if config else {}),
        **(env or {}),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rankflow.cli",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                status = call(f"{base}/readyz", key=None)[0]
                if status == 200 or (not ready and status == 503):
                    break
            except OSError:
                pass
            if process.poll() is not None:
                raise AssertionError(
                    f"rankflow serve exited: {process.stderr.read().decode()[-2000:]}"
                )
            time.sleep(0.5)
        else:
            raise AssertionError("rankflow serve never became ready")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)
