"""`gan-dist sample --format parquet`: a synthetic dataset in the shard contract, with its provenance, the same
bytes from one local worker and from two Ray workers, readable by training, evaluation's reader and plain pyarrow,
on local and object storage; and the one-line refusals."""

import hashlib
import json

import pyarrow.parquet as pq
import pytest
import torch

from gan_dist import seeds
from gan_dist.cli import main
from gan_dist.data.reader import load_columns, read_manifest
from gan_dist.data.shards import MANIFEST_NAME, SHARD_SCHEMA, content_hash
from gan_dist.runtime.launch import train
from gan_dist.synthetic import SEEDS_RECIPE, Export, block_latents
from helpers import s3_client, tiny_config

SMALL = ("--num", 40, "--shard-size", 16, "--format", "parquet")  # 3 blocks: 16, 16 and 8 images


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory) -> str:
    """A conditional tiny run on tiny_data's classes "0".."9" (16x16 grayscale), checkpoints at steps 3 and 6."""
    storage = tmp_path_factory.mktemp("runs")
    train(tiny_config(tiny_data, str(storage), **{"model.conditional": True}))
    return str(storage / "tiny")


@pytest.fixture(scope="module")
def unconditional_run(tiny_data, tmp_path_factory) -> str:
    storage = tmp_path_factory.mktemp("runs-uncond")
    train(tiny_config(tiny_data, str(storage), **{"train.steps": 3}))
    return str(storage / "tiny")


def sample(capsys, *args) -> tuple[int, str, str]:
    code = main(["sample", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def shard_bytes(folder) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.glob("shard-*.parquet"))}


def test_dataset_holds_the_asked_class_cycle_with_its_provenance(run, tmp_path, capsys):
    out = tmp_path / "synth"
    code, printed, err = sample(capsys, run, *SMALL, "--out", out, "--class", 3, "--class", "7", "--seed", 5,
                                "--truncation", 0.5)
    assert code == 0, err
    assert printed == f"wrote 40 images (16x16x1, raw) in 3 shards to {out}\n"
    assert "sample: 40/40 (100%)" in err  # the progress line
    manifest = read_manifest(str(out))
    assert (manifest.resolution, manifest.channels, manifest.count, manifest.format) == (16, 1, 40, "raw")
    assert manifest.shards == ["shard-00000.parquet", "shard-00001.parquet", "shard-00002.parquet"]
    assert manifest.class_names == [str(k) for k in range(10)]
    assert manifest.origin == {"checkpoint": f"{run}/checkpoint_000000006", "step": 6, "seed": 5, "truncation": 0.5,
                               "classes": [3, 7], "raw": False, "shard_size": 16, "seeds": SEEDS_RECIPE}
    shards = shard_bytes(out)
    assert manifest.content_hash == content_hash([hashlib.sha256(shards[name]).hexdigest() for name in manifest.shards])
    table = pq.read_table(out)  # plain pyarrow: the folder's Parquet files, the manifest left out
    assert table.schema.equals(SHARD_SCHEMA) and table.num_rows == 40
    assert [pq.read_metadata(out / name).num_rows for name in manifest.shards] == [16, 16, 8]
    assert table["label"].to_pylist() == [3, 7] * 20
    images = table["image"].to_pylist()
    assert {len(image) for image in images} == {16 * 16} and len(set(images)) == 40  # no two share a latent
    columns = load_columns(str(out), manifest)  # evaluation's and training's reader, through the one decode
    assert columns["image"].shape == (40, 16, 16, 1) and columns["label"].tolist() == [3, 7] * 20


def test_blocks_draw_their_own_latents_on_the_cpu(run):
    export = Export(run, "unused", 40, 5, (), 1.0, False, 16)
    first, second, again = block_latents(export, 0, 8), block_latents(export, 1, 8), block_latents(export, 0, 8)
    assert first.device.type == "cpu" and first.shape == (16, 8) and block_latents(export, 2, 8).shape == (8, 8)
    assert torch.equal(first, again) and not torch.isclose(first, second).any()
    expected = torch.randn(16, 8, generator=torch.Generator().manual_seed(seeds.derive(5, "sample", 1)))
    assert torch.equal(second, expected)  # the recipe the manifest records


def test_truncation_zero_draws_each_class_average_image(run, tmp_path, capsys):
    out = tmp_path / "avg"
    assert sample(capsys, run, "--num", 20, "--shard-size", 8, "--format", "parquet", "--truncation", 0,
                  "--out", out, "--class", 1, "--class", 2)[0] == 0
    table = pq.read_table(out)
    by_class: dict[int, set[bytes]] = {}
    for image, label in zip(table["image"].to_pylist(), table["label"].to_pylist()):
        by_class.setdefault(label, set()).add(image)
    assert {label: len(images) for label, images in by_class.items()} == {1: 1, 2: 1}  # across the 3 blocks
    assert by_class[1] != by_class[2]


