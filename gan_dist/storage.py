"""Storage URIs (local paths, s3://, gs://) -> a pyarrow filesystem and a path inside it."""

from __future__ import annotations

import contextlib
import os
import posixpath
import tempfile
from collections.abc import Iterator

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
        detail = " ".join(str(exc).split())[:300]
        hint = "; check AWS_ENDPOINT_URL (or AWS_DEFAULT_REGION) and the AWS_* credentials" if uri.startswith("s3://") else ""
        raise UserError(f"cannot open storage '{uri}': {detail}{hint}") from None


def absolute_uri(uri: str) -> str:
    """What Ray's storage_path needs: an absolute local path or the URI unchanged."""
    return uri if is_remote(uri) else os.path.abspath(uri.removeprefix("file://"))


def join(uri: str, *parts: str) -> str:
    return posixpath.join(uri, *parts) if is_remote(uri) else os.path.join(uri, *parts)


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole file; local writes go through a hidden temporary name so readers never see a partial file."""
    fs, path = resolve(uri)
    if is_remote(uri):  # an object store has no directories to make, and a PUT is all-or-nothing
        with fs.open_output_stream(path) as out:
            out.write(data)
        return
    fs.create_dir(posixpath.dirname(path), recursive=True)
    partial = posixpath.join(posixpath.dirname(path), f".{posixpath.basename(path)}.tmp")  # hidden: not an output
    try:
        with fs.open_output_stream(partial) as out:
            out.write(data)
        fs.move(partial, path)
    except BaseException:  # an interrupt (Ctrl-C) or a full disk leaves no torn file behind
        with contextlib.suppress(OSError):
            fs.delete_file(partial)
        raise


def upload(local_path: str, uri: str) -> None:
    """Copy a local file to a URI, streamed rather than read into memory (a checkpoint's state can be large)."""
    fs, path = resolve(uri)
    pafs.copy_files(local_path, path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


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


def list_files(uri: str) -> list[str]:
    """Paths of every file under a folder (local or a bucket prefix), relative to it, sorted; hidden files and
    folders (.git, .DS_Store) left out."""
    fs, path = resolve(uri)
    if is_remote(uri):
        with user_errors(uri, "list"):
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
        relative = [posixpath.relpath(info.path, path) for info in infos if info.type == pafs.FileType.File]
    else:  # not pyarrow's recursion, which follows a link back up the tree until the path is too long
        relative = [os.path.relpath(file, path) for file in local_files(path)]
    return sorted(p for p in relative if not any(part.startswith(".") for part in p.replace(os.sep, "/").split("/")))


def local_files(root: str) -> Iterator[str]:
    """Every file under a local folder, folder by folder, names sorted (the order `prepare` reads them in); hidden
    folders (.git, .ipynb_checkpoints) left out. Linked folders are followed, each real folder once, so a link back
    up the tree is no endless loop; a link to the root or above it is not followed (it would read outside it)."""
    top = os.path.realpath(root)
    seen = {top}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        kept = []
        for name in sorted(dirnames):
            real = os.path.realpath(os.path.join(dirpath, name))
            if name.startswith(".") or real in seen or top.startswith(real.rstrip(os.sep) + os.sep):
                continue
            seen.add(real)
            kept.append(name)
        dirnames[:] = kept
        yield from (os.path.join(dirpath, name) for name in sorted(filenames))


@contextlib.contextmanager
def user_errors(uri: str, action: str) -> Iterator[None]:
    """Storage failures (no such bucket, bad credentials, endpoint down) as one-line UserErrors."""
    try:
        yield
    except UserError:
        raise
    except OSError as exc:
        detail = " ".join(str(exc).split())[:300]
        hint = "; check the bucket, AWS_* credentials and AWS_ENDPOINT_URL" if is_remote(uri) else ""
        raise UserError(f"cannot {action} {uri}: {detail}{hint}") from None


def check_bucket(uri: str) -> None:
    """Fail before any work when an object-store URI names a bucket that is not there (or not ours to see)."""
    if not is_remote(uri):
        return
    fs, path = resolve(uri)
    bucket = path.split("/", 1)[0]
    if not bucket:
        scheme = uri.split("://", 1)[0]
        raise UserError(f"{uri} names no bucket; pass {scheme}://BUCKET/PATH")
    with user_errors(uri, "reach"):
        found = fs.get_file_info(bucket).type != pafs.FileType.NotFound
    if not found:
        raise UserError(f"bucket '{bucket}' of {uri} does not exist; create it or fix the URI")


def check_output_dir(uri: str, flag: str) -> None:
    """Fail in one line, before any work, when `uri` cannot hold outputs: an unreachable endpoint, a missing
    bucket, a path that is a file (or lies under one), or a folder that cannot be written."""
    if not uri.strip():  # '' would quietly mean the current folder
        raise UserError(f"{flag} is empty; pass a folder path")
    if is_remote(uri):
        check_bucket(uri)
        fs, path = resolve(uri)
        with user_errors(uri, "reach"):
            is_file = fs.get_file_info(path).type == pafs.FileType.File
        if is_file:
            raise UserError(f"{flag} {uri} is an object, not a folder; pass a prefix that holds no object")
        return
    path = os.path.abspath(uri.removeprefix("file://"))
    existing = path
    while not os.path.exists(existing):  # the folder is made later; what must be writable is its nearest ancestor
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        where = "" if existing == path else f" ({existing} is a file)"
        raise UserError(f"{flag} {uri} is not a folder{where}; pass a folder path")
    try:  # a real write: permission bits say nothing for root, and nothing about read-only mounts
        handle, probe = tempfile.mkstemp(prefix=".gan-dist-probe-", dir=existing)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{flag} {uri} cannot be written ({exc.strerror or exc}); pass a writable folder") from None


def is_folder(uri: str) -> bool:
    """A local directory, or an object-store prefix that holds objects."""
    fs, path = resolve(uri)
    with user_errors(uri, "reach"):
        return fs.get_file_info(path).type == pafs.FileType.Directory


def check_output_file(uri: str, flag: str) -> bool:
    """check_output_dir for one output file: its folder must take it, and it must not be a folder itself. Returns
    whether a file is there already; whether that file may be replaced is the caller's rule (it knows what it
    writes)."""
    folder = posixpath.dirname(uri) if is_remote(uri) else os.path.dirname(uri) or "."
    check_output_dir(folder, f"{flag} {uri}: its folder")
    fs, path = resolve(uri)
    with user_errors(uri, "reach"):
        kind = fs.get_file_info(path).type
    if kind == pafs.FileType.Directory:
        raise UserError(f"{flag} {uri} is a folder; pass a file path")
    return kind == pafs.FileType.File
