"""Evaluation off the training path (eval.where): the exported nets measured elsewhere give the inline numbers,
the numbers land in metrics.jsonl, W&B and meta.json at the evaluated step, retention keeps the best by them, and
the run waits for its last evaluation. One real Ray run; the rest without Ray."""

import io
import json

import pytest
import torch

from gan_dist import checkpoint
from gan_dist.data.placement import Dataset
from gan_dist.data.reader import read_manifest
from gan_dist.errors import UserError
from gan_dist.eval.measure import EVAL_LOGGED
from gan_dist.runtime.launch import train
from gan_dist.tracking import LANDED_STEP, METRICS_FILE, RunTracker
from gan_dist.train.context import Landed
from gan_dist.train.loop import train_loop
from gan_dist.train.offpath import ExportMeasure, load_exports, record_landed, snapshot
from gan_dist.train.tasks import build_task
from helpers import local_ctx, tiny_config, tiny_inpaint_config, tiny_translation_config

EVALUATED = {"eval.features": "domain", "eval.num": 40}


def _publish(run: str, step: int, metrics: dict) -> None:
    checkpoint.publish(run, step, {"w": torch.zeros(1), checkpoint.EXPORTS: {}}, {"step": step, "metrics": metrics})


def test_late_numbers_join_a_checkpoints_meta_and_retention_keeps_the_best_by_them(tmp_path):
    run = str(tmp_path / "run")
    for step in (2, 4, 6):
        _publish(run, step, {"loss_G": 1.0})
    # 2 and 4 still being evaluated: kept beside the newest, their numbers may make one the best
    assert checkpoint.prune(run, 1, 6, "fid", "min", pending=(2, 4)) == [2, 4, 6]
    assert checkpoint.add_metrics(run, 2, {"fid": 5.0}) and checkpoint.add_metrics(run, 4, {"fid": 3.0})
    meta = checkpoint.load_meta(str(tmp_path / "run" / "checkpoint_000000004"))
    assert meta["metrics"] == {"loss_G": 1.0, "fid": 3.0} and checkpoint.is_complete(str(tmp_path / "run" /
                                                                                        "checkpoint_000000004"))
    checkpoint.check_loads(str(tmp_path / "run" / "checkpoint_000000004"))  # the files still match meta.json
    assert checkpoint.prune(run, 1, 6, "fid", "min") == [4, 6]
    assert not checkpoint.add_metrics(run, 2, {"fid": 1.0})  # deleted by retention: nothing to record into
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint_000000004", "checkpoint_000000006"]
    assert not list((tmp_path / "run").rglob(".*.tmp"))  # meta.json replaced whole, no partial file left
    # without keep_best nothing waits for numbers
    assert checkpoint.prune(run, 1, 6, None, "min", pending=(4,)) == [6]


def test_a_landed_evaluation_is_logged_at_its_step_and_a_failed_one_is_a_warning(tmp_path, tiny_data):
    cfg = tiny_config(tiny_data, str(tmp_path), **{"run.keep_checkpoints": 1, "run.keep_best": "fid"})
    run = str(tmp_path / "run")
    for step in (2, 4):
        _publish(run, step, {"loss_G": 1.0})
    console = io.StringIO()
    tracker = RunTracker(run, 6, cfg.log, "id", {}, console)
    landed = [Landed(2, {"fid": 1.5, "eval_seconds": 0.1}), Landed(4, None, "ValueError: no rows")]
    record_landed(landed, tracker, run, cfg, 5, pending=())
    lines = [json.loads(line) for line in (tmp_path / "run" / METRICS_FILE).read_text().splitlines()]
    assert lines == [{"step": 2, "fid": 1.5, "eval_seconds": 0.1, LANDED_STEP: 5}]
    assert "warning: the evaluation of step 4 failed (ValueError: no rows); training goes on" in console.getvalue()
    assert checkpoint.list_checkpoints(run) == [2, 4]  # re-pruned: 4 the newest, 2 the best by fid
    assert checkpoint.load_meta(run + "/checkpoint_000000002")["metrics"]["fid"] == 1.5


