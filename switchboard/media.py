"""Shared files: what an upload is (sniffed from its bytes), who may read it, and image thumbnails.

An upload is copied to a temporary file while it is hashed and counted, refused past
``media.max_bytes`` or when its first bytes are not of an allowed type, then stored once per content
in a :class:`~switchboard.blobs.BlobStore`. A :class:`~switchboard.tables.Media` row per (uploader,
content) gives it an id. Its uploader may always read it; anyone else only when it was sent in a
conversation they take part in (a :class:`~switchboard.tables.MediaGrant` the bridge records).
"""

from __future__ import annotations

import hashlib
import io
import secrets
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError
from sqlalchemy import func
from sqlmodel import Session, col, select

from switchboard.accounts import readable_conversation_ids
from switchboard.blobs import BlobStore
from switchboard.errors import MediaRefused, MediaTooLarge, MediaTypeRefused
from switchboard.settings import MediaSettings
from switchboard.tables import Media, MediaGrant

CHUNK = 1024 * 1024
SNIFF_BYTES = 64
#: The largest image, in pixels, that is decoded (for its thumbnail); beyond it the upload is refused.
MAX_IMAGE_PIXELS = 64_000_000


def sniff(head: bytes) -> str | None:
    """The content type the first bytes of a file show, among those Switchboard knows; None otherwise."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "audio/mpeg"
    if head[4:8] == b"ftyp":
        return "audio/mp4" if head[8:12] in (b"M4A ", b"M4B ") else "video/mp4"
    return None


@dataclass(frozen=True, slots=True)
class Received:
    """An upload copied to ``path`` (a temporary file the caller removes), with what it is."""

    path: Path
    sha256: str
    size: int
    content_type: str


def receive(source: BinaryIO, settings: MediaSettings, declared: str | None = None) -> Received:
    """Copy ``source`` to a temporary file, hashing and counting; MediaRefused (with the reason) when it is
    too large, empty, not of an allowed type, or an image that does not decode."""
    digest, size = hashlib.sha256(), 0
    handle = tempfile.NamedTemporaryFile(prefix="switchboard-upload-", delete=False)
    path = Path(handle.name)
    try:
        with handle:
            head = b""
            while chunk := source.read(CHUNK):
                if not head:
                    head = chunk[:SNIFF_BYTES]
                size += len(chunk)
                if size > settings.max_bytes:
                    raise MediaTooLarge(
                        f"the file is larger than {settings.max_bytes} bytes (media.max_bytes): send a smaller one"
                    )
                digest.update(chunk)
                handle.write(chunk)
        if size == 0:
            raise MediaRefused("the file is empty")
        content_type = sniff(head)
        if content_type is None or content_type not in settings.allowed_types:
            shown = f"looks like {content_type}" if content_type else "is of a type Switchboard does not recognise"
            claimed = f" (sent as {declared})" if declared else ""
            raise MediaTypeRefused(f"the file {shown}{claimed}; accepted: {', '.join(settings.allowed_types)}")
        if content_type.startswith("image/"):
            _check_image(path, content_type)
        return Received(path, digest.hexdigest(), size, content_type)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _check_image(path: Path, content_type: str) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise MediaTypeRefused(
                        f"the image is {image.width}x{image.height} pixels; the limit is {MAX_IMAGE_PIXELS} pixels"
                    )
                image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        raise MediaTypeRefused(f"the file starts like {content_type} but is not a readable image ({exc})") from None


def record(session: Session, store: BlobStore, uploader: str, received: Received) -> tuple[Media, bool]:
    """Keep the bytes (once per content) and the uploader's row (once per content and uploader); True when
    the row is new, False when the uploader had sent these bytes before."""
    store.put_file(received.sha256, received.path)
    existing = session.exec(select(Media).where(Media.uploader == uploader, Media.sha256 == received.sha256)).first()
    if existing is not None:
        return existing, False
    media = Media(
        id=secrets.token_urlsafe(16),
        uploader=uploader,
        sha256=received.sha256,
        content_type=received.content_type,
        size=received.size,
    )
    session.add(media)
    return media, True


def may_read(session: Session, media: Media, user: str) -> bool:
    """The uploader, and members of a conversation the file was sent in."""
    if media.uploader == user:
        return True
    granted = select(MediaGrant.media_id).where(
        MediaGrant.media_id == media.id,
        col(MediaGrant.conversation_id).in_(readable_conversation_ids(user)),
    )
    return session.exec(granted).first() is not None


def thumbnail(store: BlobStore, media: Media, pixels: int) -> tuple[bytes, str]:
    """A small version of an image (longest side ``pixels``), made once and kept in the store."""
    png = media.content_type in ("image/png", "image/gif")  # may be transparent
    key = f"thumb-{pixels}-{media.sha256}"
    content_type = "image/png" if png else "image/jpeg"
    if store.has(key):
        return store.read(key), content_type
    with Image.open(io.BytesIO(store.read(media.sha256))) as original:
        image = ImageOps.exif_transpose(original)
        image.thumbnail((pixels, pixels))
        out = io.BytesIO()
        if png:
            image.save(out, "PNG", optimize=True)
        else:
            image.convert("RGB").save(out, "JPEG", quality=80)
    data = out.getvalue()
    store.put_bytes(key, data)
    return data, content_type


@dataclass(frozen=True, slots=True)
class Usage:
    user: str
    files: int
    bytes: int


def usage(session: Session) -> list[Usage]:
    """Files and bytes uploaded per user, largest first (shared bytes count for each uploader)."""
    rows = session.exec(
        select(Media.uploader, func.count(), func.coalesce(func.sum(Media.size), 0))
        .group_by(col(Media.uploader))
        .order_by(func.coalesce(func.sum(Media.size), 0).desc(), col(Media.uploader))
    ).all()
    return [Usage(user, int(files), int(total)) for user, files, total in rows]
