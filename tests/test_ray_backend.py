"""A real 2-worker TorchTrainer on CPU (gloo) over real shards, through the project's Ray backend."""

import json
import os
import sys
from pathlib import Path

import helpers
import pytest
import ray.cloudpickle
import torch

from gan_dist import checkpoint
from gan_dist.errors import UserError
from gan_dist.runtime.launch import train
from gan_dist.sample import write_samples
from gan_dist.train.loop import train_loop
from helpers import assert_same_state, row_ids, tiny_config, tiny_inpaint_config, tiny_translation_config

# Ship this module's loop wrapper to the workers by value: they cannot import the tests folder.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
ray.cloudpickle.register_pickle_by_value(helpers)

pytestmark = pytest.mark.ray


STABILIZERS = {"train.batch_size": 4, "train.n_dis": 2, "train.augment": "translation,cutout,color",
               "train.ada_target": 0.6, "train.ada_interval": 3, "train.ada_kimg": 0.5, "train.r1_gamma": 1.0,
               "train.r1_every": 3, "train.lecam_weight": 0.1}


def make_recording_loop(out_dir: str):
    """The project's loop, with each worker writing down the row ids of every batch it trained on, and the rows
    whose label is not the one tiny_data gave them (row % 10)."""

    def recording_loop(ctx, cfg):
        seen, mislabeled = [], []
        read = ctx.batches

        def batches(names, start):
            for batch, position in read(names, start):
                rows = row_ids(batch["train"])
                seen.extend(rows)
                mislabeled.extend(r for r, label in zip(rows, batch["train"]["label"].tolist()) if label != r % 10)
                yield batch, position

        ctx.batches = batches
        result = train_loop(ctx, cfg)
        Path(out_dir, f"rows-rank{ctx.rank}.json").write_text(json.dumps(seen))
        Path(out_dir, f"mislabeled-rank{ctx.rank}.json").write_text(json.dumps(mislabeled))
        return result

    return recording_loop


@pytest.fixture(scope="module")
def first_run(ray_cluster, tiny_data, tmp_path_factory):
    storage = tmp_path_factory.mktemp("ray-storage")
    rows = tmp_path_factory.mktemp("rows")
    # 256 rows / 2 workers / (2 D updates x batch 4) = 16 steps per worker per epoch: 10 steps stay inside one
    # epoch. Every stabilizer is on, so DDP, the replica check and the exact resume below cover them: augmentation
    # with an adaptive p (adjusted across the resume at 10), lazy R1 and LeCam, whose state the ranks share.
    cfg = tiny_config(tiny_data, str(storage), **{"run.num_workers": 2, "run.name": "two-workers",
                                                   "train.steps": 10, "train.checkpoint_every": 5,
                                                   "data.shuffle": False, **STABILIZERS})
    result = train(cfg, loop=make_recording_loop(str(rows)))
    return cfg, storage, rows, result


def test_two_workers_see_disjoint_rows(first_run):
    _, _, rows, result = first_run
    assert result.step == 10
    rank0 = json.loads((rows / "rows-rank0.json").read_text())
    rank1 = json.loads((rows / "rows-rank1.json").read_text())
    assert len(rank0) == len(rank1) == 10 * 8
    assert set(rank0).isdisjoint(rank1)
    assert len(set(rank0)) == len(rank0) and len(set(rank1)) == len(rank1)
    assert all(json.loads((rows / f"mislabeled-rank{r}.json").read_text()) == [] for r in (0, 1))  # labels came along


def test_replicas_stay_identical_across_ranks(first_run):
    _, storage, _, _ = first_run
    for step in (5, 10):
        meta = json.loads((storage / "two-workers" / checkpoint.checkpoint_name(step) / "meta.json").read_text())
        assert meta["world_size"] == 2
        assert meta["rank_divergence"] == 0.0


def test_checkpoints_land_in_ray_storage_and_are_complete(first_run):
    _, storage, _, _ = first_run
    run = str(storage / "two-workers")
    assert checkpoint.list_checkpoints(run) == [5, 10]
    assert checkpoint.latest_complete(run) == os.path.join(run, "checkpoint_000000010")
    assert (storage / "two-workers" / "samples" / "step_000000010.png").is_file()