def test_unconditional_generator_writes_null_labels(unconditional_run, tmp_path, capsys):
    out = tmp_path / "u"
    assert sample(capsys, unconditional_run, "--num", 10, "--format", "parquet", "--out", out)[0] == 0
    manifest = read_manifest(str(out))
    assert manifest.shards == ["shard-00000.parquet"] and manifest.class_names == []
    assert manifest.origin["classes"] == [] and manifest.origin["step"] == 3
    assert pq.read_table(out)["label"].null_count == 10


def test_one_local_worker_and_two_ray_workers_write_the_same_bytes_to_object_storage(run, ray_cluster, bucket,
                                                                                     tmp_path, capsys):
    local = tmp_path / "local"
    assert sample(capsys, run, *SMALL, "--out", local, "--seed", 9)[0] == 0
    code, _, err = sample(capsys, run, *SMALL, "--out", f"s3://{bucket}/synth", "--seed", 9, "--num-workers", 2)
    assert code == 0, err
    s3 = s3_client()
    remote = {name: s3.get_object(Bucket=bucket, Key=f"synth/{name}")["Body"].read() for name in shard_bytes(local)}
    assert remote == shard_bytes(local)
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"synth/{MANIFEST_NAME}")["Body"].read())
    assert manifest == json.loads((local / MANIFEST_NAME).read_text())
    columns = load_columns(f"s3://{bucket}/synth", read_manifest(f"s3://{bucket}/synth"))
    assert columns["label"].tolist() == list(range(10)) * 4  # every class in turn, when none is asked
    code, _, err = sample(capsys, run, *SMALL, "--out", f"s3://{bucket}/synth", "--backend", "local")
    assert (code, err) == (2, f"gan-dist: error: s3://{bucket}/synth already holds a prepared dataset; choose "
                              f"another --out or delete it first\n")


def test_training_runs_on_a_synthetic_dataset(run, tmp_path, capsys):
    out = tmp_path / "synth"
    assert sample(capsys, run, *SMALL, "--out", out)[0] == 0
    result = train(tiny_config(str(out), str(tmp_path / "runs"), **{"model.conditional": True, "train.steps": 2}))
    assert result.step == 2


def test_an_interrupted_export_is_replaced_and_its_extra_shards_deleted(run, tmp_path, capsys):
    out = tmp_path / "synth"
    out.mkdir()
    for leftover in ("shard-00000.parquet", "shard-00007.parquet", "._manifest.json.tmp"):  # a torn manifest write
        (out / leftover).write_bytes(b"half")
    assert sample(capsys, run, *SMALL, "--out", out)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME] + [f"shard-0000{b}.parquet" for b in range(3)]
    assert pq.read_table(out).num_rows == 40


@pytest.mark.parametrize("args, message", [
    (["--truncation", 1.5], "--truncation 1.5 is out of range; pass a value from 0"),
    (["--class", 12], "--class 12 is out of range: the generator has 10 classes"),
    (["--class", "owl"], "--class 'owl' is not one of the generator's classes"),
    (["--seed", -1], "--seed -1 is out of range for --format parquet"),
    (["--backend", "local", "--num-workers", 2], "the local backend runs one process"),
    (["--format", "png", "--num-workers", 2], "--format png is written by this process alone"),
])
def test_refusals_are_one_line(run, tmp_path, capsys, args, message):
    code, _, err = sample(capsys, run, *SMALL, "--out", tmp_path / "synth", *args)
    assert code == 2 and err.startswith(f"gan-dist: error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "synth").exists()


def test_refused_outputs(run, unconditional_run, tmp_path, capsys, s3_server):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / MANIFEST_NAME).write_text("{}")
    for out, args, message in [
        (tmp_path / "full", [], f"--out {tmp_path / 'full'} is not empty (1 other entries, e.g. notes.txt)"),
        (tmp_path / "done", [], f"{tmp_path / 'done'} already holds a prepared dataset"),
        ("s3://no-such-bucket/synth", [], "bucket 'no-such-bucket' of s3://no-such-bucket/synth does not exist"),
        (tmp_path / "u", ["--class", 1], f"--class: {unconditional_run}"),
    ]:
        code, _, err = sample(capsys, unconditional_run if args else run, *SMALL, "--out", out, *args)
        assert code == 2 and err.startswith(f"gan-dist: error: {message}") and err.count("\n") == 1, err
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["notes.txt"]


@pytest.mark.skipif(torch.cuda.device_count() >= 2, reason="needs a machine without 2 GPUs")
def test_gpu_workers_without_gpus_are_refused(run, tmp_path, capsys):
    for args, message in [(["--gpu", "--num-workers", 2], "--gpu asks for 2 GPU(s) and this machine has"),
                          (["--gpu"], "--gpu was given but torch sees no CUDA device")]:
        if "--num-workers" not in args and torch.cuda.is_available():
            continue
        code, _, err = sample(capsys, run, *SMALL, "--out", tmp_path / "synth", *args)
        assert code == 2 and err.startswith(f"gan-dist: error: {message}") and err.count("\n") == 1, err
