"""Bad datasets as users meet them (hand-edited manifests, a file given for a folder, a damaged or unwritable cache,
a re-run after an interrupted prepare): one line that names the problem and the fix, and nothing written is lost."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from gan_dist.data import embedded as embedded_module
from gan_dist.data.images import ImageSpec
from gan_dist.data.embedded import embedded_digits
from gan_dist.data.prepare import PrepareOptions, write_dataset, write_shards
from gan_dist.data.reader import DataPosition, load_columns, read_manifest
from gan_dist.data.sources import ArraySource
from gan_dist.data.stream import StreamReader
from gan_dist.errors import UserError
from helpers import interrupted_prepare, numbered_images, run

FIX = "re-run `gan-dist prepare`"


def one_line_refusal(done, *expected: str) -> str:
    """The console script refused with exit 2 and one stderr line holding every `expected` text."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def refusal(call, *expected: str) -> str:
    with pytest.raises(UserError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message, message
    for text in expected:
        assert text in message, message
    return message


def dataset(tmp_path: Path, **edits) -> str:
    """16×16 numbered images in 2 shards, the manifest then edited by hand as `edits` say."""
    out = tmp_path / "d"
    write_shards(numbered_images(20), None, str(out), shard_size=10)
    path = out / "_manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **edits}, indent=2))
    return str(out)


def train(data: str, tmp_path: Path):
    return run("train", "--backend", "local", "--steps", "1", "--storage", str(tmp_path / "runs"), "--data", data,
               "--set", "train.batch_size=4")


# --- 1. hand-edited manifests ---

@pytest.mark.parametrize("edits, expected", [
    ({"resolution": "16"}, 'resolution must be a whole number ≥ 1, got "16"'),
    ({"resolution": None}, "resolution must be a whole number ≥ 1, got null"),
    ({"resolution": 0}, "resolution must be a whole number ≥ 1, got 0"),
    ({"count": "20"}, 'count must be a whole number ≥ 1, got "20"'),
    ({"count": True}, "count must be a whole number ≥ 1, got true"),
    ({"channels": 2}, "channels must be 1 or 3, got 2"),
    ({"shards": "shard-00000.parquet"}, "shards must be a non-empty list of shard file names"),
    ({"shards": []}, "shards must be a non-empty list"),
    ({"shards": ["../other/shard-00000.parquet"]}, "shards must be a non-empty list of shard file names (no '/')"),
    ({"format": "webp"}, 'format must be one of raw, png, jpeg, got "webp"'),
    ({"class_names": [1, 2]}, "class_names must be a list of strings"),
    ({"version": "1"}, "version must be a whole number ≥ 1"),
    ({"colour": "blue"}, "unknown field 'colour'"),
])
def test_a_hand_edited_manifest_names_the_field_and_says_to_prepare_again(tmp_path, edits, expected):
    data = dataset(tmp_path, **edits)
    message = refusal(lambda: read_manifest(data), f"{data}/_manifest.json is not a valid gan-dist manifest", expected)
    assert message.endswith(FIX)


def test_a_manifest_that_is_not_a_json_object_or_lacks_a_field(tmp_path):
    data = dataset(tmp_path)
    path = Path(data, "_manifest.json")
    path.write_text("[1, 2]")
    refusal(lambda: read_manifest(data), "expected a JSON object, got list", FIX)
    path.write_text(json.dumps({"resolution": 16, "channels": 1, "shards": ["shard-00000.parquet"]}))
    refusal(lambda: read_manifest(data), "missing field 'count'", FIX)
    path.write_bytes(b"\xff\xfe\x00garbage")
    refusal(lambda: read_manifest(data), "is not a valid gan-dist manifest", FIX)


def test_a_manifest_from_a_newer_gan_dist_is_refused_by_version(tmp_path):
    data = dataset(tmp_path, version=99)
    refusal(lambda: read_manifest(data), "written by a newer gan-dist (manifest version 99", "upgrade gan-dist")


@pytest.mark.parametrize("edits, expected", [
    ({"resolution": "16"}, 'resolution must be a whole number ≥ 1, got "16"'),
    ({"version": 99}, "written by a newer gan-dist"),
])
@pytest.mark.slow
def test_a_bad_manifest_through_train_is_one_line(tmp_path, edits, expected):
    one_line_refusal(train(dataset(tmp_path, **edits), tmp_path), expected)


# --- 2. a manifest that does not match its shards: named shard, the fix last ---

def test_the_stream_reader_names_the_shard_that_does_not_match(tmp_path):
    data = dataset(tmp_path, resolution=8)  # the shards hold 16×16 images
    stream = StreamReader(data, read_manifest(data), batch_size=4, rank=0, world_size=1, seed=0, shuffle=False,
                          workers=0)
    message = refusal(lambda: next(stream.batches(DataPosition())),
                      f"shard {data}/shard-0000", "not 64-byte raw images", "manifest does not match its shards")
    assert message.endswith(FIX)


@pytest.mark.slow
def test_train_on_shards_that_do_not_match_their_manifest_names_the_shard(tmp_path):
    data = dataset(tmp_path, resolution=32)  # a size the model accepts; the shards hold 16×16 images
    line = one_line_refusal(train(data, tmp_path), f"shard {data}/shard-0000", "does not match its shards")
    assert line.endswith(FIX)


# --- 3. --data that is not a dataset folder ---

@pytest.mark.slow
def test_data_given_as_the_manifest_file_or_another_file(tmp_path):
    data = dataset(tmp_path)
    manifest = f"{data}/_manifest.json"
    one_line_refusal(train(manifest, tmp_path), f"{manifest} is the manifest file",
                     "pass the dataset folder that holds _manifest.json, not the file")
    (tmp_path / "photo.png").write_bytes(b"not a dataset")
    refusal(lambda: read_manifest(str(tmp_path / "photo.png")), "photo.png is a file; pass a prepared dataset folder")
    refusal(lambda: read_manifest(str(tmp_path / "none")), "no prepared dataset at", "run `gan-dist prepare` first")


def test_s3_data_with_wrong_credentials_gets_the_storage_hint(s3_server, bucket, tmp_path, monkeypatch):
    write_shards(numbered_images(10), None, f"s3://{bucket}/d")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    message = refusal(lambda: read_manifest(f"s3://{bucket}/d"), f"cannot read the dataset at s3://{bucket}/d",
                      "check the bucket, AWS_* credentials and AWS_ENDPOINT_URL")
    assert "wrong-secret" not in message


# --- 4. the embedded-digits cache ---

@pytest.fixture(scope="module")
def sound_cache(tmp_path_factory) -> Path:
    """A sound cache, built once; each test copies it (building takes about a second)."""
    cache = tmp_path_factory.mktemp("sound-cache")
    saved = os.environ["GAN_DIST_CACHE"]
    os.environ["GAN_DIST_CACHE"] = str(cache)
    try:
        embedded_digits()
    finally:
        os.environ["GAN_DIST_CACHE"] = saved
    return cache


@pytest.fixture
def cache(sound_cache, tmp_path, monkeypatch) -> Path:
    copy = tmp_path / "cache"
    shutil.copytree(sound_cache, copy)
    monkeypatch.setenv("GAN_DIST_CACHE", str(copy))
    return copy


def _garbage_shard(d: Path) -> None:
    (d / "shard-00001.parquet").write_bytes(b"garbage")


def _truncated_shard(d: Path) -> None:
    shard = d / "shard-00002.parquet"
    shard.write_bytes(shard.read_bytes()[:-1000])


def _flipped_byte(d: Path) -> None:  # still a readable Parquet file: only the hash tells
    shard = d / "shard-00000.parquet"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))


