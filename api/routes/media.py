"""Shared files: ``POST /v1/media`` uploads one, ``GET /v1/media/{media_id}`` serves it (with ``Range``, and
``?thumbnail=1`` for images) to its uploader and to members of a conversation it was sent in."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi import Path as FastApiPath
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlmodel import Session
from starlette.datastructures import UploadFile

from api.deps import CurrentUser, SessionDep
from api.downloads import file_headers
from api.schemas import MediaPublic
from switchboard import media
from switchboard.blobs import BlobStore
from switchboard.db import transact_once_more_on_conflict
from switchboard.errors import MediaRefused, MediaTooLarge
from switchboard.settings import MEDIA_TYPES, MediaSettings
from switchboard.tables import Media

router = APIRouter(prefix="/v1/media", tags=["media"])

#: Room for the multipart framing around the file itself.
MULTIPART_OVERHEAD = 64 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary", "description": "The file."}},
                    "additionalProperties": False,
                }
            }
        },
    }
}
_UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Not a multipart upload with one field named file."},
    411: {"description": "No Content-Length: send the length of the body."},
    413: {"description": "Larger than media.max_bytes."},
    415: {
        "description": "The file is empty, its bytes are not of an accepted type (media.allowed_types, sniffed from "
        "the bytes: the declared type is not trusted), or an image does not decode."
    },
}
_FILE_TYPES: dict[str, Any] = {content_type: {} for content_type in MEDIA_TYPES}
_READ_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such file, or the caller may not read it (not said apart, on purpose)."},
    416: {"description": "The Range asks for bytes the file does not have."},
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=MediaPublic,
    responses={
        **_UPLOAD_ERRORS,
        200: {"model": MediaPublic, "description": "The caller had uploaded these bytes before."},
    },
    openapi_extra=_UPLOAD_BODY,
)
async def upload(request: Request, user: CurrentUser) -> Any:
    """Upload one file (multipart field ``file``). The same bytes are stored once; uploading them again
    gives back the same ``media_id`` (status 200)."""
    settings: MediaSettings = request.app.state.media_settings
    length = request.headers.get("content-length")
    if length is None or not length.isascii() or not length.isdigit():
        raise HTTPException(status.HTTP_411_LENGTH_REQUIRED, detail="send the upload with a Content-Length header")
    # A Content-Length over media.max_bytes never gets here: api.body_limit answers 413 before authentication.
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail='send multipart/form-data with the file in "file"')
    try:
        form = await request.form(max_files=1, max_fields=0)  # the file alone, as the schema says
    except Exception as exc:  # python-multipart's and starlette's parse errors have no common base
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=f"malformed multipart body: {exc}") from None
    try:
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise HTTPException(status.HTTP_400_BAD_REQUEST, detail='put the file in a multipart field named "file"')
        engine: Engine = request.app.state.engine
        store: BlobStore = request.app.state.blobs
        try:
            row, new = await asyncio.to_thread(_store_upload, engine, store, settings, user.name, file)
        except MediaTooLarge as exc:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail=str(exc)) from None
        except MediaRefused as exc:
            raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, detail=str(exc)) from None
    finally:
        await form.close()
    body = _public(row).model_dump()
    return JSONResponse(body, status_code=status.HTTP_201_CREATED if new else status.HTTP_200_OK)


def _store_upload(
    engine: Engine, store: BlobStore, settings: MediaSettings, uploader: str, file: UploadFile
) -> tuple[Media, bool]:
    received = media.receive(file.file, settings, declared=file.content_type)
    try:
        # A conflict: the same bytes from the same user at the same moment; the second try finds that row.
        return transact_once_more_on_conflict(engine, lambda session: media.record(session, store, uploader, received))
    finally:
        received.path.unlink(missing_ok=True)


def _public(row: Media) -> MediaPublic:
    return MediaPublic(media_id=row.id, content_type=row.content_type, size=row.size, sha256=row.sha256)


MediaId = Annotated[
    str, FastApiPath(max_length=64, description="From the upload.", examples=["q2vKJ7x0R3S1bq0xZr9f2A"])
]


def _readable(session: Session, media_id: str, user: str) -> Media:
    row = session.get(Media, media_id)
    if row is None or not media.may_read(session, row, user):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no file {media_id!r} that you may read")
    return row


@router.get("/{media_id}/info", response_model=MediaPublic, responses=_READ_ERRORS)
def info(session: SessionDep, user: CurrentUser, media_id: MediaId) -> MediaPublic:
    """What a file is, without its bytes."""
    return _public(_readable(session, media_id, user.name))


@router.get(
    "/{media_id}",
    response_class=Response,
    responses={
        **_READ_ERRORS,
        200: {"description": "The bytes, or an image's thumbnail.", "content": _FILE_TYPES},
        206: {"description": "The bytes the Range asked for.", "content": _FILE_TYPES},
    },
)
def download(
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    media_id: MediaId,
    thumbnail: Annotated[
        bool, Query(description="An image's thumbnail (longest side media.thumbnail_pixels).", examples=[False])
    ] = False,
) -> Response:
    """The file's bytes. ``Range: bytes=a-b`` (one range) answers 206 with those bytes. Served with
    ``X-Content-Type-Options: nosniff`` and a ``Content-Disposition``: inline for images, audio and video,
    attachment otherwise (PDF), named ``{media_id}.{ext}`` (see api/downloads.py)."""
    row = _readable(session, media_id, user.name)
    store: BlobStore = request.app.state.blobs
    headers = {"ETag": f'"{row.sha256}"', "Cache-Control": "private, max-age=31536000, immutable"}
    if thumbnail:
        if not row.content_type.startswith("image/"):
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"{row.content_type} files have no thumbnail")
        settings: MediaSettings = request.app.state.media_settings
        data, content_type = media.thumbnail(store, row, settings.thumbnail_pixels)
        return Response(
            data, media_type=content_type, headers=headers | file_headers(row.id, content_type, thumbnail=True)
        )
    headers |= file_headers(row.id, row.content_type)
    headers["Accept-Ranges"] = "bytes"
    wanted = _range(request.headers.get("range"), row.size)
    if wanted is None:
        return Response(store.read(row.sha256), media_type=row.content_type, headers=headers)
    start, end = wanted
    headers["Content-Range"] = f"bytes {start}-{end - 1}/{row.size}"
    return Response(
        store.read(row.sha256, start, end),
        status_code=status.HTTP_206_PARTIAL_CONTENT,
        media_type=row.content_type,
        headers=headers,
    )


def _range(header: str | None, size: int) -> tuple[int, int] | None:
    """``[start, end)`` of a single ``bytes=`` range (RFC 9110 14.1.2); None to send everything (no Range,
    several ranges, or another unit); 416 when it asks for nothing the file has."""
    if header is None:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":  # the last N bytes
        count = int(last)
        if count == 0:
            raise _unsatisfiable(size)
        return max(0, size - count), size
    start = int(first)
    end = size if last == "" else min(int(last) + 1, size)
    if start >= size or end <= start:
        raise _unsatisfiable(size)
    return start, end


def _unsatisfiable(size: int) -> HTTPException:
    return HTTPException(
        status.HTTP_416_RANGE_NOT_SATISFIABLE,
        detail=f"the file has {size} bytes",
        headers={"Content-Range": f"bytes */{size}"},
    )