def test_second_run_resumes_at_the_next_step(first_run, capfd):
    cfg, _, _, _ = first_run
    resumed = cfg.model_copy(update={
        "train": cfg.train.model_copy(update={"steps": 14}),
        "run": cfg.run.model_copy(update={"resume": True}),
    })
    result = train(resumed)
    assert result.resumed_from == 10
    assert result.step == 14
    assert "resumed from step 10" in capfd.readouterr().out
    state = checkpoint.load_state(checkpoint.latest_complete(str(Path(cfg.run.storage) / "two-workers")))
    assert state["train"]["step"] == 14
    assert state["optimizers"]["G"]["state"][0]["step"] == 14


def test_streamed_data_path_also_gives_disjoint_rows(ray_cluster, tiny_data, tmp_path):
    """data.placement=stream: the shards stream through Ray Data (decoded in its tasks), split across workers."""
    rows = tmp_path / "rows"
    rows.mkdir()
    cfg = tiny_config(tiny_data, str(tmp_path), **{"run.num_workers": 2, "run.name": "streamed",
                                                    "data.placement": "stream", "train.steps": 6})
    assert train(cfg, loop=make_recording_loop(str(rows))).step == 6
    rank0 = json.loads((rows / "rows-rank0.json").read_text())
    rank1 = json.loads((rows / "rows-rank1.json").read_text())
    assert len(rank0) == len(rank1) == 6 * 8
    assert set(rank0).isdisjoint(rank1)
    assert all(json.loads((rows / f"mislabeled-rank{r}.json").read_text()) == [] for r in (0, 1))  # through Ray Data


def test_resumed_ray_run_matches_an_uninterrupted_one_exactly(first_run, tmp_path):
    """Resident data gives every rank the same rows in the same order on every attempt, so 10 steps + a resume to
    14 (the test above) end bit-identical to 14 steps straight."""
    cfg, storage, _, _ = first_run
    straight = cfg.model_copy(update={
        "train": cfg.train.model_copy(update={"steps": 14}),
        "run": cfg.run.model_copy(update={"name": "straight", "storage": str(tmp_path)}),
    })
    train(straight)
    a = checkpoint.load_state(str(tmp_path / "straight" / "checkpoint_000000014"))
    b = checkpoint.load_state(str(storage / "two-workers" / "checkpoint_000000014"))
    assert_same_state(a, b)  # every tensor: nets, EMA, Adam, what the stabilizers keep, both ranks' RNG states
    assert 0 < a["adversary"]["ada"]["p"] < 1 and a["adversary"]["lecam"]["seen"] == 14 * 2


def test_step_benchmark_also_times_the_ray_data_streamed_path(ray_cluster, tmp_path):
    from gan_dist import cli

    out = tmp_path / "bench.json"
    assert cli.main(["bench", "--device", "cpu", "--resolution", "16", "--channels", "1", "--batch-size", "4",
                     "--steps", "2", "--warmup", "1", "--repeats", "1", "--ray", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [row["path"] for row in rows] == ["synthetic", "resident", "stream", "ray-stream"]
    assert rows[-1]["img_per_s"] > 0 and "Ray Data" in rows[-1]["note"]


def test_a_ray_run_resumes_after_retention_deleted_checkpoints_ray_reported(ray_cluster, tiny_data, tmp_path):
    """Ray keeps its own record of every checkpoint reported and refuses to start from one that names deleted
    checkpoints; gan-dist's retention deletes them, so every resume must still start."""
    cfg = tiny_config(tiny_data, str(tmp_path), **{"run.num_workers": 2, "run.name": "pruned", "train.steps": 4,
                                                    "train.checkpoint_every": 2, "run.keep_checkpoints": 1})
    train(cfg)
    assert checkpoint.list_checkpoints(str(tmp_path / "pruned")) == [4]  # 2 was reported to Ray, then deleted
    resumed = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": 6}),
                                     "run": cfg.run.model_copy(update={"resume": True})})
    assert (train(resumed).resumed_from, checkpoint.list_checkpoints(str(tmp_path / "pruned"))) == (4, [6])