def _bad_manifest(d: Path) -> None:
    (d / "_manifest.json").write_text("{not json")


def _edited_count(d: Path) -> None:
    manifest = json.loads((d / "_manifest.json").read_text())
    (d / "_manifest.json").write_text(json.dumps({**manifest, "count": 1000}))


def _missing_shard(d: Path) -> None:
    (d / "shard-00003.parquet").unlink()


@pytest.mark.parametrize("damage", [_garbage_shard, _truncated_shard, _flipped_byte, _bad_manifest, _edited_count,
                                    _missing_shard])
def test_a_damaged_digits_cache_is_prepared_again_with_a_warning(cache, damage, capsys):
    digits = cache / "digits-32"
    sound = {p.name: p.read_bytes() for p in digits.iterdir()}
    damage(digits)
    assert embedded_digits() == str(digits)
    assert capsys.readouterr().err == f"warning: the embedded digits cache at {digits} was damaged; prepared it again\n"
    assert {p.name: p.read_bytes() for p in digits.iterdir()} == sound
    assert [p.name for p in cache.iterdir()] == ["digits-32"]  # no staging or damaged copy left behind
    assert load_columns(str(digits), read_manifest(str(digits)))["image"].shape == (1797, 32, 32, 1)


def test_a_sound_cache_is_used_as_it_is(cache, capsys):
    manifest = cache / "digits-32" / "_manifest.json"
    inode = manifest.stat().st_ino
    assert embedded_digits() == str(cache / "digits-32")
    assert manifest.stat().st_ino == inode and capsys.readouterr().err == ""


