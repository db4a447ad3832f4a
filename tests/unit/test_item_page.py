"""One page of a stored response's input items (OpenAI's cursor pages)."""

from __future__ import annotations

import pytest

from proxies.gateway import FaceError
from proxies.llama_endpoints import item_page

ITEMS = [{"id": f"i{n}"} for n in range(5)]


def ids(page: dict) -> list[str]:
    return [item["id"] for item in page["data"]]


def test_newest_first_twenty_unless_asked() -> None:
    page = item_page(ITEMS, {})
    assert ids(page) == ["i4", "i3", "i2", "i1", "i0"] and not page["has_more"]
    assert (page["first_id"], page["last_id"]) == ("i4", "i0")


def test_pages_follow_after_in_either_order_and_before_goes_back() -> None:
    first = item_page(ITEMS, {"order": "asc", "limit": "2"})
    assert ids(first) == ["i0", "i1"] and first["has_more"]
    second = item_page(ITEMS, {"order": "asc", "limit": "2", "after": "i1"})
    assert ids(second) == ["i2", "i3"] and second["has_more"]
    last = item_page(ITEMS, {"order": "asc", "limit": "2", "after": "i3"})
    assert ids(last) == ["i4"] and not last["has_more"]
    assert ids(item_page(ITEMS, {"limit": "2", "after": "i3"})) == ["i2", "i1"]
    assert ids(item_page(ITEMS, {"order": "asc", "limit": "2", "before": "i4"})) == ["i2", "i3"]
    assert ids(item_page(ITEMS, {"order": "asc", "after": "i0", "before": "i3"})) == ["i1", "i2"]
    assert item_page([], {})["first_id"] is None


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"limit": "101"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"order": "new"}, "order"),
        ({"before": "z"}, "before"),
    ],
)
def test_a_bad_query_is_a_400_naming_it(query: dict, param: str) -> None:
    with pytest.raises(FaceError) as refused:
        item_page(ITEMS, query)
    assert (refused.value.status, refused.value.param) == (400, param)
