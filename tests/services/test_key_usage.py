"""The per-worker table of API-key facts: bounded, and expiry read from it."""

from __future__ import annotations

import time
import uuid

from app.services.key_usage import KeyFacts, KeyUsage


def test_facts_are_bounded_oldest_dropped_first() -> None:
    usage = KeyUsage(max_entries=2)
    facts = [KeyFacts(uuid.uuid4(), None) for _ in range(3)]
    for i, fact in enumerate(facts):
        usage.remember(f"hash-{i}", fact)
    assert usage.facts("hash-0") is None
    assert usage.facts("hash-1") == facts[1]
    assert usage.facts("hash-2") == facts[2]


def test_expiry() -> None:
    assert not KeyFacts(uuid.uuid4(), None).expired()
    assert not KeyFacts(uuid.uuid4(), time.time() + 60).expired()
    assert KeyFacts(uuid.uuid4(), time.time() - 1).expired()
