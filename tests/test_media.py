"""Media: upload over HTTP, send in a message over MQTT, read back by the conversation's members only,
with Range requests and thumbnails; refusals that say why."""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from sqlmodel import Session, select

from switchboard.db import make_engine
from switchboard.tables import RejectedMessage, Role
from tests.conftest import Users
from tests.helpers import Service, Stack, mosquitto_pub, start_service, switchboard_env, wait_for


def _png(width: int = 640, height: int = 480) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (width, height), (200, 30, 90, 255)).save(out, "PNG")
    return out.getvalue()


def _voice_note(size: int = 50_000) -> bytes:
    return b"ID3\x04\x00\x00\x00\x00\x00\x00" + os.urandom(size - 10)  # an MP3 as the sniffer sees it


def _upload(
    http: httpx.Client, data: bytes, name: str = "file.bin", declared: str = "application/octet-stream"
) -> httpx.Response:
    return http.post("/v1/media", files={"file": (name, data, declared)})


def _history(stack: Stack, user: tuple[str, str], conversation: str, count: int) -> list[dict[str, object]]:
    with stack.http(*user) as http:
        return wait_for(
            lambda: (
                (page := http.get(f"/v1/conversations/{conversation}/messages").json()["messages"])
                and len(page) >= count
                and page
            ),
            what=f"{count} message(s) in {conversation}",
        )


def test_a_photo_sent_in_a_dm_is_read_by_the_other_side_only(stack: Stack, users: Users) -> None:
    alice, bob, carol = users.user("alice"), users.user("bob"), users.user("carol")
    photo = _png()
    with stack.http(*alice) as http:
        uploaded = _upload(http, photo, "cat.png", "image/png")
        assert uploaded.status_code == 201, uploaded.text
        media = uploaded.json()
        assert media["content_type"] == "image/png" and media["size"] == len(photo)
        assert media["sha256"] == hashlib.sha256(photo).hexdigest()
        again = _upload(http, photo, "same-cat.png")
        assert (again.status_code, again.json()) == (200, media)  # the same bytes: the same media id
        assert http.get(f"/v1/media/{media['media_id']}").content == photo  # its uploader reads it at once
    with stack.http(*bob) as http:
        assert http.get(f"/v1/media/{media['media_id']}").status_code == 404  # not sent to bob yet

    message = {"id": "photo-1", "body": "look", "attachments": [{"media_id": media["media_id"]}]}
    mosquitto_pub(stack.mqtt_port, *alice, f"dm/{bob[0]}/{alice[0]}", json.dumps(message))
    conversation = "dm:" + ":".join(sorted((alice[0], bob[0])))
    (stored,) = _history(stack, bob, conversation, 1)
    assert stored["attachments"] == [media["media_id"]]

    with stack.http(*bob) as http:
        got = http.get(f"/v1/media/{media['media_id']}")
        assert (got.status_code, got.content, got.headers["content-type"]) == (200, photo, "image/png")
        assert got.headers["etag"] == f'"{media["sha256"]}"'
        assert http.get(f"/v1/media/{media['media_id']}/info").json() == media
        thumb = http.get(f"/v1/media/{media['media_id']}", params={"thumbnail": 1})
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
        with Image.open(io.BytesIO(thumb.content)) as image:
            assert image.size == (320, 240)
        assert http.get(f"/v1/media/{media['media_id']}", params={"thumbnail": 1}).content == thumb.content
    with stack.http(*carol) as http:
        assert http.get(f"/v1/media/{media['media_id']}").status_code == 404
        assert http.get(f"/v1/media/{media['media_id']}/info").status_code == 404
        copy = _upload(http, photo).json()  # carol's own upload of the same bytes
    assert copy["media_id"] != media["media_id"] and copy["sha256"] == media["sha256"]
    kept = [path for path in stack_files(stack) if path.name == media["sha256"]]
    assert len(kept) == 1  # stored once for everybody


