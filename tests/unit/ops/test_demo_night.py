from __future__ import annotations

from rankflow.config import load_settings
from rankflow.ops.demo import TINY_TOP_K, night_top_k


def test_the_tiny_night_publishes_lists_its_catalogue_can_fill() -> None:
    settings = load_settings({})
    assert settings.default_top_k > TINY_TOP_K  # else the tiny preset would need no cap
    assert night_top_k(settings, "tiny") == TINY_TOP_K
    assert night_top_k(settings, "demo") == settings.default_top_k
