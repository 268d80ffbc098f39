"""PerLoop: one value per event loop, made once, forgotten on pop."""

from __future__ import annotations

import asyncio

from app.services.llm.per_loop import PerLoop


def test_one_value_per_loop_made_once() -> None:
    made: list[object] = []

    def make() -> object:
        made.append(object())
        return made[-1]

    store = PerLoop(make)

    async def twice() -> tuple[object, object]:
        return store.get(), store.get()

    first_a, first_b = asyncio.run(twice())
    second_a, _ = asyncio.run(twice())
    assert first_a is first_b
    assert second_a is not first_a
    assert len(made) == 2


async def test_pop_forgets_the_running_loops_value() -> None:
    store: PerLoop[list[int]] = PerLoop(list)
    value = store.get()
    assert store.pop() is value
    assert store.pop() is None
    assert store.get() is not value