def stack_files(stack: Stack) -> list[Path]:
    """Every file in the stack's media directory (var/media in the process's working directory)."""
    workdir = Path(f"/proc/{stack.process.pid}/cwd").resolve()
    return [path for path in (workdir / "var" / "media").rglob("*") if path.is_file()]


def test_a_voice_note_in_a_group_is_served_in_ranges(stack: Stack, users: Users) -> None:
    alice, bob = users.user("alice"), users.user("bob")
    group = users.group("band", [alice[0], bob[0]])
    note = _voice_note()
    with stack.http(*alice) as http:
        media = _upload(http, note, "note.mp3", "audio/mpeg").json()
    assert media["content_type"] == "audio/mpeg"
    message = {"id": "note-1", "body": "", "attachments": [{"media_id": media["media_id"]}]}
    mosquitto_pub(stack.mqtt_port, *alice, f"group/{group}/{alice[0]}", json.dumps(message))
    _history(stack, bob, f"group:{group}", 1)
    url = f"/v1/media/{media['media_id']}"
    with stack.http(*bob) as http:
        whole = http.get(url)
        assert whole.content == note and whole.headers["accept-ranges"] == "bytes"
        part = http.get(url, headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == note[100:200]
        assert part.headers["content-range"] == f"bytes 100-199/{len(note)}"
        tail = http.get(url, headers={"Range": "bytes=-10"})
        assert (tail.status_code, tail.content) == (206, note[-10:])
        rest = http.get(url, headers={"Range": f"bytes={len(note) - 5}-"})
        assert (rest.status_code, rest.content) == (206, note[-5:])
        beyond = http.get(url, headers={"Range": f"bytes={len(note)}-"})
        assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(note)}"
        several = http.get(url, headers={"Range": "bytes=0-1,5-6"})
        assert (several.status_code, several.content) == (200, note)  # one range or the whole file
        assert http.get(url, params={"thumbnail": 1}).status_code == 404  # no thumbnails of audio


def test_downloads_are_never_sniffed_and_say_how_to_open_them(stack: Stack, users: Users) -> None:
    """Every download (whole, range, thumbnail) says nosniff and a Content-Disposition with a file name
    the server made: inline for images and audio, attachment for a PDF (a viewer that runs scripts);
    the client's file name (here with quotes and a path) never reaches the header."""
    alice = users.user("alice")
    pdf = b"%PDF-1.4\n<script>alert(1)</script>\n%%EOF\n"
    with stack.http(*alice) as http:
        photo = _upload(http, _png(), 'x"; filename=../evil.html', "text/html").json()
        note = _upload(http, _voice_note(), "note.mp3", "audio/mpeg").json()
        document = _upload(http, pdf, "report.html", "text/html").json()
        answers = {
            "photo": (http.get(f"/v1/media/{photo['media_id']}"), f'inline; filename="{photo["media_id"]}.png"'),
            "thumbnail": (
                http.get(f"/v1/media/{photo['media_id']}", params={"thumbnail": 1}),
                f'inline; filename="{photo["media_id"]}-thumbnail.png"',
            ),
            "range": (
                http.get(f"/v1/media/{note['media_id']}", headers={"Range": "bytes=0-9"}),
                f'inline; filename="{note["media_id"]}.mp3"',
            ),
            "pdf": (
                http.get(f"/v1/media/{document['media_id']}"),
                f'attachment; filename="{document["media_id"]}.pdf"',
            ),
        }
    for what, (answer, disposition) in answers.items():
        assert answer.status_code in (200, 206), (what, answer.text)
        assert answer.headers["x-content-type-options"] == "nosniff", what
        assert answer.headers["content-disposition"] == disposition, what
    assert answers["pdf"][0].headers["content-type"] == "application/pdf"


