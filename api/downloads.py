"""Headers for serving a user's file, so a browser never runs it as part of Switchboard's site.

- ``X-Content-Type-Options: nosniff``: the browser takes the sniffed-at-upload ``Content-Type`` as it is
  and never guesses HTML or script from the bytes.
- ``Content-Disposition``: ``inline`` for images, audio and video (a browser only displays those), and
  ``attachment`` (a download, never opened in the site's origin) for everything else, PDF included (a PDF
  viewer runs scripts and forms). The file name is made here, from the media id and the type, never
  from anything a client sent: ``{media_id}.{ext}`` (``{media_id}-thumbnail.{ext}`` for a thumbnail).
"""

from __future__ import annotations

#: The file name extension served for each accepted type (switchboard.settings.MEDIA_TYPES).
EXTENSIONS = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/gif": "gif",
    "image/webp": "webp",
    "audio/mpeg": "mp3",
    "audio/ogg": "ogg",
    "audio/mp4": "m4a",
    "audio/wav": "wav",
    "video/mp4": "mp4",
    "application/pdf": "pdf",
}
_INLINE = ("image/", "audio/", "video/")


def file_headers(media_id: str, content_type: str, *, thumbnail: bool = False) -> dict[str, str]:
    """``X-Content-Type-Options`` and ``Content-Disposition`` for serving ``media_id`` as ``content_type``.
    ``media_id`` is ``[A-Za-z0-9_-]`` (made by the server), so the file name needs no quoting rules."""
    disposition = "inline" if content_type.startswith(_INLINE) else "attachment"
    name = f"{media_id}-thumbnail" if thumbnail else media_id
    extension = EXTENSIONS.get(content_type, "bin")
    return {
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f'{disposition}; filename="{name}.{extension}"',
    }