def test_a_sound_copy_installed_by_another_process_meanwhile_is_kept(cache, sound_cache, monkeypatch, capsys):
    """Two processes find the cache damaged; the other one installs its copy while this one prepares. This one must
    re-check before replacing and keep that copy (a reader may already be using it)."""
    digits = cache / "digits-32"
    _garbage_shard(digits)
    real_write = embedded_module.write_dataset

    def write_then_rival_installs(*args, **kwargs):
        result = real_write(*args, **kwargs)
        shutil.rmtree(digits)  # the rival moved the damaged copy aside and renamed its own copy in
        shutil.copytree(sound_cache / "digits-32", digits)
        (digits / ".rival").write_text("theirs")
        return result

    monkeypatch.setattr(embedded_module, "write_dataset", write_then_rival_installs)
    assert embedded_digits() == str(digits)
    assert (digits / ".rival").read_text() == "theirs"
    assert [p.name for p in cache.iterdir()] == ["digits-32"]


@pytest.mark.slow
@pytest.mark.parametrize("where", ["file/sub", "/proc/gan-dist-cache"])
def test_an_unwritable_cache_names_gan_dist_cache(tmp_path, where):
    (tmp_path / "file").write_text("a file, not a folder")
    cache = str(tmp_path / where) if not where.startswith("/") else where
    line = one_line_refusal(run("train", "--backend", "local", "--steps", "1", "--storage", str(tmp_path / "runs"),
                                env={**os.environ, "GAN_DIST_CACHE": cache}),
                            f"cannot write the dataset cache {cache} (", "set GAN_DIST_CACHE to a writable folder")
    assert "[Errno" not in line


# --- 5. a re-run after an interrupted prepare ---

def test_a_rerun_after_an_interrupted_prepare_leaves_only_its_own_shards(tmp_path):
    out = tmp_path / "out"
    interrupted_prepare(str(out), shard_size=2)
    assert len(list(out.glob("shard-*.parquet"))) == 12
    (out / "shard-00020.parquet.tmp").write_bytes(b"half a shard")  # a write cut short
    (out / ".gan-dist-probe-x").write_bytes(b"")  # not a shard: never deleted

    images = numbered_images(6, resolution=8)
    options = PrepareOptions(ImageSpec(8, 1), shard_size=2, shuffle_seed=None)
    manifest = write_dataset(ArraySource(images, None, [], "arrays"), str(out), options, progress=False)[0]
    assert sorted(p.name for p in out.iterdir()) == [".gan-dist-probe-x", "_manifest.json", "shard-00000.parquet",
                                                     "shard-00001.parquet", "shard-00002.parquet"]
    np.testing.assert_array_equal(load_columns(str(out), manifest)["image"], images)


# --- 6. the progress line of a prepare stopped by --limit ---

@pytest.mark.slow
def test_the_final_progress_line_of_a_limited_prepare_shows_the_limit_reached(tmp_path):
    done = run("prepare", "digits", str(tmp_path / "out"), "--limit", "100")
    assert done.returncode == 0, done.stderr
    progress = [line for line in done.stderr.splitlines() if line.startswith("prepare: ")]
    assert progress[-1].startswith("prepare: 100/100 (100%) ") and progress[-1].endswith(", --limit 100 reached")
    assert "ETA" not in progress[-1]
