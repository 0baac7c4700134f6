"""`gan-dist tune` on the session's real local Ray: tiny trials, each an ordinary Ray Train run. The metric is the
logged learning rate (lr_G or lr_D, mode max), so which trial is weak is known before it runs: the schedulers'
decisions are then facts to check, not chances."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gan_dist import checkpoint
from gan_dist.cli import main
from gan_dist.runtime.tune import TuneRequest, tune
from gan_dist.runtime.tune_trial import Pointer, trial_run
from gan_dist.sample import write_samples
from helpers import tiny_config
from wandb_records import records

pytestmark = pytest.mark.ray


def base(tiny_data: str, tmp_path: Path, **overrides):
    return tiny_config(tiny_data, str(tmp_path / "unused"), **{"train.checkpoint_every": 2, "train.log_every": 2,
                                                                **overrides})


def metrics_lines(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if "loss_D" in line]


def test_a_trial_starts_its_own_run_resumes_it_and_exploits_into_a_run_of_its_own():
    assert trial_run("t1", None) == ("t1", False)
    own = Pointer("t1", "t1", "s3://b/search/trials/t1/checkpoint_000000040")
    assert trial_run("t1", own) == ("t1", False)  # a pause or an interrupted search: its newest checkpoint
    donor = Pointer("t0", "t0", "/r/search/trials/t0/checkpoint_000000060")
    assert trial_run("t1", donor) == ("t1-from-t0-60", True)


@pytest.mark.slow
def test_asha_stops_the_weak_trial_and_the_best_checkpoint_serves_sample(ray_cluster, tiny_data, tmp_path):
    request = TuneRequest(base(tiny_data, tmp_path, **{"log.wandb": "offline"}), ["train.lr_g=grid(2e-4,1e-9)"],
                          metric="lr_G", mode="max", scheduler="asha", concurrent=1, budget_steps=6, grace_steps=2,
                          storage=str(tmp_path), name="search")
    outcome = tune(request)

    rows = {row.config["train.lr_g"]: row for row in outcome.rows}
    strong, weak = rows["2e-4"], rows["1e-9"]
    assert (strong.status, strong.steps, strong.trained) == ("finished", 6, 6)
    assert (weak.status, weak.steps, weak.trained) == ("stopped early", 2, 2)  # stopped at its first rung
    assert outcome.best.trial == strong.trial and outcome.best.best == pytest.approx(2e-4)

    search = tmp_path / "search"
    assert {p.name for p in search.iterdir()} >= {"results.csv", "results.md", "metric.png", "trials"}
    assert checkpoint.is_complete(outcome.best.best_checkpoint)
    assert len(write_samples(outcome.best.best_checkpoint, 4, str(tmp_path / "samples"))) == 4
    # a W&B run per trial in the search's group (the stopped trial's was killed before W&B wrote its file out)
    wandb_file = next((search / "trials" / strong.trial / "wandb").glob("offline-run-*/run-*.wandb"))
    run = next(r.run for r in records(wandb_file) if r.WhichOneof("record_type") == "run")
    assert (run.run_group, run.display_name) == ("search", strong.trial)


@pytest.mark.slow
def test_pbt_continues_a_weak_trial_from_the_strong_ones_state_at_its_perturbed_rate(ray_cluster, tiny_data,
                                                                                      tmp_path):
    """lr_D decides the ranks; lr_G is drawn at random and perturbed: the exploiting trial's run starts from the
    donor's checkpoint (its steps go on from there) and trains at the trial's new lr_G, not the donor's. 30 steps, so
    the two trials run side by side for several of PBT's decisions even when one starts seconds after the other."""
    request = TuneRequest(base(tiny_data, tmp_path), ["train.lr_d=grid(4e-4,1e-9)",
                                                      "train.lr_g=loguniform(1e-5,1e-3)"],
                          metric="lr_D", mode="max", scheduler="pbt", trials=1, concurrent=2, budget_steps=30,
                          perturb_steps=2, storage=str(tmp_path), name="search")
    outcome = tune(request)

    trials, exploited = tmp_path / "search" / "trials", 0
    for row in outcome.rows:
        assert row.steps == 30
        runs = sorted(trials.glob(f"{row.trial}-from-*"), key=lambda run: int(run.name.rsplit("-", 1)[1]))
        if not runs:
            continue
        exploited += 1
        donor, step = runs[-1].name.split("-from-")[1].rsplit("-", 1)
        lines = metrics_lines(runs[-1])
        assert lines[0]["step"] == int(step) + 2  # it went on from the donor's step
        # at the values Tune gave the trial, not the donor's rate, which came with the donor's optimizer state
        assert (lines[0]["lr_G"], lines[0]["lr_D"]) == pytest.approx(
            (row.config["train.lr_g"], float(row.config["train.lr_d"])))
        assert lines[0]["lr_G"] != pytest.approx(metrics_lines(trials / donor)[0]["lr_G"])
    assert exploited, "PBT never exploited"


