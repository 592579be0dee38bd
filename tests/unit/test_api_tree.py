"""copy_tree copies deeply (a change to the copy never reaches the original) and falls
back to plain dicts and lists for values pickle cannot take; plain() turns mapping views
and tuples into the JSON they stand for."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from gcpcall.api.conditions import status_patch
from gcpcall.api.tree import copy_tree, plain


class View(Mapping[str, Any]):
    """A read-only mapping over a dict, as kopf hands out; pickle refuses it."""

    def __init__(self, src: dict[str, Any]) -> None:
        self._src = src

    def __getitem__(self, key: str) -> Any:
        return self._src[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._src)

    def __len__(self) -> int:
        return len(self._src)

    def __reduce__(self) -> Any:
        raise TypeError("views do not pickle")


def status() -> dict[str, Any]:
    return {"conditions": [{"type": "Ready", "status": "True"}],
            "runs": [{"attemptTime": "2026-01-01T00:00:00Z", "response": {"items": [1, 2]}}]}


def test_a_copy_shares_nothing_with_its_original() -> None:
    original = status()
    copied = copy_tree(original)
    assert copied == original
    copied["runs"][0]["response"]["items"].append(3)
    copied["conditions"][0]["status"] = "False"
    assert original == status()


def test_a_value_pickle_refuses_is_copied_as_plain_dicts() -> None:
    inner = {"a": [1, {"b": "c"}]}
    copied = copy_tree({"view": View(inner)})
    assert copied == {"view": {"a": [1, {"b": "c"}]}}
    assert type(copied["view"]) is dict
    copied["view"]["a"][1]["b"] = "changed"
    assert inner == {"a": [1, {"b": "c"}]}


def test_plain_makes_views_and_tuples_json() -> None:
    assert plain({"x": (1, View({"y": (2,)}))}) == {"x": [1, {"y": [2]}]}
    assert type(plain({"x": (1,)})["x"]) is list


def test_a_tuple_and_a_list_with_the_same_items_need_no_patch() -> None:
    assert status_patch({"runs": [{"a": 1}]}, {"runs": ({"a": 1},)}) == {}
    assert status_patch({"runs": [{"a": 1}]}, {"runs": ({"a": 2},)}) == {"runs": [{"a": 2}]}
