"""The operator's memo is one object for all: kopf gives each object the same memo."""

from __future__ import annotations

from typing import cast

from kopf import RawBody
from kopf._core.reactor.inventory import ResourceMemories

from gcpcall.handlers.common import OperatorMemo


async def test_every_object_gets_the_operators_memo_not_a_copy() -> None:
    memo = OperatorMemo(deps="the deps")
    memories = ResourceMemories()
    first = await memories.recall_memo(_raw("u1"), memobase=memo)
    second = await memories.recall_memo(_raw("u2"), memobase=memo)
    assert first is memo
    assert second is memo
    assert memo["deps"] == "the deps"


def _raw(uid: str) -> RawBody:
    return cast(RawBody, {"metadata": {"uid": uid, "name": uid, "namespace": "n"}})
