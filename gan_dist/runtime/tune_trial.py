"""One `gan-dist tune` trial, run by Ray Tune in a trial actor: an ordinary multi-worker `gan-dist train` run (a
TorchTrainer) whose checkpoint reports reach Tune as results, each with a small Tune checkpoint that points at the
gan-dist checkpoint it is about.

How Tune and Train V2 compose (Ray 2.60): the trial is a function trainable that builds a TorchTrainer and calls
fit(). A Train callback's `after_report` runs in Train's controller with rank 0's metrics and the reported checkpoint;
Ray's own TuneReportCallback forwards only metrics (the checkpoint's path as one of them), but schedulers that move
state between trials (PBT) need Tune checkpoints. So fit() runs in a thread, a callback puts each report on a queue,
and the trial's own thread reports it to Tune with a pointer checkpoint: Tune stores a few bytes, the nets stay in
the run's storage (no copy), and a trial Tune restores reads the pointer to find the state to load."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import threading
from dataclasses import dataclass
from typing import Any

import ray.tune
from ray.train.v2.api.callback import UserCallback
from ray.util.queue import Queue

from gan_dist import checkpoint, storage
from gan_dist.config import Config, config_from_dict, override_config
from gan_dist.errors import UserError
from gan_dist.runtime.launch import train
from gan_dist.search_space import Spec

POINTER_FILE = "gan_dist_checkpoint.json"
# In every result besides the run's metrics: the gan-dist run and checkpoint, the step that run started from and
# the trial whose checkpoint it started from when PBT made it exploit one ("" otherwise).
RUN_KEY, CHECKPOINT_KEY, STARTED_KEY, EXPLOITED_KEY = "trial_run", "checkpoint_uri", "started_at_step", "exploited"
_FINISHED = "finished"


@dataclass(frozen=True)
class Pointer:
    """What a Tune checkpoint of a trial holds: the trial that wrote it, its gan-dist run and checkpoint."""

    trial: str
    run: str
    checkpoint: str

    @property
    def step(self) -> int:
        return checkpoint.step_of(self.checkpoint)


def read_pointer(saved: ray.tune.Checkpoint | None) -> Pointer | None:
    if saved is None:
        return None
    with saved.as_directory() as directory, open(os.path.join(directory, POINTER_FILE)) as file:
        return Pointer(**json.load(file))


def copy_donor(trial: str, pointer: Pointer, runs_uri: str) -> Pointer:
    """A PBT exploit: the donor's checkpoint copied into this trial's new run, which then resumes from its own copy.
    The donor trains on and its retention deletes old checkpoints: one deleted before (or while) it is copied stands
    for the donor run's newest complete checkpoint, the same strong trial a little further on."""
    donor_run = os.path.dirname(pointer.checkpoint.rstrip("/"))
    source = pointer.checkpoint
    for _ in range(3):
        donor = dataclasses.replace(pointer, checkpoint=source)
        run_uri = storage.join(runs_uri, trial_run(trial, donor)[0])
        try:
            if not checkpoint.list_checkpoints(run_uri):  # else copied by an earlier start of this trial
                checkpoint.copy(source, run_uri)
            return donor
        except checkpoint.CorruptCheckpoint:
            source = checkpoint.latest_complete(donor_run) or source
    raise UserError(f"PBT handed trial {trial} the checkpoint {pointer.checkpoint}, which its run deleted before it "
                    f"could be copied; keep more checkpoints (--set run.keep_checkpoints=...)")


def trial_run(trial: str, pointer: Pointer | None) -> tuple[str, bool]:
    """The gan-dist run this start of `trial` trains, resumed exactly from its newest checkpoint: its own run again
    after a pause or an interruption, or, when PBT hands it another trial's checkpoint, a run of its own named after
    that checkpoint (so an interrupted one resumes rather than starting over), which starts from a copy of it; and
    whether it is such an exploit."""
    if pointer is None:
        return trial, False
    if pointer.trial == trial:
        return pointer.run, False
    return f"{trial}-from-{pointer.trial}-{pointer.step}", True


