"""The driver side of `gan-dist tune`: check everything a trial could be refused for, in one line, before any trial
starts; then Ray Tune runs the trials (runtime/tune_trial.py), ASHA or PBT deciding at their checkpoints, and the
results go to the search's folder (tune_results.py). Layout under STORAGE/NAME: Tune's experiment state and trial
folders, `trials/` (each trial's gan-dist runs), results.csv, results.md, metric.png."""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import ray
import ray.tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining, TrialScheduler

from gan_dist import storage, tune_results
from gan_dist.config import Config, DataConfig, override_config
from gan_dist.data.placement import built_in
from gan_dist.errors import UserError
from gan_dist.runtime.launch import manifests, open_datasets
from gan_dist.runtime.ray_backend import start_ray
from gan_dist.runtime.tune_trial import CHECKPOINT_KEY, EXPLOITED_KEY, RUN_KEY, STARTED_KEY, run_trial
from gan_dist.search_space import LISTS, Space, Spec, grid_only, parse_space
from gan_dist.train.loop import logged_metrics
from gan_dist.train.tasks import task_class

SCHEDULERS = ("asha", "pbt", "none")
TRIALS_DIR = "trials"
ASHA_REDUCTION = 3  # ASHA keeps the best third at each rung (Li et al. 2020 use 3 or 4)
RANDOM_TRIALS = 8  # --trials when a space draws at random and none is given
# The trial actor only waits on its TorchTrainer, whose workers reserve the CPUs and GPUs; Tune refuses an empty
# request, and a sliver of a CPU would leave a node one whole CPU short of a trial's workers: memory it uses.
TRIAL_ACTOR = {"CPU": 0, "memory": 512 * 2**20}
EXPERIMENT_STATE = "tuner.pkl"  # what Tune writes first into a search's folder: a search lives there


@dataclass
class TuneRequest:
    """What the command line asks for (`base`: the preset, --set and data flags, as `gan-dist train` reads them)."""

    base: Config
    space: list[str]
    metric: str
    mode: str = "min"
    scheduler: str = "asha"
    trials: int | None = None
    workers_per_trial: int = 1
    gpu: bool = False
    budget_steps: int | None = None
    storage: str = "runs"
    name: str | None = None
    resume: bool = False
    address: str | None = None
    concurrent: int | None = None
    grace_steps: int | None = None
    perturb_steps: int | None = None


@dataclass
class TuneOutcome:
    experiment_uri: str
    rows: list[tune_results.Row]
    best: tune_results.Row | None
    written: list[str]
    unfinished: int  # trials an interrupted search (Ctrl-C) left running, for --resume


def trial_base(request: TuneRequest, experiment_uri: str, name: str) -> Config:
    """Every trial's config before its drawn values: the run on --workers-per-trial Ray workers for the budget, its
    runs under the search's trials/, evaluated inline at each checkpoint (the reports the scheduler decides at), the
    best checkpoint by the metric kept, W&B runs grouped by the search."""
    cfg = request.base
    if cfg.eval.where == "ray":
        raise UserError("gan-dist tune evaluates inline, at each checkpoint (the scheduler decides on its reports); "
                        "drop eval.where=ray")
    if cfg.eval.every not in (0, cfg.train.checkpoint_every):
        raise UserError(f"gan-dist tune evaluates at each checkpoint (the scheduler decides on its reports), not "
                        f"every eval.every={cfg.eval.every} steps; drop eval.every and set train.checkpoint_every")
    data = {f"data.{DataConfig.KEYS[name]}": storage.absolute_uri(path) for name, path in cfg.dataset_paths().items()
            if path and not built_in(path)}
    return override_config(cfg, {
        **data, "train.steps": request.budget_steps or cfg.train.steps, "eval.where": "inline", "eval.every": 0,
        "run.backend": "ray", "run.num_workers": request.workers_per_trial, "run.gpu": request.gpu,
        "run.ray_address": None, "run.storage": storage.join(experiment_uri, TRIALS_DIR), "run.name": None,
        "run.resume": True, "run.resume_from": None, "run.keep_best": request.metric,
        "run.keep_best_mode": request.mode, "log.wandb_group": name})


def check_metric(cfg: Config, metric: str) -> None:
    """The metric is one the trials log; when evaluation would log it but is off, say so."""
    given = manifests(open_datasets(cfg))
    logged = logged_metrics(cfg, given)
    if metric in logged:
        return
    task = task_class(cfg)
    evaluated = task.measured(override_config(cfg, {"eval.features": "inception"}), given)
    if metric in evaluated:
        raise UserError(f"--metric {metric} is measured by evaluation during training, which this config does not "
                        f"run (eval.features={cfg.eval.features}); pass --set eval.features=domain (a labeled "
                        f"dataset) or eval.features=inception")
    raise UserError(f"--metric {metric} is not logged by these trials; choose one of: {', '.join(logged)}")


