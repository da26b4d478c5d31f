"""Value encoding of the online features (pure): packed little-endian words, one value per key.

Every value is a sequence of 4-byte little-endian words, readable from any language
(``docs/feature-store.md``):

* ``u`` user and ``i`` item vectors: float32 per feature, in registry order, NaN = missing
  (item vectors live in hash buckets: field = item id in decimal, bucket = item id mod the
  version's ``buckets``, about ``ITEMS_PER_BUCKET`` items each, so a vector costs its bytes plus
  a few, not a key of its own);
* ``p`` user profile, stored in the user's ``u`` value right after its vector (one key per
  user, not two): ``declared_size`` (uint32 code, 0xFFFFFFFF = unknown), then for each
  affinity dimension (in the order the schema lists them) ``n`` (uint32), ``n`` value codes
  (uint32, ascending) and ``n`` shares (float32);
* ``h`` history: ``n`` item ids (uint32, ascending), then ``n`` times shown and ``n`` clicks
  (float32) over the history window.

String values (categories, brands, styles, sizes) are codes into the feature version's
vocabulary, stored with its schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from rankflow.store.keys import bucket_count

# v3: a user's profile follows its vector in one value; v2: item vectors in hash buckets
FEATURE_ENCODING = "f32le-v3"
NO_CODE = 0xFFFFFFFF
_U32 = np.dtype("<u4")
_F32 = np.dtype("<f4")
GROUPS = {"user": "u", "profile": "p", "history": "h", "item": "i"}  # what a version holds
KEY_GROUPS = (GROUPS["user"], GROUPS["history"], GROUPS["item"])  # the keys it is stored under
# items per hash bucket on average: well under Redis's hash-max-listpack-entries (128), so a
# bucket stays a compact listpack (values also need hash-max-listpack-value >= the vector bytes)
ITEMS_PER_BUCKET = 64


def item_buckets(items: int) -> int:
    """How many hash buckets a feature version's item vectors go into (a prime, see keys)."""
    return bucket_count(items, ITEMS_PER_BUCKET)


def encode_vectors(matrix: npt.NDArray[np.floating]) -> list[bytes]:
    """Encode each row of a (rows x features) matrix as one float32 little-endian value."""
    packed = np.ascontiguousarray(matrix, dtype=_F32)
    raw, width = packed.tobytes(), packed.shape[1] * 4
    return [raw[i : i + width] for i in range(0, len(raw), width)]


def decode_vector(value: bytes, width: int) -> npt.NDArray[np.float32]:
    """Decode one float32 vector, checking it holds ``width`` features."""
    if len(value) != 4 * width:
        raise ValueError(f"a vector of {width} features is {4 * width} bytes, got {len(value)}")
    return np.frombuffer(value, dtype=_F32).astype(np.float32)


@dataclass(frozen=True)
class Profile:
    """A user's declared size and affinities, as vocabulary codes and float32 shares."""

    declared_size: int  # -1 = unknown
    codes: dict[str, npt.NDArray[np.int64]]
    shares: dict[str, npt.NDArray[np.float32]]


def encode_profile(profile: Profile, dimensions: Sequence[str]) -> bytes:
    """Encode a profile (codes sorted per dimension, so readers may binary-search them)."""
    size = NO_CODE if profile.declared_size < 0 else profile.declared_size
    words = [np.array([size], dtype=_U32).tobytes()]
    for dim in dimensions:
        codes = np.asarray(profile.codes[dim], dtype=np.int64)
        order = np.argsort(codes, kind="stable")
        words.append(np.array([len(codes)], dtype=_U32).tobytes())
        words.append(codes[order].astype(_U32).tobytes())
        words.append(np.asarray(profile.shares[dim], dtype=_F32)[order].tobytes())
    return b"".join(words)


def decode_profile(value: bytes, dimensions: Sequence[str]) -> Profile:
    """Decode a profile value, checking its lengths."""
    if len(value) % 4 or len(value) < 4 * (1 + len(dimensions)):
        raise ValueError(
            f"a profile is at least {4 * (1 + len(dimensions))} bytes, a multiple of 4"
        )
    words = np.frombuffer(value, dtype=_U32)
    size = int(words[0])
    at = 1
    codes, shares = {}, {}
    for dim in dimensions:
        n = int(words[at])
        if at + 1 + 2 * n > len(words):
            raise ValueError(f"profile truncated in its {dim} affinities")
        codes[dim] = words[at + 1 : at + 1 + n].astype(np.int64)
        shares[dim] = words[at + 1 + n : at + 1 + 2 * n].view(_F32).astype(np.float32)
        at += 1 + 2 * n
    if at != len(words):
        raise ValueError(f"profile has {len(words) - at} trailing words")
    return Profile(-1 if size == NO_CODE else size, codes, shares)


