"""Storage URIs (local paths, s3://, gs://) -> a pyarrow filesystem and a path inside it."""

from __future__ import annotations

import os
import posixpath

import pyarrow as pa
import pyarrow.fs as pafs

from gan_dist.errors import UserError


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """Filesystem + path for a URI. S3 endpoint and credentials come from the usual AWS variables."""
    if not is_remote(uri):
        return pafs.LocalFileSystem(), os.path.abspath(uri.removeprefix("file://"))
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise UserError(f"cannot open storage '{uri}': {exc}") from None


def absolute_uri(uri: str) -> str:
    """What Ray's storage_path needs: an absolute local path or the URI unchanged."""
    return uri if is_remote(uri) else os.path.abspath(uri.removeprefix("file://"))


def join(uri: str, *parts: str) -> str:
    return posixpath.join(uri, *parts) if is_remote(uri) else os.path.join(uri, *parts)


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole file; local writes go through a temporary name so readers never see a partial file."""
    fs, path = resolve(uri)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    tmp = path if is_remote(uri) else path + ".tmp"
    with fs.open_output_stream(tmp) as out:
        out.write(data)
    if tmp != path:
        fs.move(tmp, path)


def read_bytes(uri: str) -> bytes:
    fs, path = resolve(uri)
    with fs.open_input_stream(path) as src:
        return src.read()


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def list_dir(uri: str) -> list[str]:
    """Base names directly under a directory; empty when it does not exist."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    return sorted(posixpath.basename(info.path) for info in fs.get_file_info(pafs.FileSelector(path)))