def _tasks(tiny_data, tiny_domain_b, storage, seed):
    """One task of each kind (pix2pix exports its G as CUT does), built with the given seed."""
    seeded = {"train.seed": seed}
    configs = [tiny_config(tiny_data, storage, **seeded), tiny_inpaint_config(tiny_data, storage, **seeded),
               *(tiny_translation_config(tiny_data, tiny_domain_b, storage, kind, **seeded)
                 for kind in ("cyclegan", "cut"))]
    for cfg in configs:
        datasets = {name: Dataset(uri, read_manifest(uri))
                    for name, uri in zip(cfg.dataset_names(), (tiny_data, tiny_domain_b))}
        yield build_task(cfg, datasets, torch.device("cpu"))


def test_exported_weights_load_into_a_task_of_each_kind(tiny_data, tiny_domain_b, tmp_path):
    for trained, fresh in zip(_tasks(tiny_data, tiny_domain_b, str(tmp_path), 1),
                              _tasks(tiny_data, tiny_domain_b, str(tmp_path), 2)):
        copy = snapshot(trained)
        assert any(not torch.equal(copy[n][k], v) for n, net in fresh.export().items() for k, v in net.items())
        load_exports(fresh, copy)
        for name, net in fresh.export().items():
            for key, value in net.items():
                assert torch.equal(value, copy[name][key]), (type(fresh).__name__, name, key)


def test_measuring_a_copy_of_the_exports_gives_the_inline_numbers(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, str(tmp_path), **EVALUATED)
    ctx = local_ctx(cfg, tmp_path / "run")
    task = build_task(cfg, ctx.datasets, ctx.device)
    elsewhere = ExportMeasure(cfg, ctx.datasets, torch.device("cpu"))
    untrained = elsewhere(snapshot(task))
    with torch.no_grad():
        for value in task.export()["generator"].values():
            if value.is_floating_point():
                value.add_(0.05 * torch.randn_like(value))
    inline = task.measure(ctx)()
    measured = elsewhere(snapshot(task))
    assert measured.pop("eval_seconds") > 0 and untrained.pop("eval_seconds") > 0
    assert measured == inline and measured != untrained


def test_eval_where_ray_is_refused_on_the_local_backend_in_one_line(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, str(tmp_path / "runs"), **{"run.backend": "local", "eval.where": "ray"})
    with pytest.raises(UserError, match=r"^eval.where=ray evaluates in a Ray actor and the local backend runs no "
                                        r"Ray; set eval.where=inline \(or auto\), or train with --backend ray$"):
        train(cfg)
    assert not (tmp_path / "runs").exists()  # refused before any work


def _lines(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()]