class ForwardReports(UserCallback):
    """In Train's controller: each checkpoint report of rank 0 onto the trial's queue, with the controller's handle
    (the trial ends the run through it when Tune stops the trial)."""

    def __init__(self, queue: Queue):
        self.queue = queue

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if checkpoint is not None:
            self.queue.put((metrics[0], checkpoint.path, ray.get_runtime_context().current_actor))


def trial_config(base: Config, drawn: dict[str, Any], space: dict[str, Spec], run: str) -> Config:
    overrides = {key: space[key].override(value) for key, value in drawn.items()}
    overrides.update({"run.name": run, "run.resume": True})
    return override_config(base, overrides)


def run_trial(drawn: dict[str, Any], base: dict[str, Any], space: dict[str, Spec]) -> None:
    """The trainable: `drawn` the values Tune drew for this trial (PBT changes them between starts)."""
    trial = ray.tune.get_context().get_trial_id()
    base_cfg = config_from_dict(base)
    pointer = read_pointer(ray.tune.get_checkpoint())
    if pointer is not None and pointer.trial != trial:
        pointer = copy_donor(trial, pointer, base_cfg.run.storage)
    run, exploit = trial_run(trial, pointer)
    origin = {STARTED_KEY: pointer.step if pointer else 0, EXPLOITED_KEY: pointer.trial if exploit else ""}
    cfg = trial_config(base_cfg, drawn, space, run)
    run_uri = storage.join(cfg.run.storage, run)
    reports = Queue(maxsize=1, actor_options={"num_cpus": 0})
    failure: list[BaseException] = []

    def fit() -> None:
        try:
            train(cfg, callbacks=[ForwardReports(reports)])
        except BaseException as exc:  # noqa: BLE001 - raised again in the trial's thread, which Tune watches
            failure.append(exc)
        reports.put(_FINISHED)

    # A daemon: when Tune stops the trial, the actor exits without waiting for it (the run is ended below).
    threading.Thread(target=fit, name="gan-dist-trial-fit", daemon=True).start()
    last = None
    while (item := reports.get()) != _FINISHED:
        metrics, path, controller = item
        if metrics["step"] >= cfg.train.steps:
            last = metrics, path  # Tune stops a trial at its last step: reported once the run has freed its workers
            continue
        try:
            _report(trial, run, run_uri, origin, metrics, path)
        except BaseException:
            # Tune stops or pauses a trial by ending this thread in report(). The run's workers would train on, into
            # the run folder a restarted trial resumes from, until the actor exits: end the run now.
            ray.kill(controller)
            raise
    if failure:
        raise failure[0]
    last = last or _finished_before(run_uri, cfg.train.steps)
    if last is not None:
        _report(trial, run, run_uri, origin, *last)


def _finished_before(run_uri: str, budget: int) -> tuple[dict[str, Any], str] | None:
    """The report of a run that reached its budget before its trial was restarted (its last report never reached
    Tune): resumed, it has nothing left to train, and its last checkpoint still has to reach Tune."""
    newest = checkpoint.latest_complete(run_uri)
    if newest is None or checkpoint.step_of(newest) < budget:
        return None
    return checkpoint.reported_metrics(checkpoint.load_meta(newest)), newest


def _report(trial: str, run: str, run_uri: str, origin: dict[str, Any], metrics: dict[str, Any], path: str) -> None:
    uri = storage.join(run_uri, os.path.basename(path.rstrip("/")))  # Ray's path drops an s3:// scheme
    with tempfile.TemporaryDirectory(prefix="gan-dist-pointer-") as directory:
        with open(os.path.join(directory, POINTER_FILE), "w") as file:
            json.dump(vars(Pointer(trial, run, uri)), file)
        ray.tune.report({**metrics, RUN_KEY: run, CHECKPOINT_KEY: uri, **origin},
                        checkpoint=ray.tune.Checkpoint.from_directory(directory))