def test_shards_that_do_not_match_their_manifest_are_refused_by_every_worker_in_one_line(ray_cluster, tiny_data,
                                                                                         tmp_path):
    """A worker that cannot read its rows makes every worker return the same refusal, before any training: one
    line, not a worker traceback and Ray's generic failure."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    manifest = json.loads((data / "_manifest.json").read_text())
    (data / "_manifest.json").write_text(json.dumps({**manifest, "resolution": 8}))  # the shards hold 16x16
    cfg = tiny_config(str(data), str(tmp_path), **{"run.num_workers": 2, "run.name": "edited"})
    with pytest.raises(UserError) as err:
        train(cfg)
    message = str(err.value)
    assert "shard" in message and "prepare" in message and "\n" not in message
    assert "training failed" not in message and "--resume" not in message
    assert not checkpoint.list_checkpoints(str(tmp_path / "edited"))


def test_a_conditional_model_trains_on_two_workers_with_identical_replicas(ray_cluster, tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, str(tmp_path), **{"run.num_workers": 2, "run.name": "conditional",
                                                    "model.conditional": True, "train.steps": 4,
                                                    "train.checkpoint_every": 4})
    assert train(cfg).step == 4
    meta = json.loads((tmp_path / "conditional" / "checkpoint_000000004" / "meta.json").read_text())
    assert meta["rank_divergence"] == 0.0 and meta["data"]["class_names"] == [str(k) for k in range(10)]
    written = write_samples(str(tmp_path / "conditional"), 4, str(tmp_path / "sevens"), classes=["7"])
    assert len(written) == 4 and (tmp_path / "sevens" / "labels.csv").read_text().count(",7,7") == 4


def test_two_workers_evaluate_during_training_into_metrics_and_wandb(ray_cluster, tiny_data, tmp_path):
    from wandb_records import history

    cfg = tiny_config(tiny_data, str(tmp_path), **{"run.num_workers": 2, "run.name": "evaluated", "train.steps": 4,
                                                    "train.checkpoint_every": 2, "train.log_every": 2,
                                                    "eval.features": "domain", "eval.num": 40,
                                                    "eval.where": "inline", "log.wandb": "offline"})
    assert train(cfg).step == 4
    run_dir = tmp_path / "evaluated"
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(line["step"], "fid" in line and "confident" in line) for line in lines] == [(2, True), (4, True)]
    assert json.loads((run_dir / "checkpoint_000000004" / "meta.json").read_text())["metrics"]["fid"] == lines[-1]["fid"]
    wandb_file = next((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert [row["_step"] for row in history(wandb_file) if "fid" in row] == [2, 4]


def test_a_two_worker_translation_run_resumes_exactly(ray_cluster, tiny_data, tiny_domain_b, tmp_path):
    """CycleGAN over 2 DDP workers (two translators, two discriminators, the cycle's repeated forwards): 4 steps
    straight against a run started from the straight run's step-2 checkpoint end bit-identical, each rank's image
    pool included (full at step 2, then swapping), and the replicas never differ."""
    def config(name: str, **overrides):
        return tiny_translation_config(tiny_data, tiny_domain_b, str(tmp_path), **{
            "run.num_workers": 2, "run.name": name, "train.steps": 4, "train.checkpoint_every": 2,
            "train.lr_decay_start": 0.5, **overrides})

    train(config("straight"))
    result = train(config("halves", **{"run.resume_from": str(tmp_path / "straight" / "checkpoint_000000002")}))
    assert result.resumed_from == 2
    a = checkpoint.load_state(str(tmp_path / "straight" / "checkpoint_000000004"))
    b = checkpoint.load_state(str(tmp_path / "halves" / "checkpoint_000000004"))
    assert_same_state(a, b)
    assert len(a["ranks"]) == 2 and all(rank["pools"]["b"]["count"] == 6 for rank in a["ranks"])
    assert not torch.equal(a["ranks"][0]["pools"]["b"]["images"], a["ranks"][1]["pools"]["b"]["images"])
    for step in (2, 4):
        meta = checkpoint.load_meta(str(tmp_path / "straight" / checkpoint.checkpoint_name(step)))
        assert meta["world_size"] == 2 and meta["rank_divergence"] == 0.0


def test_a_two_worker_inpainting_run_trains_and_evaluates_on_rank_0(ray_cluster, tiny_data, tmp_path):
    """Inpainting over 2 DDP workers, each drawing its own holes, with the completion measured on rank 0 at each
    checkpoint while rank 1 waits: the replicas never differ and the numbers reach metrics.jsonl and meta.json."""
    train(tiny_inpaint_config(tiny_data, str(tmp_path), **{
        "run.num_workers": 2, "train.steps": 4, "train.checkpoint_every": 2, "eval.features": "auto",
        "eval.num": 20, "eval.where": "inline"}))
    for step in (2, 4):
        meta = checkpoint.load_meta(str(tmp_path / "tiny" / checkpoint.checkpoint_name(step)))
        assert meta["world_size"] == 2 and meta["rank_divergence"] == 0.0
        assert 0 < meta["metrics"]["hole_l1"] < 1 and 0 <= meta["metrics"]["labels"] <= 1
