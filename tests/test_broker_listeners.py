"""Listeners: plain TCP (everywhere else), WebSocket (paho over websockets) and TLS (mosquitto_sub --cafile)."""

from __future__ import annotations

import secrets
import subprocess
import threading
from pathlib import Path

import paho.mqtt.client as mqtt

from tests.conftest import Users, stack_users
from tests.helpers import MosquittoSub, Stack, mosquitto_pub, run_mosquitto_pub, start_stack


def test_websocket_listener_serves_a_real_client(chat_stack: Stack, chat_users: Users) -> None:
    alice, alice_pw = chat_users.user("alice")
    bob, bob_pw = chat_users.user("bob")
    assert chat_stack.ws_port
    received: list[tuple[str, bytes]] = []
    subscribed, got = threading.Event(), threading.Event()
    browser = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"ws-{secrets.token_hex(3)}", transport="websockets"
    )
    browser.username_pw_set(bob, bob_pw)
    browser.on_connect = lambda c, *_: c.subscribe(f"dm/{bob}/+", 1)
    browser.on_subscribe = lambda *_: subscribed.set()
    browser.on_message = lambda _c, _u, m: (received.append((m.topic, m.payload)), got.set())
    browser.connect("127.0.0.1", chat_stack.ws_port)
    browser.loop_start()
    try:
        assert subscribed.wait(20)
        mosquitto_pub(chat_stack.mqtt_port, alice, alice_pw, f"dm/{bob}/{alice}", "over websocket")
        assert got.wait(20)
        assert received == [(f"dm/{bob}/{alice}", b"over websocket")]
    finally:
        browser.disconnect()
        browser.loop_stop()


def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "broker.pem", directory / "broker.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_tls_listener_serves_mosquitto_clients(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    stack = start_stack(
        f"sqlite:///{tmp_path}/tls.db",
        tmp_path,
        SWITCHBOARD_MQTT__TLS_PORT="0",
        SWITCHBOARD_MQTT__TLS_CERT=str(cert),
        SWITCHBOARD_MQTT__TLS_KEY=str(key),
    )
    try:
        with stack_users(stack) as users:
            alice, alice_pw = users.user("alice")
            bob, bob_pw = users.user("bob")
        assert stack.tls_port
        tls = ("--cafile", str(cert))
        inbox = MosquittoSub(stack.tls_port, bob, bob_pw, f"dm/{bob}/+", extra=tls)
        try:
            assert inbox.granted() == [1]
            mosquitto_pub(stack.tls_port, alice, alice_pw, f"dm/{bob}/{alice}", "over tls", extra=tls)
            assert inbox.wait_messages(1) == [(f"dm/{bob}/{alice}", "over tls")]
        finally:
            inbox.close()
        plain = run_mosquitto_pub(stack.tls_port, alice, alice_pw, f"dm/{bob}/{alice}", "plain")  # no TLS: refused
        assert plain.returncode != 0
    finally:
        assert stack.stop() == 0
