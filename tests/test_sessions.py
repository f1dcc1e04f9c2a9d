"""broker.sessions: the in-flight window, offline queue and redelivery rules, driven by a recording outbox."""

from __future__ import annotations

from dataclasses import dataclass, field

from broker.sessions import Limits, Outgoing, Session


@dataclass
class Recorder:
    sent: list[tuple[str, int | None, bool, str]] = field(default_factory=list)

    def send_publish(self, message: Outgoing, packet_id: int | None, *, dup: bool) -> None:
        self.sent.append(("PUBLISH", packet_id, dup, message.topic))

    def send_pubrel(self, packet_id: int) -> None:
        self.sent.append(("PUBREL", packet_id, False, ""))


def msg(n: int, qos: int = 1) -> Outgoing:
    return Outgoing(f"t/{n}", b"x", qos)


def test_qos0_goes_out_or_is_dropped_never_queued() -> None:
    session = Session("c", "u", clean=False)
    session.offer(msg(1, qos=0))
    assert not session.queue
    out = Recorder()
    session.attach(out)
    session.offer(msg(2, qos=0))
    assert out.sent == [("PUBLISH", None, False, "t/2")]


def test_window_limits_inflight_and_acks_pull_from_the_queue_in_order() -> None:
    session = Session("c", "u", clean=True, limits=Limits(max_inflight=2, max_queued=10))
    out = Recorder()
    session.attach(out)
    for n in range(5):
        session.offer(msg(n))
    assert [s[3] for s in out.sent] == ["t/0", "t/1"] and len(session.queue) == 3
    assert session.acknowledged(1, qos=1)
    assert [s[3] for s in out.sent] == ["t/0", "t/1", "t/2"]
    assert not session.acknowledged(1, qos=1)  # a second PUBACK for the same id is ignored


def test_no_timer_drops_inflight_and_reconnect_resends_with_dup_first() -> None:
    """[MQTT-4.4.0-1]: unacknowledged PUBLISH and PUBREL are resent when the session resumes."""
    session = Session("c", "u", clean=False, limits=Limits(max_inflight=3, max_queued=10))
    first = Recorder()
    session.attach(first)
    session.offer(msg(1, qos=1))
    session.offer(msg(2, qos=2))
    session.offer(msg(3, qos=2))
    assert session.received(3)  # PUBREC for the second QoS 2 message
    session.detach()
    session.offer(msg(4))  # arrives while offline: queued behind the in-flight ones
    again = Recorder()
    session.attach(again)
    assert again.sent == [
        ("PUBLISH", 1, True, "t/1"),
        ("PUBLISH", 2, True, "t/2"),
        ("PUBREL", 3, False, ""),
    ]
    assert session.acknowledged(3, qos=2)  # PUBCOMP completes the QoS 2 flow once
    assert again.sent[-1] == ("PUBLISH", 4, False, "t/4")
    assert not session.acknowledged(2, qos=2)  # PUBCOMP before PUBREC is not a completion


def test_full_queue_drops_the_oldest_and_counts() -> None:
    session = Session("c", "u", clean=False, limits=Limits(max_inflight=1, max_queued=3))
    for n in range(5):
        session.offer(msg(n))
    assert [m.topic for m in session.queue] == ["t/2", "t/3", "t/4"]
    assert session.dropped == 2


def test_clean_session_queues_nothing_while_offline() -> None:
    session = Session("c", "u", clean=True)
    session.offer(msg(1))
    assert not session.queue


def test_packet_ids_skip_those_in_flight_and_wrap() -> None:
    session = Session("c", "u", clean=True, limits=Limits(max_inflight=3))
    session.last_packet_id = 65534
    out = Recorder()
    session.attach(out)
    for n in range(3):
        session.offer(msg(n))
    assert [s[1] for s in out.sent] == [65535, 1, 2]


def test_a_session_that_never_queues_allocates_no_queue_or_qos2_set() -> None:
    """Issue 14 (10,000 idle connections within 100 MB): an empty deque and two empty sets cost ~1.2 KB a
    session; they are made on first use, and then work as before (QoS 2 resends recognised, queue drained)."""
    session = Session("c", "u", clean=False, limits=Limits(max_inflight=1, max_queued=10))
    out = Recorder()
    session.attach(out)
    session.offer(msg(1))  # straight into the window: nothing queued
    assert session.queue is None and session.incoming_qos2 is None
    session.offer(msg(2))
    assert session.queue is not None and [m.topic for m in session.queue] == ["t/2"]
    assert session.incoming_started(7) and not session.incoming_started(7)  # a resend of packet 7
    session.incoming_released(7)
    assert session.incoming_started(7)
    assert session.acknowledged(1, qos=1) and not session.queue