def test_off_path_numbers_land_at_their_steps_in_metrics_wandb_and_meta_and_keep_the_best(ray_cluster, tiny_data,
                                                                                        tmp_path):
    from wandb_records import history, records

    common = {"train.steps": 6, "train.checkpoint_every": 2, "train.log_every": 2, "run.keep_checkpoints": 1,
              "run.keep_best": "fid", **EVALUATED}
    inline_cfg = tiny_config(tiny_data, str(tmp_path), **common, **{"run.name": "inline", "eval.where": "inline"})
    train_loop(local_ctx(inline_cfg, tmp_path / "inline"), inline_cfg)
    cfg = tiny_config(tiny_data, str(tmp_path), **common, **{"run.name": "off", "run.backend": "ray",
                                                            "log.wandb": "offline"})
    assert train(cfg).step == 6  # eval.where=auto: ray on the Ray backend

    run_dir = tmp_path / "off"
    landed = {line["step"]: line for line in _lines(run_dir) if LANDED_STEP in line}
    assert sorted(landed) == [2, 4, 6]  # the last one too: the run waited for it
    assert all(line[LANDED_STEP] >= step for step, line in landed.items())
    inline = {line["step"]: {k: v for k, v in line.items() if k in EVAL_LOGGED}
              for line in _lines(tmp_path / "inline") if "fid" in line}
    for step, line in landed.items():  # the inline run's names, and its numbers: the same weights, the same code
        numbers = {k: v for k, v in line.items() if k not in ("step", LANDED_STEP, "eval_seconds")}
        assert numbers == pytest.approx({k: v for k, v in inline[step].items() if k != "eval_seconds"}, rel=1e-4)
        assert "eval_seconds" in line
    # the newest checkpoint and the best by the landed fid, each holding its own numbers
    best = min(landed, key=lambda step: landed[step]["fid"])
    assert checkpoint.list_checkpoints(str(run_dir)) == sorted({best, 6})
    for step in {best, 6}:
        meta = checkpoint.load_meta(str(run_dir / checkpoint.checkpoint_name(step)))
        assert meta["metrics"]["fid"] == landed[step]["fid"] and "loss_G" in meta["metrics"]
    wandb_file = next((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    rows = [row for row in history(wandb_file) if "fid" in row]
    assert [(row["evaluated_step"], row["fid"]) for row in rows] == [(s, landed[s]["fid"]) for s in (2, 4, 6)]
    axes = {r.metric.name: r.metric.step_metric for r in records(wandb_file) if r.WhichOneof("record_type") == "metric"}
    assert axes.get("fid") == "evaluated_step"


def test_past_numbers_landing_together_get_a_wandb_step_each_without_blocking_later_steps(tmp_path, tiny_data):
    from wandb_records import history

    cfg = tiny_config(tiny_data, str(tmp_path), **{"log.wandb": "offline"})
    tracker = RunTracker(str(tmp_path / "run"), 6, cfg.log, "paststeps", {}, io.StringIO())
    tracker.log({"step": 3, "loss_G": 1.0})
    tracker.log_evaluation(2, {"fid": 2.0}, 3)
    tracker.log_evaluation(3, {"fid": 3.0}, 3)  # same landing step: waits for step 4
    tracker.log({"step": 4, "loss_G": 0.5})
    tracker.log_evaluation(4, {"fid": 4.0}, 4)  # step 4 holds one already: after the last step
    tracker.close()
    rows = history(next((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")))
    assert [(row["_step"], row["evaluated_step"], row["fid"]) for row in rows if "fid" in row] == [
        (3, 2, 2.0), (4, 3, 3.0), (5, 4, 4.0)]
    assert [(row["_step"], row["loss_G"]) for row in rows if "loss_G" in row] == [(3, 1.0), (4, 0.5)]


def test_the_report_adds_landed_numbers_to_their_steps_record(tmp_path):
    from gan_dist.report import read_metrics

    lines = [{"step": 4, "loss_G": 0.5}, {"step": 6, "loss_G": 0.4}, {"step": 4, "fid": 2.0, LANDED_STEP: 6}]
    (tmp_path / METRICS_FILE).write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert read_metrics(str(tmp_path)).rows == [{"step": 4, "loss_G": 0.5, "fid": 2.0, LANDED_STEP: 6},
                                                {"step": 6, "loss_G": 0.4}]


def test_auto_evaluates_inline_where_the_cluster_has_no_room_beside_the_workers(ray_cluster, tiny_data, tmp_path,
                                                                                capsys):
    from gan_dist.runtime.offpath_eval import place_evaluation

    def placed(**overrides) -> str:
        cfg = tiny_config(tiny_data, str(tmp_path), **{"run.backend": "ray", **EVALUATED, **overrides})
        return place_evaluation(cfg, measures=True).eval.where

    assert placed(**{"run.num_workers": 2}) == "auto"  # the session's 4 CPUs: 2 workers and the actor fit
    assert capsys.readouterr().out == ""
    assert placed(**{"run.num_workers": "2-4"}) == "inline"  # room is counted at MAX workers
    assert "evaluation: inline in the training workers (the evaluation actor asks for 1 CPU(s) and 0 GPU(s) and " \
           "the Ray cluster has 0 CPU(s)" in capsys.readouterr().out
    assert placed(**{"run.num_workers": 4, "eval.where": "ray"}) == "ray"  # asked for: kept, with a warning
    assert "warning: the evaluation actor asks for 1 CPU(s)" in capsys.readouterr().err