def check_steps(cfg: Config, request: TuneRequest) -> None:
    t, budget = cfg.train, cfg.train.steps
    if t.checkpoint_every > budget:
        raise UserError(f"train.checkpoint_every={t.checkpoint_every} is beyond the budget of {budget} steps: trials "
                        f"report at checkpoints; lower it")
    for flag, steps in (("--grace-steps", request.grace_steps), ("--perturb-steps", request.perturb_steps)):
        if steps is not None and steps > budget:
            raise UserError(f"{flag} {steps} is beyond --budget-steps {budget}; lower it")


def experiment_name(request: TuneRequest, root: str) -> str:
    if request.name:
        return request.name
    prefix = f"tune-{request.base.preset}-"
    if request.resume:
        found = sorted((n for n in storage.list_dir(root) if n.startswith(prefix)
                        and storage.exists(storage.join(root, n, EXPERIMENT_STATE))), reverse=True)
        if found:
            return found[0]
        raise UserError(f"no search of {request.base.preset} in {root} to resume; pass --name")
    return prefix + time.strftime("%Y%m%d-%H%M%S")


def check_experiment(experiment_uri: str, name: str, resume: bool) -> None:
    held = storage.exists(experiment_uri) and bool(storage.list_dir(experiment_uri))
    if resume and not storage.exists(storage.join(experiment_uri, EXPERIMENT_STATE)):
        raise UserError(f"no search '{name}' to resume at {experiment_uri}; drop --resume to start it")
    if held and not resume:
        raise UserError(f"search '{name}' already exists at {experiment_uri}; pass --resume to continue it, or --name "
                        f"for a new one")