@pytest.mark.parametrize("args, message", [
    (["--space", "train.lr_x=uniform(0,1)", "--metric", "fid"], "unknown config key 'train.lr_x'"),
    (["--space", "train.lr_g=normal(0,1)", "--metric", "fid"], "bad --space train.lr_g=normal"),
    (["--space", "train.lr_g=uniform(1e-4,1e-3)", "--metric", "nope"], "--metric nope is not logged"),
    (["--space", "train.lr_g=uniform(1e-4,1e-3)", "--metric", "fid", "--set", "eval.features=off"],
     "--metric fid is measured by evaluation during training, which this config does not run"),
    (["--space", "train.lr_g=uniform(1e-4,1e-3)", "--metric", "lr_G", "--workers-per-trial", "8"],
     "--workers-per-trial 8 needs 8 CPU(s) and the Ray cluster has 4"),
    (["--space", "model.g_channels=choice(8,16)", "--metric", "lr_G", "--scheduler", "pbt"],
     "PBT changes the values of running trials"),
    (["--space", "train.lr_g=uniform(1e-4,1e-3)", "--metric", "lr_G", "--set", "eval.every=5"],
     "gan-dist tune evaluates at each checkpoint"),
    (["--space", "train.lr_g=uniform(1e-4,1e-3)", "--metric", "lr_G", "--resume"], "no search 'search' to resume"),
])
def test_bad_input_is_one_line_before_any_trial(ray_cluster, tiny_data, tmp_path, capsys, args, message):
    code = main(["tune", *args, *TINY, "--data", tiny_data, "--storage", str(tmp_path), "--name", "search"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "search").exists()  # nothing started, nothing written


def test_an_existing_search_is_not_started_again(ray_cluster, tiny_data, tmp_path, capsys):
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "results.csv").write_text("trial\n")
    code = main(["tune", "--space", "train.lr_g=uniform(1e-4,1e-3)", "--metric", "lr_G", "--data", tiny_data,
                 "--storage", str(tmp_path), "--name", "search"])
    assert code == 2 and "search 'search' already exists" in capsys.readouterr().err
    assert (tmp_path / "search" / "results.csv").read_text() == "trial\n"


TINY = ["--set", "model.z_dim=8", "--set", "model.g_channels=8", "--set", "model.d_channels=8",
        "--set", "train.batch_size=8", "--set", "model.conditional=false"]


KILL_THE_SECOND_TRIALS_WORKER = """
import glob, os, signal, sys, time

def title(pid):
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:  # gone meanwhile
        return b""

trials, deadline = sys.argv[1], time.monotonic() + 300
while time.monotonic() < deadline:
    runs = sorted(glob.glob(trials + "/*"))
    if len(runs) == 2 and os.path.exists(runs[0] + "/checkpoint_000000100") and glob.glob(runs[1] + "/checkpoint_0*"):
        workers = [pid for pid in os.listdir("/proc") if pid.isdigit() and pid != str(os.getpid())
                   and title(pid).startswith(b"ray::RayTrainWorker")]
        for pid in workers:
            os.kill(int(pid), signal.SIGKILL)
        sys.exit(0 if workers else 2)
    time.sleep(0.1)
sys.exit(1)
"""


@pytest.mark.slow
def test_a_resumed_search_reruns_no_finished_trial_and_resumes_the_failed_one(ray_cluster, tiny_data, tmp_path):
    """The second trial's worker is killed once the first trial has finished and the second has a checkpoint (a lost
    node); --resume then finishes the second from its newest checkpoint and leaves the first as it was. (Ctrl-C
    leaves the running trial to --resume in the same way; Tune answers the signal only between its own steps.)"""
    request = TuneRequest(base(tiny_data, tmp_path), ["train.lr_g=grid(2e-4,1e-4)"], metric="lr_G", mode="max",
                          scheduler="none", concurrent=1, budget_steps=100, storage=str(tmp_path), name="search")
    trials = tmp_path / "search" / "trials"
    # Another process watches and kills: while Tune waits on a trial, this process's other threads hardly run.
    killer = subprocess.Popen([sys.executable, "-c", KILL_THE_SECOND_TRIALS_WORKER, str(trials)])
    outcome = tune(request)
    assert killer.wait(timeout=60) == 0
    assert [row.status.split(":")[0] for row in outcome.rows] == ["finished", "error"]
    first, second = sorted(trials.glob("*"))
    kept = {path: path.stat().st_mtime_ns for path in first.rglob("*")}
    before = metrics_lines(second)

    resumed = tune(dataclasses.replace(request, resume=True))
    assert [row.status for row in resumed.rows] == ["finished", "finished"]
    assert {path: path.stat().st_mtime_ns for path in first.rglob("*")} == kept  # not run again
    after = metrics_lines(second)[len(before):]
    assert before[-1]["step"] < 100 and after[-1]["step"] == 100
    assert 2 < after[0]["step"] <= before[-1]["step"] + 2  # on from its newest checkpoint, not from the start
