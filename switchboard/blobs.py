"""Where media bytes live, by key (a SHA-256 in hex, or a thumbnail's name): a local directory by default,
or an S3-compatible bucket (``media.backend: s3``).

The store is content-addressed: a key names its bytes, so writing a key that exists is a no-op and the
same file uploaded twice is kept once. Local writes go to a temporary file first and are renamed into
place, so a reader never sees half a file. The S3 backend needs ``boto3`` (``pip install
switchboard[s3]``); it is written against the S3 API and not tested here (no S3-compatible server
installs on these machines).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from switchboard.errors import ConfigError, StoreError
from switchboard.settings import MediaSettings


class BlobStore(Protocol):
    def has(self, key: str) -> bool: ...

    def put_file(self, key: str, path: Path) -> None:
        """Store the file at ``path`` under ``key`` (unless ``key`` exists); ``path`` is left in place."""

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes ``start`` to ``end`` (exclusive; None: to the end) of ``key``."""


class LocalBlobStore:
    """Files under ``root/ab/abcdef...``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def has(self, key: str) -> bool:
        return self._path(key).is_file()

    def put_file(self, key: str, path: Path) -> None:
        def copy(out: BinaryIO) -> None:
            with path.open("rb") as source:
                shutil.copyfileobj(source, out)

        self._write(key, copy)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write(key, lambda out: out.write(data))

    def _write(self, key: str, fill: Callable[[BinaryIO], object]) -> None:
        """Write ``key`` unless it exists: into a temporary file beside it, then renamed into place."""
        target = self._path(key)
        if target.is_file():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            with os.fdopen(handle, "wb") as out:
                fill(out)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        with self._path(key).open("rb") as source:
            source.seek(start)
            return source.read() if end is None else source.read(max(0, end - start))


class S3BlobStore:
    """Objects in one bucket, by key. Untested here: see the module docstring."""

    def __init__(self, settings: MediaSettings) -> None:
        try:
            import boto3  # an optional dependency: switchboard[s3]
        except ImportError:
            raise ConfigError("media.backend s3 needs boto3: pip install 'switchboard[s3]'") from None
        secret = settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None
        self._bucket = settings.s3_bucket
        self._client: Any = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key,
            aws_secret_access_key=secret,
        )

    def has(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self._bucket, Key=key)
        except self._client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise StoreError(f"S3 bucket {self._bucket!r}: {exc}") from exc
        return True

    def put_file(self, key: str, path: Path) -> None:
        if not self.has(key):
            self._client.upload_file(str(path), self._bucket, key)

    def put_bytes(self, key: str, data: bytes) -> None:
        if not self.has(key):
            self._client.put_object(Bucket=self._bucket, Key=key, Body=data)

    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        wanted = f"bytes={start}-" + ("" if end is None else str(end - 1))
        answer = self._client.get_object(Bucket=self._bucket, Key=key, Range=wanted)
        return bytes(answer["Body"].read())


def make_blob_store(settings: MediaSettings) -> BlobStore:
    """The store ``media.backend`` names."""
    if settings.backend == "s3":
        return S3BlobStore(settings)
    return LocalBlobStore(Path(settings.directory))
