"""Where a run starts from: its newest checkpoint that loads (older ones standing in for damaged ones), or
--resume-from's, loaded into the task, this rank's RNG and the data positions."""

from __future__ import annotations

from gan_dist import checkpoint as ckpt
from gan_dist.config import Config
from gan_dist.errors import UserError
from gan_dist.train import rng
from gan_dist.train.context import WorkerContext
from gan_dist.train.state import TrainState
from gan_dist.train.task import Task


def restore(task: Task, ctx: WorkerContext, checkpoint: str) -> TrainState:
    """Load a checkpoint into the task and this rank's RNG; every rank reads the same files."""
    saved = ckpt.load_state(checkpoint, ctx.device)
    try:
        task.load_state_dict(saved)
        rng.restore(saved.get("rng", []), ctx.rank)
        ranks = saved.get("ranks", [])  # a resume on more workers starts the extra ranks' state afresh
        task.load_rank_state(ranks[ctx.rank] if ctx.rank < len(ranks) else {})
        return TrainState.from_dict(saved["train"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # loads, but is not this task's state
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ckpt.CorruptCheckpoint(f"{checkpoint}: state.pt does not hold this run's nets and optimizers "
                                     f"({detail})") from None


def restore_newest(task: Task, ctx: WorkerContext, cfg: Config,
                   skipped: list[str]) -> tuple[str, TrainState] | None:
    """The run's newest checkpoint that loads, older ones standing in for any that do not (each one's reason
    goes to `skipped`); for a run that has none yet, --resume-from's. Corruption is in the bytes, so every rank
    skips the same checkpoints and they all restore the same one."""
    for uri in ckpt.newest_first(ctx.run_uri, ctx.latest_checkpoint()):
        try:
            return uri, restore(task, ctx, uri)
        except ckpt.CorruptCheckpoint as exc:
            skipped.append(str(exc))
    if skipped:  # starting over would overwrite checkpoints that a person may still be able to repair
        raise UserError(f"no checkpoint of this run loads ({'; '.join(skipped)}); nothing was overwritten: "
                        f"restore or delete them, or start a new run (--name)")
    if cfg.run.resume_from:
        return cfg.run.resume_from, restore(task, ctx, cfg.run.resume_from)
    return None
