"""The web chat client at /app/ and the operator console at /console/ in a real browser (headless
Chromium driven by Selenium) against a real stack (``switchboard up``: broker with its WebSocket listener,
bridge, API): alice and bob log in, talk in a DM and a group both ways live, see each other online and
typing, get "sent" on the bridge's ack and "read" from the other's receipt, send an image whose thumbnail
the other sees, and find their history again after a reload; an administrator manages users and groups
in the console and sees live charts, online users, rejected messages and the configuration with secrets
masked; bob gets no console. One stack and one browser per user for the whole module, to keep it quick."""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from switchboard.tables import Role
from tests.browser import (
    act,
    attributes,
    chromium,
    click,
    css,
    login,
    screenshot,
    text,
    texts,
    type_into,
    wait,
    wait_text,
)
from tests.conftest import stack_users
from tests.helpers import Stack, mosquitto_pub, start_stack
from tests.rawmqtt import RawClient

HOOK_SECRET = "hook-" + secrets.token_hex(8)
BRIDGE_PASSWORD = "bridge-" + secrets.token_hex(8)


class Chat:
    """The two users, their group, and a browser logged in as each."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        with stack_users(stack) as users:
            self.alice, self.alice_pw = users.user("alice")
            self.bob, self.bob_pw = users.user("bob")
            self.group = users.group("team", [self.alice, self.bob])
            self.long = users.group("long", [self.alice, self.bob])
            self.admin, self.admin_pw = users.user("root", role=Role.ADMIN)
        self.a = chromium()
        self.b = chromium()

    def close(self) -> None:
        self.a.quit()
        self.b.quit()


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chat]:
    url = f"sqlite:///{tmp_path_factory.mktemp('webapp')}/app.db"
    stack = start_stack(
        url,
        tmp_path_factory.mktemp("webapp-stack"),
        SWITCHBOARD_API__HOOK_SECRET=HOOK_SECRET,
        SWITCHBOARD_BRIDGE__PASSWORD=BRIDGE_PASSWORD,
    )
    chat = Chat(stack)
    try:
        login(chat.a, stack.api, "app", chat.alice, chat.alice_pw)
        login(chat.b, stack.api, "app", chat.bob, chat.bob_pw)
        for browser in (chat.a, chat.b):
            wait_text(browser, "#status", "connected")
        yield chat
    finally:
        chat.close()
        assert stack.stop() == 0, stack.output()


def dm(chat: Chat) -> str:
    return f"dm:{':'.join(sorted((chat.alice, chat.bob)))}"


def open_conversation(browser: webdriver.Chrome, conversation: str) -> None:
    click(browser, f'#conversations button[data-conversation="{conversation}"]')
    wait(browser, lambda b: b.find_element(By.ID, "composer").is_displayed(), "the composer")


def send(browser: webdriver.Chrome, body: str) -> None:
    type_into(browser, "#body", body)
    type_into(browser, "#body", Keys.ENTER)  # Enter sends: the app is usable from the keyboard


def test_a_bad_password_is_refused_with_the_reason(chat: Chat) -> None:
    browser = chromium()
    try:
        login(browser, chat.stack.api, "app", chat.alice, "wrong")
        wait_text(browser, "#login-error", "bad username or password")
    finally:
        browser.quit()


def test_presence_dots_show_who_is_online(chat: Chat) -> None:
    # A user that does not exist is named as such.
    type_into(chat.a, "#new-peer", "nobody-at-all" + Keys.ENTER)
    wait_text(chat.a, "#new-chat-error", "no such user(s): nobody-at-all")
    act(chat.a, "#new-peer", lambda e: e.clear(), "clearing")
    # alice starts a DM with bob from the keyboard: the form is labelled and submits on Enter.
    type_into(chat.a, "#new-peer", chat.bob + Keys.ENTER)
    wait_text(chat.a, "#peer-presence", f"{chat.bob} is online")
    wait(chat.a, lambda b: b.find_elements(By.CSS_SELECTOR, f'.dot.online[data-presence="{chat.bob}"]'), "bob's dot")


def test_a_dm_each_way_live_with_typing_sent_and_read(chat: Chat) -> None:
    # alice types: bob, with no conversation open yet, sees it once he opens the DM; first the message.
    send(chat.a, "hello bob")
    wait(
        chat.a,
        lambda b: (
            "sent" in texts(b, "#messages li.mine .state")
            or "read" in texts(b, "#messages li.mine .state")
            or "delivered" in texts(b, "#messages li.mine .state")
        ),
        "alice's message acknowledged",
    )
    # bob gets it live: the conversation appears with an unread count and the last message.
    wait_text(chat.b, f'#conversations button[data-conversation="{dm(chat)}"]', "hello bob")
    wait_text(chat.b, f'#conversations button[data-conversation="{dm(chat)}"] .unread', "1")
    # bob's app has it but he has not opened it: "delivered" (his app's receipt, live over MQTT).
    wait(chat.a, lambda b: texts(b, "#messages li.mine .state")[-1:] == ["delivered"], "alice's message delivered")
    open_conversation(chat.b, dm(chat))
    wait_text(chat.b, "#messages li.theirs .body", "hello bob")
    # bob read it: alice's message says so (bob's receipt, live over MQTT).
    wait(chat.a, lambda b: texts(b, "#messages li.mine .state")[-1:] == ["read"], "alice's message marked read")
    # bob types; alice sees it; then bob answers and alice gets it live.
    type_into(chat.b, "#body", "hi al")
    wait_text(chat.a, "#typing", f"{chat.bob} is typing")
    type_into(chat.b, "#body", "ice" + Keys.ENTER)
    wait_text(chat.a, "#messages li.theirs .body", "hi alice")
    wait(chat.a, lambda b: not b.find_element(By.ID, "typing").text, "the typing indicator to stop")


def test_a_group_message_each_way(chat: Chat) -> None:
    group = f"group:{chat.group}"
    open_conversation(chat.a, group)
    send(chat.a, "hello team")
    wait_text(chat.b, f'#conversations button[data-conversation="{group}"]', "hello team")
    open_conversation(chat.b, group)
    wait_text(chat.b, "#messages li.theirs .body", "hello team")
    send(chat.b, "hello from bob")
    wait_text(chat.a, "#messages li.theirs .body", "hello from bob")
    wait_text(chat.a, "#messages li.theirs .sender", chat.bob)


def test_an_image_attachment_with_its_thumbnail(chat: Chat, tmp_path: Path) -> None:
    picture = tmp_path / "red.png"
    buffer = io.BytesIO()
    Image.new("RGB", (800, 600), (200, 30, 30)).save(buffer, "PNG")
    picture.write_bytes(buffer.getvalue())
    open_conversation(chat.a, dm(chat))
    open_conversation(chat.b, dm(chat))
    type_into(chat.a, "#attach", str(picture))
    type_into(chat.a, "#body", "a picture" + Keys.ENTER)
    # bob sees the thumbnail (320 pixels wide: the server's, not the 800-pixel original) ...
    thumb = "li.theirs img.thumb"
    wait(
        chat.b,
        lambda b: b.execute_script(f"const i = document.querySelector('{thumb}'); return i && i.naturalWidth"),
        "bob's thumbnail",
    )
    assert chat.b.execute_script(f"return document.querySelector('{thumb}').naturalWidth") == 320
    screenshot(chat.b, "web-app")
    # ... and the full image when he opens it.
    click(chat.b, "li.theirs button.image")
    wait(
        chat.b,
        lambda b: b.execute_script("const i = document.getElementById('full-image'); return i.naturalWidth"),
        "the full image",
    )
    assert chat.b.execute_script("return document.getElementById('full-image').naturalWidth") == 800
    click(chat.b, "#viewer button")


def test_after_a_network_blip_it_reconnects_and_catches_up(chat: Chat) -> None:
    open_conversation(chat.b, dm(chat))
    # The blip: the browser goes offline for new connections (Chrome's network emulation), and another
    # connection with bob's client id takes over his session, so the broker closes the browser's [MQTT-3.1.4-2].
    chat.b.execute_cdp_cmd("Network.enable", {})
    offline = {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}
    chat.b.execute_cdp_cmd("Network.emulateNetworkConditions", offline)
    intruder = RawClient(chat.stack.mqtt_port)
    try:
        client_id = chat.b.execute_script("return document.body.dataset.clientId")
        intruder.connect(client_id, chat.bob, chat.bob_pw)
        wait(chat.b, lambda b: b.find_element(By.ID, "status").text != "connected", "bob's app to notice the blip")
        intruder.disconnect()
        open_conversation(chat.a, dm(chat))
        send(chat.a, "sent while you were away")
        wait(chat.a, lambda b: texts(b, "#messages li.mine .state")[-1:] == ["sent"], "alice's message stored")
        assert "sent while you were away" not in texts(chat.b, "#messages .body")
    finally:
        intruder.close()
        chat.b.execute_cdp_cmd("Network.emulateNetworkConditions", {**offline, "offline": False})
    # Back online: it reconnects by itself and catches up through /v1/sync.
    wait_text(chat.b, "#status", "connected")
    wait_text(chat.b, "#messages li.theirs .body", "sent while you were away")


def test_history_is_there_after_a_reload(chat: Chat) -> None:
    chat.b.refresh()
    wait_text(chat.b, "#status", "connected")
    open_conversation(chat.b, dm(chat))
    for body in ("hello bob", "hi alice", "a picture"):
        wait_text(chat.b, "#messages .body", body)
    # The conversation list is newest first: the DM (the picture) is above the group.
    order = attributes(chat.b, "#conversations button", "dataset.conversation")
    assert order.index(dm(chat)) < order.index(f"group:{chat.group}")


def test_history_pages_back(chat: Chat) -> None:
    """35 messages: the newest 30 (one page) on opening, the rest with "Load earlier messages"."""
    group = f"group:{chat.long}"
    writer = RawClient(chat.stack.mqtt_port)
    try:
        writer.connect(f"writer-{chat.long}", chat.alice, chat.alice_pw)
        for n in range(1, 36):
            writer.publish(f"group/{chat.long}/{chat.alice}", f'{{"id": "long-{n}", "body": "number {n}"}}'.encode(), 1)
        with chat.stack.http(chat.bob, chat.bob_pw) as http:

            def newest() -> int:
                answer = http.get(f"/v1/conversations/{group}/messages?limit=1")
                return int(answer.json()["messages"][0]["seq"]) if answer.status_code == 200 else 0

            wait(chat.b, lambda _b: newest() == 35, "35 messages stored")
        writer.disconnect()
    finally:
        writer.close()
    open_conversation(chat.b, group)
    wait(chat.b, lambda b: len(texts(b, "#messages .body")) >= 30, "the first page")
    # The page, and only it, even though bob's app saw all 35 live and syncs them: earlier ones wait for the button.
    assert texts(chat.b, "#messages .body") == [f"number {n}" for n in range(6, 36)]
    # It opens scrolled to the newest message (at the bottom of the list, in view).
    assert chat.b.execute_script(LAST_IN_VIEW) == "35"
    click(chat.b, "#older")
    everything = [f"number {n}" for n in range(1, 36)]  # (not wait_text: "number 1" is in "number 10")
    wait(chat.b, lambda b: texts(b, "#messages .body") == everything, "all 35 in order")
    assert not chat.b.find_element(By.ID, "older").is_displayed()
    # The earlier messages go in above, out of view: the reader still sees what he was reading, the newest.
    assert chat.b.execute_script(LAST_IN_VIEW) == "35"


LAST_IN_VIEW = """const list = document.getElementById("messages"), bottom = list.getBoundingClientRect().bottom;
return [...list.children].findLast((li) => li.getBoundingClientRect().top < bottom - 1)?.dataset.seq;"""


def test_the_app_reads_on_a_phone_width_window(chat: Chat) -> None:
    chat.a.set_window_size(390, 844)
    try:
        width = chat.a.execute_script("return document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width} pixels wide on a 390-pixel screen"
        assert css(chat.a, "#body").is_displayed()
    finally:
        chat.a.set_window_size(1200, 850)


def test_me_names_the_callers_role_and_groups(chat: Chat) -> None:
    with chat.stack.http(chat.alice, chat.alice_pw) as http:
        groups = sorted([chat.group, chat.long])
        assert http.get("/v1/me").json() == {"name": chat.alice, "role": "user", "groups": groups}
        for route in ("stats", "online", "rejected", "config"):
            refused = http.get(f"/v1/admin/{route}")
            assert refused.status_code == 403, route
            assert refused.json()["detail"] == "administrators only: ask an admin to do this"


def test_the_console_for_an_admin(chat: Chat) -> None:
    # Something for the rejected-messages table: a receipt whose JSON does not parse (a chat message like it is
    # refused by the broker before the bridge sees it).
    mosquitto_pub(chat.stack.mqtt_port, chat.alice, chat.alice_pw, f"receipt/{chat.bob}/{chat.alice}", '{"id": oops')
    # ... and one the bridge stores, whatever ran before.
    mosquitto_pub(chat.stack.mqtt_port, chat.alice, chat.alice_pw, f"dm/{chat.bob}/{chat.alice}", "from the shell")
    browser = chromium()
    try:
        login(browser, chat.stack.api, "console", chat.admin, chat.admin_pw)
        type_into(browser, "#new-user-name", f"carol-{chat.group}")
        type_into(browser, "#new-user-password", "carol-password-1")
        click(browser, "#new-user button[type=submit]")
        carol = f'#users tr[data-user="carol-{chat.group}"]'
        wait_text(browser, carol, "active")
        click(browser, f'{carol} button[aria-label^="disable"]')
        wait_text(browser, f"{carol} .state", "disabled")
        type_into(browser, "#new-group-name", f"ops-{chat.group}")
        type_into(browser, "#new-group-members", f"{chat.alice}, {chat.bob}" + Keys.ENTER)
        ops = f'#groups li[data-group="ops-{chat.group}"]'
        wait_text(browser, ops, chat.bob)
        click(browser, f'{ops} button[aria-label="remove {chat.bob} from ops-{chat.group}"]')
        wait(browser, lambda b: chat.bob not in b.find_element(By.CSS_SELECTOR, ops).text, "bob removed from ops")
        type_into(browser, f'{ops} input[aria-label="user to add to ops-{chat.group}"]', chat.bob + Keys.ENTER)
        wait_text(browser, ops, chat.bob)
        click(browser, f'{ops} button[aria-label="remove {chat.bob} from ops-{chat.group}"]')
        wait(browser, lambda b: chat.bob not in b.find_element(By.CSS_SELECTOR, ops).text, "bob removed again")
        with chat.stack.http(chat.admin, chat.admin_pw) as http:
            users = {u["name"]: u for u in http.get("/v1/admin/users").json()["users"]}
            assert users[f"carol-{chat.group}"]["disabled"] is True
            groups = {g["name"]: g for g in http.get("/v1/admin/groups").json()["groups"]}
            assert groups[f"ops-{chat.group}"]["members"] == [chat.alice]
        # Enabled again, a new password, then deleted (the button asks twice).
        click(browser, f'{carol} button[aria-label^="enable"]')
        wait_text(browser, f"{carol} .state", "active")
        type_into(browser, f'{carol} input[type="password"]', "carol-password-2")
        click(browser, f'{carol} button[aria-label^="reset the password"]')
        wait_text(browser, "#users-error", "reset")
        with chat.stack.http(f"carol-{chat.group}", "carol-password-2") as http:
            assert http.get("/v1/me").status_code == 200
        click(browser, f'{carol} button[aria-label^="delete"]')
        click(browser, f'{carol} button[aria-label^="delete"]')
        wait(browser, lambda b: not b.find_elements(By.CSS_SELECTOR, carol), "carol deleted")
        # Who is online: alice and bob, whose browsers are connected.
        wait_text(browser, "#online", chat.alice)
        wait_text(browser, "#online", chat.bob)
        # Charts with readings: two browsers connected, messages in and out, stored by the bridge.
        for name in ("connections", "messages_in", "messages_out", "bridge_stored", "api_latency"):
            wait(
                browser,
                lambda b, n=name: (
                    int(
                        b.find_element(By.CSS_SELECTOR, f'figure[data-chart="{n}"] polyline').get_attribute(
                            "data-count"
                        )
                        or 0
                    )
                    >= 3
                ),
                f"three readings in the {name} chart",
            )
        connections = text(browser, 'figure[data-chart="connections"] .value')
        assert int(connections) >= 2, connections
        stored = text(browser, 'figure[data-chart="bridge_stored"] .value')
        assert int(stored.split()[0]) >= 1, stored
        wait_text(browser, "#rejected", "invalid JSON at line 1")
        config = text(browser, "#config")
        assert '"database_url"' in config and '"cors_origins"' in config
        assert HOOK_SECRET not in config and BRIDGE_PASSWORD not in config
        browser.set_window_size(1200, 1500)
        browser.execute_script("window.scrollTo(0, 0)")
        screenshot(browser, "web-console")
    finally:
        browser.quit()


def test_a_non_admin_gets_no_console(chat: Chat) -> None:
    chat.b.get(f"{chat.stack.api}/console/")  # bob's token is in this tab's storage for the site
    wait(chat.b, lambda b: b.find_element(By.ID, "denied").is_displayed(), "the refusal")
    assert not chat.b.find_element(By.ID, "console").is_displayed()
    assert "administrators only" in chat.b.find_element(By.ID, "denied").text
