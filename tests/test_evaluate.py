"""`gan-dist evaluate` and evaluation during training, on CPU with the domain features: the table and JSON, the
caches beside the dataset, object storage, the sanity of FID under corruption, evaluation sharded over two
workers, and the one-line errors."""

import json
import os
import pickle
import shutil

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from gan_dist import checkpoint
from gan_dist.cli import main
from gan_dist.data.embedded import embedded_digits
from gan_dist.data.placement import Dataset
from gan_dist.data.prepare import write_shards
from gan_dist.data.reader import read_manifest
from gan_dist.eval import metrics
from gan_dist.eval.features import EVAL_DIR, domain_features
from gan_dist.eval.stats import embed
from gan_dist.runtime.launch import train
from helpers import count_dataset_reads, numbered_images, s3_client, tiny_config

EVAL_ON = {"eval.features": "domain", "eval.num": 64, "eval.metrics": "fid,kid,pr,swd"}


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory) -> str:
    """A conditional tiny run that evaluated itself at each checkpoint (3 and 6)."""
    storage = tmp_path_factory.mktemp("runs")
    train(tiny_config(tiny_data, str(storage), **{"model.conditional": True, **EVAL_ON}))
    return str(storage / "tiny")


def evaluate(capsys, *args) -> tuple[int, str, str]:
    code = main(["evaluate", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_evaluate_prints_one_table_and_writes_json(run, tmp_path, capsys):
    code, out, _ = evaluate(capsys, run, "--num", 64, "--json", tmp_path / "eval.json")
    assert code == 0
    for name in ("fid", "kid", "precision", "recall", "swd_16", "swd_mean", "copies", "confident", "class_min",
                 "coverage", "agreement"):
        assert any(line.startswith(name + " ") for line in out.splitlines()), (name, out)
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["checkpoint"].endswith("checkpoint_000000006") and saved["num"] == 64 and saved["real"] == 64
    assert saved["metrics"]["fid"] >= 0 and 0 <= saved["metrics"]["precision"] <= 1


def test_raw_evaluates_the_trained_generator_instead_of_its_average(run, tmp_path, capsys):
    for name, raw in (("ema", []), ("raw", ["--raw"])):
        assert evaluate(capsys, run, "--num", 64, "--metrics", "fid", *raw, "--json", tmp_path / f"{name}.json")[0] == 0
    ema, trained = (json.loads((tmp_path / f"{n}.json").read_text())["metrics"]["fid"] for n in ("ema", "raw"))
    assert ema != trained  # two generators, two sets of images


def test_same_checkpoint_and_seed_give_the_same_numbers_and_caches_are_keyed_by_content(run, tiny_data, tmp_path,
                                                                                       capsys):
    for name in ("a", "b"):
        assert evaluate(capsys, run, "--num", 64, "--metrics", "fid,pr", "--json", tmp_path / f"{name}.json")[0] == 0
    a, b = (json.loads((tmp_path / f"{n}.json").read_text())["metrics"] for n in ("a", "b"))
    assert a == b
    content = read_manifest(tiny_data).content_hash[:16]
    cached = sorted(os.listdir(os.path.join(tiny_data, EVAL_DIR)))
    assert f"classifier-{content}" in cached and f"features-domain500-{content}-64.safetensors" in cached
    with open(os.path.join(tiny_data, EVAL_DIR, f"features-domain500-{content}-64.safetensors"), "wb") as f:
        f.write(b"damaged")  # a damaged cache is computed again, not trusted
    assert evaluate(capsys, run, "--num", 64, "--metrics", "fid,pr", "--json", tmp_path / "c.json")[0] == 0
    assert json.loads((tmp_path / "c.json").read_text())["metrics"] == a


def test_training_logs_the_evaluation_at_each_checkpoint(run):
    lines = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    evaluated = [line for line in lines if "fid" in line]
    assert [line["step"] for line in evaluated] == [3, 6]
    assert all(line["eval_seconds"] > 0 and 0 <= line["agreement"] <= 1 for line in evaluated)
    meta = checkpoint.load_meta(os.path.join(run, "checkpoint_000000006"))
    assert meta["metrics"]["fid"] == evaluated[-1]["fid"]


def test_keep_best_by_fid(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, str(tmp_path), **{**EVAL_ON, "eval.metrics": "fid", "train.steps": 8,
                                                   "train.checkpoint_every": 2, "run.keep_checkpoints": 1,
                                                   "run.keep_best": "fid"})
    train(cfg)
    logged = {line["step"]: line["fid"] for line in map(json.loads, open(tmp_path / "tiny" / "metrics.jsonl"))
              if "fid" in line}
    best = min(logged, key=logged.get)
    assert checkpoint.list_checkpoints(str(tmp_path / "tiny")) == sorted({best, 8})


@pytest.mark.slow
def test_fid_grows_with_corruption_and_a_held_out_split_is_closest():
    data = embedded_digits()
    dataset = Dataset.open(data)
    net = domain_features(dataset, torch.device("cpu"))
    images = torch.from_numpy(dataset.images())
    train_split, held_out = images[:900], images[900:]
    real = embed(net, train_split, torch.device("cpu"))

    def fid_of(fake_u8):
        return metrics.fid(real, embed(net, fake_u8, torch.device("cpu")))

    def blurred(x, sigma):
        radius = int(3 * sigma)
        taps = torch.exp(-torch.arange(-radius, radius + 1).float() ** 2 / (2 * sigma**2))
        kernel = (taps[:, None] * taps[None, :] / taps.sum() ** 2)[None, None]
        out = F.conv2d(x.permute(0, 3, 1, 2).float(), kernel, padding=radius)
        return out.round().clamp(0, 255).byte().permute(0, 2, 3, 1)

    def noised(x, std):
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) * std
        return (x.float() + noise).round().clamp(0, 255).byte()

    baseline = fid_of(held_out)
    blur = [fid_of(blurred(held_out, s)) for s in (1.0, 1.5, 2.0)]
    noise = [fid_of(noised(held_out, s)) for s in (32, 64, 96)]
    assert baseline * 5 < min(blur[0], noise[0])
    assert blur == sorted(blur) and noise == sorted(noise)
    same = metrics.kid(real, embed(net, held_out, torch.device("cpu")))[0]  # two samples of one distribution
    assert abs(same) < 0.05 * metrics.kid(real, embed(net, noised(held_out, 96), torch.device("cpu")))[0]


def _evaluate_on_ranks(rank, world_size, port, cfg_dict, data, out):
    """One rank of a gloo group: build the task from the same seed, evaluate, rank 0 saves the numbers."""
    import torch.distributed as dist

    from gan_dist.config import config_from_dict
    from gan_dist.data.placement import Dataset
    from gan_dist.train.tasks.generation import GenerationTask
    from gan_dist.train.parts import Evaluation
    from gan_dist.train.state import StepRecord, TrainState

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    cfg, manifest = config_from_dict(cfg_dict), read_manifest(data)
    ctx = type("Ctx", (), {"rank": rank, "world_size": world_size, "device": torch.device("cpu"),
                           "datasets": {"train": Dataset(data, manifest)}, "run_uri": ""})()
    task = GenerationTask(cfg, ctx.datasets, ctx.device, rank, world_size)
    record = StepRecord(TrainState(step=cfg.train.steps), {})
    Evaluation(task, ctx, cfg, None)(record)
    if rank == 0:
        torch.save(record.evaluated, out)
    dist.destroy_process_group()


@pytest.mark.slow
def test_the_same_generator_gets_the_same_numbers_from_one_or_two_workers(tiny_data, tmp_path):
    from helpers import free_port

    cfg = tiny_config(tiny_data, str(tmp_path), **{**EVAL_ON, "model.conditional": True, "eval.num": 50,
                                                   "eval.where": "inline"})  # the training ranks measure
    results = []
    for world_size in (1, 2):
        out = str(tmp_path / f"eval-{world_size}.pt")
        mp.spawn(_evaluate_on_ranks, args=(world_size, free_port(), cfg.model_dump(), tiny_data, out),
                 nprocs=world_size)
        results.append(torch.load(out, weights_only=True))
    one, two = results
    assert one.keys() == two.keys() and "fid" in one
    for name in one:
        if name not in ("eval_seconds", "step"):
            assert one[name] == pytest.approx(two[name], rel=1e-5, abs=1e-6), name


def test_evaluate_reads_and_writes_object_storage(s3_server, tiny_data, tmp_path, capsys):
    bucket = "gan-dist-evaluate"
    s3_client().create_bucket(Bucket=bucket)
    train(tiny_config(tiny_data, f"s3://{bucket}/runs", **{"train.steps": 3}))
    code, out, err = evaluate(capsys, f"s3://{bucket}/runs/tiny", "--num", 32, "--metrics", "fid",
                              "--json", f"s3://{bucket}/eval.json")
    assert code == 0, err
    saved = json.loads(s3_client().get_object(Bucket=bucket, Key="eval.json")["Body"].read())
    assert saved["checkpoint"] == f"s3://{bucket}/runs/tiny/checkpoint_000000003" and "fid" in saved["metrics"]


@pytest.mark.parametrize("args, message", [
    (["--metrics", "fid,is"], "--metrics 'fid,is': choose from fid, kid, pr, swd"),
    (["--features", "domain", "--data", "UNLABELED"], "--features domain needs a labeled dataset"),
    (["--num", "3"], "--num: 3 images are too few to compare; use at least 4"),
])
def test_bad_evaluate_arguments_are_one_line(run, tmp_path, capsys, args, message):
    unlabeled = str(tmp_path / "unlabeled")
    write_shards(numbered_images(32), None, unlabeled, shard_size=32)
    code, _, err = evaluate(capsys, run, *(["--num", "16"] if "--num" not in args else []),
                            *[unlabeled if a == "UNLABELED" else a for a in args])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_an_existing_json_is_not_replaced(run, tmp_path, capsys):
    (tmp_path / "keep.json").write_text("{}")
    code, _, err = evaluate(capsys, run, "--num", 16, "--json", tmp_path / "keep.json")
    assert code == 2 and "already exists" in err and (tmp_path / "keep.json").read_text() == "{}"


@pytest.mark.slow
def test_evaluate_with_the_standard_inception_features(run, tmp_path, capsys):
    code, out, err = evaluate(capsys, run, "--num", 12, "--features", "inception", "--metrics", "fid,pr",
                              "--json", tmp_path / "eval.json")
    assert code == 0, err
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["features"] == "inception" and saved["metrics"]["fid"] > 0 and "confident" not in saved["metrics"]


@pytest.mark.slow
def test_auto_features_are_inception_for_an_unlabeled_dataset(run, tmp_path, capsys):
    unlabeled = str(tmp_path / "unlabeled")
    write_shards(numbered_images(32), None, unlabeled, shard_size=32)
    code, _, err = evaluate(capsys, run, "--num", 8, "--metrics", "fid", "--data", unlabeled,
                            "--json", tmp_path / "eval.json")
    assert code == 0, err
    assert json.loads((tmp_path / "eval.json").read_text())["features"] == "inception"


def test_a_dataset_loads_its_rows_once_and_a_pickle_of_it_carries_none(tiny_data, monkeypatch):
    """What a command opens it hands on, rows included; what travels to a Ray worker is the dataset's URI and manifest,
    the worker loading the rows it needs itself."""
    data = Dataset.open(tiny_data)
    reads = count_dataset_reads(monkeypatch)
    data.plan(100)
    assert data.images(10).shape == (10, 16, 16, 1) and len(data.columns(100)["label"]) == 100
    assert len(data.images()) == 256  # more rows than the first load read: loaded again
    assert reads == {("load_columns", tiny_data): 2}
    travelled = pickle.loads(pickle.dumps(data))
    assert travelled == data
    assert (travelled.images(5) == data.images(5)).all() and reads == {("load_columns", tiny_data): 3}


def test_one_evaluation_opens_the_dataset_once(run, tiny_data, tmp_path, monkeypatch, capsys):
    """One manifest read and one load of the image columns, shared by the real features, SWD and the near-copy
    search (and the domain classifier where it is trained): each used to read the dataset on its own."""
    data = str(tmp_path / "data")  # a copy whose real features are not cached yet: computed from the images
    shutil.copytree(tiny_data, data, ignore=shutil.ignore_patterns("features-*"))
    reads = count_dataset_reads(monkeypatch)
    code, out, err = evaluate(capsys, run, "--data", data, "--num", 64)
    assert code == 0, err
    assert all(any(line.startswith(f"{name} ") for line in out.splitlines()) for name in ("fid", "swd_16", "copies"))
    assert any(name.startswith("features-") for name in os.listdir(os.path.join(data, EVAL_DIR)))
    assert reads == {("read_manifest", data): 1, ("load_columns", data): 1}