def test_a_message_naming_missing_or_someone_elses_media_is_rejected_with_the_reason(
    stack: Stack, users: Users
) -> None:
    alice, bob = users.user("alice"), users.user("bob")
    with stack.http(*bob) as http:
        bobs = _upload(http, _png(20, 20)).json()["media_id"]
    topic = f"dm/{bob[0]}/{alice[0]}"
    for media_id in (bobs, "no-such-media-" + secrets.token_hex(4)):
        message = {"id": f"m-{media_id}", "body": "x", "attachments": [{"media_id": media_id}]}
        mosquitto_pub(stack.mqtt_port, *alice, topic, json.dumps(message))
    engine = make_engine(stack.database_url)

    def reasons() -> list[str]:
        with Session(engine) as session:
            return [r.reason for r in session.exec(select(RejectedMessage).where(RejectedMessage.topic == topic))]

    found = wait_for(lambda: len(reasons()) == 2 and reasons(), what="two rejections")
    engine.dispose()
    assert any("is not yours: send files you uploaded or received" in reason for reason in found)
    assert any("does not exist: upload it with POST /v1/media first" in reason for reason in found)
    with stack.http(*alice) as http:
        assert http.get(f"/v1/media/{bobs}").status_code == 404  # a refused message grants nothing


@pytest.fixture(scope="module")
def small_api(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Iterator[tuple[str, Service]]:
    """An API alone whose uploads may be at most 100,000 bytes."""
    workdir = tmp_path_factory.mktemp("small-api")
    env = switchboard_env(postgres_url, SWITCHBOARD_MEDIA__MAX_BYTES="100000")
    api = start_service("api", env=env, cwd=workdir)
    port = int(api.out.wait_for(r"api listening on http://[\d.]+:(\d+)", 60).group(1))
    yield f"http://127.0.0.1:{port}", api
    assert api.stop() == 0, api.output()


def test_uploads_are_refused_with_the_reason(small_api: tuple[str, Service], postgres_url: str) -> None:
    base, _ = small_api
    users = Users(make_engine(postgres_url))
    alice, admin = users.user("alice"), users.user("admin", role=Role.ADMIN)
    with httpx.Client(base_url=base, auth=alice, trust_env=False, timeout=30) as http:
        too_big = _upload(http, b"\x89PNG\r\n\x1a\n" + bytes(300_000))
        assert too_big.status_code == 413 and "at most 100000 bytes" in too_big.json()["detail"]  # by its length
        just_over = _upload(http, _voice_note(100_001))
        assert just_over.status_code == 413 and "media.max_bytes" in just_over.json()["detail"]  # while reading
        text = _upload(http, b"just some text pretending", "cat.png", "image/png")
        assert text.status_code == 415
        assert "recognise (sent as image/png)" in text.json()["detail"] and "image/jpeg" in text.json()["detail"]
        broken = _upload(http, b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "broken.png")
        assert broken.status_code == 415 and "not a readable image" in broken.json()["detail"]
        empty = _upload(http, b"")
        assert empty.status_code == 415 and "empty" in empty.json()["detail"]
        field = http.post("/v1/media", files={"photo": ("a.png", _png(8, 8), "image/png")})
        assert field.status_code == 400 and 'field named "file"' in field.json()["detail"]
        raw = http.post("/v1/media", content=_png(8, 8), headers={"content-type": "image/png"})
        assert raw.status_code == 400 and "multipart/form-data" in raw.json()["detail"]
        chunked = http.post("/v1/media", content=iter([b"--x\r\n"]), headers={"content-type": "multipart/form-data"})
        assert chunked.status_code == 411
        for n in range(3):
            assert _upload(http, _png(10 + n, 10)).status_code == 201
        assert http.get("/v1/admin/media").status_code == 403
    with httpx.Client(base_url=base, auth=admin, trust_env=False) as http:
        usage = {row["user"]: row for row in http.get("/v1/admin/media").json()["users"]}
    assert usage[alice[0]]["files"] == 3 and usage[alice[0]]["bytes"] > 0
    users.engine.dispose()
