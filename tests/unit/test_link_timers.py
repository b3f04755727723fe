"""ipop.link.timers: the lazy deadline heap (push-if-earlier, pop-due, stale entries)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ipop.link.timers import DeadlineHeap

INF = float("inf")


class _Item:
    __slots__ = ("due", "due_seq", "key")

    def __init__(self, key: str) -> None:
        self.key = key
        self.due = INF
        self.due_seq = 0


def _heap() -> tuple[DeadlineHeap[str, _Item], dict[str, _Item]]:
    items: dict[str, _Item] = {}
    return DeadlineHeap(items.get), items


def _add(items: dict[str, _Item], key: str) -> _Item:
    item = items[key] = _Item(key)
    return item


def test_push_only_if_earlier() -> None:
    heap, items = _heap()
    a = _add(items, "a")
    assert heap.push("a", a, 5.0)
    assert not heap.push("a", a, 7.0)  # later: the live entry (5.0) stays
    assert not heap.push("a", a, 5.0)
    assert heap.push("a", a, 3.0)  # earlier: the 5.0 entry goes stale
    assert a.due == 3.0 and len(heap) == 2
    assert heap.next_deadline() == 3.0
    assert list(heap.pop_due(10.0)) == [a]  # once, though two entries were held
    assert a.due == INF and len(heap) == 0


def test_pop_due_in_deadline_order_and_only_due() -> None:
    heap, items = _heap()
    for key, t in (("late", 9.0), ("first", 1.0), ("second", 2.0)):
        heap.push(key, _add(items, key), t)
    assert [i.key for i in heap.pop_due(2.0)] == ["first", "second"]
    assert heap.next_deadline() == 9.0
    assert list(heap.pop_due(8.99)) == []
    assert [i.key for i in heap.pop_due(9.0)] == ["late"]
    assert heap.next_deadline() == INF


def test_entries_of_gone_or_replaced_items_are_stale() -> None:
    heap, items = _heap()
    heap.push("gone", _add(items, "gone"), 1.0)
    heap.push("again", _add(items, "again"), 2.0)
    heap.push("kept", _add(items, "kept"), 3.0)
    del items["gone"]  # the item left: its entry is skipped
    items["again"] = _Item("again")  # a new item under the same key: the old entry is not its
    assert heap.next_deadline() == 3.0  # stale tops dropped
    assert len(heap) == 1
    assert [i.key for i in heap.pop_due(5.0)] == ["kept"]


def test_forget_lets_a_later_deadline_in() -> None:
    heap, items = _heap()
    a = _add(items, "a")
    heap.push("a", a, 1.0)
    heap.forget(a)
    assert heap.push("a", a, 4.0)  # later than the live entry, and it goes in
    assert heap.next_deadline() == 4.0  # the 1.0 entry is stale now
    assert list(heap.pop_due(3.0)) == []


def test_entries_pushed_while_popping_are_seen() -> None:
    heap, items = _heap()
    a = _add(items, "a")
    b = _add(items, "b")
    heap.push("a", a, 1.0)
    seen = []
    for item in heap.pop_due(5.0):
        seen.append(item.key)
        if item is a:
            heap.push("b", b, 2.0)  # due already: handled in the same firing
            heap.push("a", a, 6.0)  # not due yet
    assert seen == ["a", "b"]
    assert heap.next_deadline() == 6.0


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.sampled_from("abcd"), st.integers(0, 20)),
        st.tuples(st.just("drop"), st.sampled_from("abcd"), st.just(0)),
        st.tuples(st.just("pop"), st.just(""), st.integers(0, 20)),
    ),
    max_size=60,
)


@given(_ops)
def test_matches_a_naive_model(ops: list[tuple[str, str, int]]) -> None:
    """Against a dict of each item's earliest deadline since it last fired."""
    heap, items = _heap()
    model: dict[str, float] = {}
    for op, key, t in ops:
        if op == "push":
            item = items.get(key) or _add(items, key)
            heap.push(key, item, float(t))
            model[key] = min(model.get(key, INF), float(t))
        elif op == "drop":
            items.pop(key, None)
            model.pop(key, None)
        else:
            fired = [i.key for i in heap.pop_due(float(t))]
            assert sorted(fired) == sorted(k for k, d in model.items() if d <= t)
            deadlines = [model[k] for k in fired]
            assert deadlines == sorted(deadlines)  # earliest first
            for k in fired:
                del model[k]
        assert heap.next_deadline() == min(model.values(), default=INF)
