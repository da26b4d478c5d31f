"""Which Delta commit refusals the ledger retries: a lost race, in either spelling, and no other."""

from __future__ import annotations

import pytest

from rankflow.lake.ledger import is_concurrent_commit


@pytest.mark.parametrize(
    "message",
    [
        # the error condition only (what PySpark 4 raised in a CI run)
        "[DELTA_CONCURRENT_APPEND.WITHOUT_HINT] Transaction conflict detected. a concurrent MERGE "
        "added data to table delta.`file:/lake/ops/promotion_ledger` committed at version 1.",
        "[DELTA_PROTOCOL_CHANGED] The protocol version of the Delta table has been changed",
        "[DELTA_METADATA_CHANGED] The metadata of the Delta table has been changed",
        # the Java class name (through py4j)
        "io.delta.exceptions.ConcurrentAppendException: Files were added to the root of the table",
        "io.delta.exceptions.ProtocolChangedException: The protocol version has been changed",
        "io.delta.exceptions.MetadataChangedException: The metadata has been changed",
    ],
)
def test_a_lost_race_is_retried(message: str) -> None:
    assert is_concurrent_commit(RuntimeError(message))


@pytest.mark.parametrize(
    "message",
    [
        "[DELTA_MISSING_DELTA_TABLE] is not a Delta table",
        "[UNRESOLVED_COLUMN.WITH_SUGGESTION] A column cannot be resolved",
        "java.io.IOException: No space left on device",
    ],
)
def test_other_failures_are_not(message: str) -> None:
    assert not is_concurrent_commit(RuntimeError(message))