def encode_user(vector: npt.NDArray[np.floating], profile: Profile, dims: Sequence[str]) -> bytes:
    """Encode a user's value: the float32 vector, then the profile."""
    return np.asarray(vector, dtype=_F32).tobytes() + encode_profile(profile, dims)


def decode_user(
    value: bytes, width: int, dimensions: Sequence[str]
) -> tuple[npt.NDArray[np.float32], Profile]:
    """Decode a user's value into its vector of ``width`` features and its profile."""
    if len(value) < 4 * width:
        raise ValueError(f"a user value starts with {4 * width} bytes of vector, got {len(value)}")
    vector = np.frombuffer(value, dtype=_F32, count=width).astype(np.float32)
    return vector, decode_profile(value[4 * width :], dimensions)


@dataclass(frozen=True)
class History:
    """The items shown to a user over the window (ascending ids) with times shown and clicks."""

    item_ids: npt.NDArray[np.int64]
    seen: npt.NDArray[np.float32]
    clicked: npt.NDArray[np.float32]

    def lookup(self, items: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.float32], ...]:
        """Times shown and clicks of each of ``items`` (0 for items never shown)."""
        at = np.minimum(np.searchsorted(self.item_ids, items), max(len(self.item_ids) - 1, 0))
        seen = np.zeros(len(items), dtype=np.float32)
        clicked = np.zeros(len(items), dtype=np.float32)
        if len(self.item_ids):
            hit = self.item_ids[at] == items
            seen[hit], clicked[hit] = self.seen[at[hit]], self.clicked[at[hit]]
        return seen, clicked


def encode_history(history: History) -> bytes:
    """Encode a history, sorting it by item id."""
    order = np.argsort(history.item_ids, kind="stable")
    ids = np.asarray(history.item_ids)[order]
    if len(ids) and (ids.min() < 0 or ids.max() >= NO_CODE):
        raise ValueError("history item ids must fit in uint32")
    return b"".join(
        [
            ids.astype(_U32).tobytes(),
            np.asarray(history.seen, dtype=_F32)[order].tobytes(),
            np.asarray(history.clicked, dtype=_F32)[order].tobytes(),
        ]
    )


def decode_history(value: bytes) -> History:
    """Decode a history value (12 bytes per item)."""
    if len(value) % 12:
        raise ValueError(f"a history is a multiple of 12 bytes, got {len(value)}")
    n = len(value) // 12
    words = np.frombuffer(value, dtype=_U32)
    return History(
        words[:n].astype(np.int64),
        words[n : 2 * n].view(_F32).astype(np.float32),
        words[2 * n :].view(_F32).astype(np.float32),
    )


EMPTY_HISTORY = History(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32))


# --------------------------------------------------------------------------- bulk encoders


def pack_runs(
    rows: int, parts: Sequence[tuple[npt.NDArray[np.int64], np.ndarray]]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint32]]:
    """Concatenate, per row, each part's run of words for that row: one value per row, in bulk.

    A part is ``(lengths, words)``: row ``r`` owns ``lengths[r]`` of its 4-byte words (any
    4-byte dtype), grouped by row in row order. A row's value is its run of the first part,
    then of the second, and so on. One scatter per part (several times faster than placing
    each word by its row and index). Returns the values' byte offsets (``rows + 1``) and their
    words, for an Arrow binary column.
    """
    sizes = [np.asarray(lengths, dtype=np.int64) for lengths, _ in parts]
    row_words = np.sum(sizes, axis=0) if sizes else np.zeros(rows, np.int64)
    row_start = np.cumsum(row_words) - row_words
    out = np.empty(int(row_words.sum()), dtype=_U32)
    before = np.zeros(rows, dtype=np.int64)  # words of the earlier parts in each row
    previous: npt.NDArray[np.int64] | None = None
    at = step = np.zeros(0, dtype=np.int64)
    for p, (lengths, (_, words)) in enumerate(zip(sizes, parts, strict=True)):
        if len(lengths) != rows or words.dtype.itemsize != 4 or len(words) != lengths.sum():
            raise ValueError(f"part {p} must give {rows} lengths and their 4-byte words")
        if lengths is previous:  # the same rows' runs again: each word moves one run along
            if len(step) != len(at):
                step = np.repeat(lengths, lengths)
            at += step
        else:
            first = np.cumsum(lengths) - lengths  # the part's index of each row's first word
            at = np.arange(len(words), dtype=np.int64)
            at += np.repeat(row_start + before - first, lengths)
            step = np.zeros(0, dtype=np.int64)
        out[at] = np.ascontiguousarray(words).view(_U32)
        before += lengths
        previous = lengths
    return np.r_[0, np.cumsum(row_words)] * 4, out
