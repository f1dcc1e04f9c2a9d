"""The web chat client at /app/ in a real browser (headless Chromium driven by Selenium) against a real
stack (``switchboard up``: broker with its WebSocket listener, bridge, API): alice and bob log in, talk in a
DM and a group both ways live, see each other online and typing, get "sent" on the bridge's ack and
"read" from the other's receipt, send an image whose thumbnail the other sees, and find their history
again after a reload. One stack and one browser per user for the whole module, to keep it quick."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.browser import chromium, css, login, screenshot, texts, wait, wait_text
from tests.conftest import stack_users
from tests.helpers import Stack, start_stack


class Chat:
    """The two users, their group, and a browser logged in as each."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        with stack_users(stack) as users:
            self.alice, self.alice_pw = users.user("alice")
            self.bob, self.bob_pw = users.user("bob")
            self.group = users.group("team", [self.alice, self.bob])
        self.a = chromium()
        self.b = chromium()

    def close(self) -> None:
        self.a.quit()
        self.b.quit()


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chat]:
    url = f"sqlite:///{tmp_path_factory.mktemp('webapp')}/app.db"
    stack = start_stack(url, tmp_path_factory.mktemp("webapp-stack"))
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
    css(browser, f'#conversations button[data-conversation="{conversation}"]').click()
    wait(browser, lambda b: b.find_element(By.ID, "composer").is_displayed(), "the composer")


def send(browser: webdriver.Chrome, text: str) -> None:
    box = css(browser, "#body")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)  # Enter sends: the app is usable from the keyboard


def test_a_bad_password_is_refused_with_the_reason(chat: Chat) -> None:
    browser = chromium()
    try:
        login(browser, chat.stack.api, "app", chat.alice, "wrong")
        wait_text(browser, "#login-error", "bad username or password")
    finally:
        browser.quit()


def test_presence_dots_show_who_is_online(chat: Chat) -> None:
    # alice starts a DM with bob from the keyboard: the form is labelled and submits on Enter.
    css(chat.a, "#new-peer").send_keys(chat.bob + Keys.ENTER)
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
    open_conversation(chat.b, dm(chat))
    wait_text(chat.b, "#messages li.theirs .body", "hello bob")
    # bob read it: alice's message says so (bob's receipt, live over MQTT).
    wait(chat.a, lambda b: texts(b, "#messages li.mine .state")[-1:] == ["read"], "alice's message marked read")
    # bob types; alice sees it; then bob answers and alice gets it live.
    css(chat.b, "#body").send_keys("hi al")
    wait_text(chat.a, "#typing", f"{chat.bob} is typing")
    css(chat.b, "#body").send_keys("ice" + Keys.ENTER)
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
    css(chat.a, "#attach").send_keys(str(picture))
    css(chat.a, "#body").send_keys("a picture" + Keys.ENTER)
    # bob sees the thumbnail (320 pixels wide: the server's, not the 800-pixel original) ...
    thumb = "li.theirs img.thumb"
    wait(
        chat.b,
        lambda b: b.execute_script(f"const i = document.querySelector('{thumb}'); return i && i.naturalWidth"),
        "bob's thumbnail",
    )
    assert chat.b.execute_script(f"return document.querySelector('{thumb}').naturalWidth") == 320
    # ... and the full image when he opens it.
    css(chat.b, "li.theirs button.image").click()
    wait(
        chat.b,
        lambda b: b.execute_script("const i = document.getElementById('full-image'); return i.naturalWidth"),
        "the full image",
    )
    assert chat.b.execute_script("return document.getElementById('full-image').naturalWidth") == 800
    screenshot(chat.b, "web-app")
    css(chat.b, "#viewer button").click()


def test_history_is_there_after_a_reload(chat: Chat) -> None:
    chat.b.refresh()
    wait_text(chat.b, "#status", "connected")
    open_conversation(chat.b, dm(chat))
    for text in ("hello bob", "hi alice", "a picture"):
        wait_text(chat.b, "#messages .body", text)
    # The conversation list is newest first: the DM (the picture) is above the group.
    order = [
        b.get_attribute("data-conversation") for b in chat.b.find_elements(By.CSS_SELECTOR, "#conversations button")
    ]
    assert order.index(dm(chat)) < order.index(f"group:{chat.group}")


def test_the_app_reads_on_a_phone_width_window(chat: Chat) -> None:
    chat.a.set_window_size(390, 844)
    try:
        width = chat.a.execute_script("return document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width} pixels wide on a 390-pixel screen"
        assert css(chat.a, "#body").is_displayed()
    finally:
        chat.a.set_window_size(1200, 850)