def check_room(request: TuneRequest, cpus_per_worker: float) -> int:
    """One trial's workers fit the cluster; how many trials run at once (--concurrent, or as many as fit)."""
    resource, each = ("GPU", 1.0) if request.gpu else ("CPU", cpus_per_worker)
    have = ray.cluster_resources().get(resource, 0)
    need = request.workers_per_trial * each
    if need > have:
        raise UserError(f"--workers-per-trial {request.workers_per_trial} needs {need:g} {resource}(s) and the Ray "
                        f"cluster has {have:g}; lower --workers-per-trial or add nodes")
    # A local Ray counts more CPUs than the machine has (room for Ray Data's tasks): trials at once fit its cores.
    room = have if request.address or resource == "GPU" else min(have, os.cpu_count() or 1)
    return request.concurrent or max(1, int(room // need))


def domain(spec: Spec) -> Any:
    if spec.kind == "loguniform":
        return ray.tune.loguniform(spec.low, spec.high)
    if spec.kind == "uniform":
        return ray.tune.uniform(spec.low, spec.high)
    values = list(spec.values)
    return ray.tune.grid_search(values) if spec.kind == "grid" else ray.tune.choice(values)


def scheduler(request: TuneRequest, cfg: Config, space: Space) -> TrialScheduler:
    """ASHA and PBT both keep time in steps: a trial's reports come at its checkpoints."""
    every = cfg.train.checkpoint_every
    if request.scheduler == "asha":
        return ASHAScheduler(time_attr="step", max_t=cfg.train.steps, grace_period=request.grace_steps or every,
                             reduction_factor=ASHA_REDUCTION)
    if request.scheduler == "pbt":
        mutations = {key: list(spec.values) if spec.kind in LISTS else domain(spec) for key, spec in space.items()}
        return PopulationBasedTraining(time_attr="step", perturbation_interval=request.perturb_steps or every,
                                       hyperparam_mutations=mutations)
    return FIFOScheduler()


def tune(request: TuneRequest) -> TuneOutcome:
    if request.scheduler not in SCHEDULERS:
        raise UserError(f"--scheduler {request.scheduler}: choose {', '.join(SCHEDULERS)}")
    root = storage.absolute_uri(request.storage)
    storage.check_output_dir(root, "--storage")
    name = experiment_name(request, root)
    experiment_uri = storage.join(root, name)
    cfg = trial_base(request, experiment_uri, name)
    space = parse_space(request.space, cfg, retunable_only=request.scheduler == "pbt")
    if not space:
        raise UserError("give at least one --space KEY=SPEC, e.g. --space train.lr_g=loguniform(1e-5,1e-3)")
    if request.scheduler == "pbt" and grid_only(space):
        raise UserError("PBT perturbs values it can draw again: give it a range or choice, not only grid(...)")
    check_metric(cfg, request.metric)
    check_steps(cfg, request)
    with storage.user_errors(experiment_uri, "read the search at"):
        check_experiment(experiment_uri, name, request.resume)
    start_ray(request.address, request.workers_per_trial, request.gpu, cfg.run.cpus_per_worker, dashboard=True)
    concurrent = check_room(request, cfg.run.cpus_per_worker)
    trials = request.trials or (1 if grid_only(space) else RANDOM_TRIALS)
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(run_trial, base=cfg.model_dump(), space=space), TRIAL_ACTOR)
    per_point = " per grid point" if any(spec.kind == "grid" for spec in space.values()) else ""
    print(f"search '{name}': {len(space)} key(s), {trials} trial(s){per_point}, {request.scheduler}, {request.workers_per_trial} worker(s) per trial, up to {concurrent} at once, "
          f"{cfg.train.steps} steps each; output in {experiment_uri}", flush=True)
    if request.resume:
        tuner = ray.tune.Tuner.restore(experiment_uri, trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = ray.tune.Tuner(
            trainable, param_space={key: domain(spec) for key, spec in space.items()},
            tune_config=ray.tune.TuneConfig(metric=request.metric, mode=request.mode, num_samples=trials,
                                            scheduler=scheduler(request, cfg, space),
                                            max_concurrent_trials=concurrent),
            # Stopped at the budget before a scheduler sees the result: PBT would otherwise exploit a finished trial.
            run_config=ray.tune.RunConfig(name=name, storage_path=root, stop={"step": cfg.train.steps}, verbose=1))
    tuner.fit()
    # Read back as saved: after Ctrl-C, fit() returns with the trials it was running marked ended in memory, while
    # the saved state (what --resume continues) keeps them running.
    saved = ray.tune.ExperimentAnalysis(experiment_uri)
    ended = {trial.trial_id: trial.status in ("TERMINATED", "ERROR") for trial in saved.trials}
    records = [trial_record(result, request.metric, ended) for result in ray.tune.ResultGrid(saved)]
    unfinished = sum(not record.ended for record in records)
    rows = [tune_results.summarize(record, request.mode, cfg.train.steps) for record in records]
    best = tune_results.best_row(rows, request.mode)
    title = f"{name}: {request.metric} ({request.mode}) by trial, {request.scheduler}"
    written = tune_results.write(experiment_uri, records, rows, list(space), request.metric, title)
    return TuneOutcome(experiment_uri, rows, best, written, unfinished)


def trial_record(result: Any, metric: str, ended: dict[str, bool]) -> tune_results.TrialRecord:
    """A Tune result as plain data: every report the trial made, in order."""
    frame = result.metrics_dataframe
    reports = []
    for row in ([] if frame is None else frame.to_dict("records")):
        if RUN_KEY not in row or not isinstance(row.get(RUN_KEY), str):
            continue
        value = row.get(metric)
        reports.append(tune_results.Report(
            step=int(row["step"]), images_seen=int(row["images_seen"]),
            value=None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value),
            run=row[RUN_KEY], checkpoint=row[CHECKPOINT_KEY], started_at=int(row[STARTED_KEY]),
            exploited=row.get(EXPLOITED_KEY) or None))
    error = None
    if result.error is not None:
        lines = [line.strip() for line in str(result.error).splitlines() if line.strip()]
        error = (lines[-1] if lines else type(result.error).__name__)[:200]
    trial = (result.metrics or {}).get("trial_id") or os.path.basename(result.path.rstrip("/"))
    return tune_results.TrialRecord(trial, dict(result.config or {}), reports, error, ended.get(trial, True))


def print_outcome(outcome: TuneOutcome, metric: str, name: str | None) -> None:
    """The table, the files, the best checkpoint; an interrupted search ends as one line saying how to go on."""
    print(tune_results.table_markdown(outcome.rows, list(outcome.rows[0].config) if outcome.rows else [], metric),
          end="")
    for uri in outcome.written:
        print(f"wrote {uri}")
    if outcome.best is None:
        print(f"no trial reported {metric}", file=sys.stderr)
    else:
        print(f"best: trial {outcome.best.trial}, {metric} {outcome.best.best:.4g} at step {outcome.best.best_step}: "
              f"{outcome.best.best_checkpoint}")
    if outcome.unfinished:
        search = os.path.basename(outcome.experiment_uri.rstrip("/"))
        raise UserError(f"search '{search}' was interrupted with {outcome.unfinished} trial(s) unfinished; its state is "
                        f"saved: run the same command with --resume{'' if name else f' --name {search}'} to finish it")
