"""The retained-message tree (broker/retained.py) against the spec's matching rules, and against a plain
scan of every topic with the subscription tree's matcher for generated topics and filters."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from broker.retained import RetainedStore
from broker.routing import filter_matches


def _topics(store: RetainedStore, topic_filter: str) -> set[str]:
    return {m.topic for m in store.matching(topic_filter)}


def test_spec_examples() -> None:
    store = RetainedStore()
    for topic in ("sport", "sport/tennis/player1", "sport/tennis/player1/ranking", "$SYS/uptime", "/finance"):
        store.put(topic, b"x", 0)
    assert _topics(store, "sport/#") == {"sport", "sport/tennis/player1", "sport/tennis/player1/ranking"}  # 4.7.1.2
    assert _topics(store, "sport/tennis/+") == {"sport/tennis/player1"}
    assert _topics(store, "+/+") == {"/finance"}  # 4.7.1.3: a leading "/" makes an empty first level
    assert _topics(store, "#") == {"sport", "sport/tennis/player1", "sport/tennis/player1/ranking", "/finance"}
    assert _topics(store, "$SYS/#") == {"$SYS/uptime"}  # [MQTT-4.7.2-1]: only when asked by name
    assert _topics(store, "sport") == {"sport"}
    assert len(store) == 5


def test_an_empty_payload_clears_and_prunes() -> None:
    store = RetainedStore()
    store.put("a/b/c", b"1", 1)
    store.put("a", b"2", 0)
    assert store.put("a/b/c", b"", 0) is True
    assert store.put("a/b/c", b"", 0) is False
    assert _topics(store, "#") == {"a"} and len(store) == 1
    assert store.put("a", b"", 0) is True and store.all() == []


LEVEL = st.sampled_from(["a", "b", "", "$x"])


@given(
    topics=st.lists(st.lists(LEVEL, min_size=1, max_size=4).map("/".join), max_size=12),
    topic_filter=st.lists(st.sampled_from(["a", "b", "", "+", "$x"]), min_size=1, max_size=4).map("/".join),
    hash_tail=st.booleans(),
)
def test_same_answer_as_a_scan(topics: list[str], topic_filter: str, hash_tail: bool) -> None:
    if hash_tail:
        topic_filter = topic_filter + "/#"
    store = RetainedStore()
    for topic in topics:
        store.put(topic, b"x", 0)
    assert _topics(store, topic_filter) == {t for t in set(topics) if filter_matches(topic_filter, t)}
