"""`gan-dist report RUN`: loss and metric curves from a run's metrics.jsonl, drawn to one PNG."""

from __future__ import annotations

import io
import json

from gan_dist.errors import UserError
from gan_dist.runtime import storage
from gan_dist.tracking import METRICS_FILE

PANELS = (
    ("losses", ("loss_D", "loss_G"), False),
    ("discriminator outputs", ("D_real", "D_fake"), False),
    ("gradient norms", ("grad_norm_D", "grad_norm_G"), True),
    ("throughput (img/s)", ("img_per_s",), False),
)


def read_metrics(run_uri: str) -> tuple[list[dict], list[dict]]:
    """(metric rows, event rows) of a run, in the order they were written."""
    uri = storage.join(run_uri, METRICS_FILE)
    try:
        lines = storage.read_bytes(uri).decode().splitlines()
    except FileNotFoundError:
        raise UserError(f"no {METRICS_FILE} in {run_uri}; pass a run directory (e.g. runs/NAME)") from None
    rows = [json.loads(line) for line in lines if line.strip()]
    return [r for r in rows if "event" not in r], [r for r in rows if "event" in r]


def draw_curves(run_uri: str, out: str | None = None) -> str:
    """Write the curves PNG (default RUN/curves.png) and return where it went."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    rows, events = read_metrics(run_uri)
    if not rows:
        raise UserError(f"{run_uri} has no metrics yet; it logs every train.log_every steps")
    figure, axes = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
    for axis, (title, keys, log_scale) in zip(axes.flat, PANELS):
        for key in keys:
            points = [(r["step"], r[key]) for r in rows if key in r]
            if points:
                axis.plot(*zip(*points), label=key, linewidth=1.2)
        for event in events:  # restores and skipped updates, where they happened
            axis.axvline(event["step"], color="red", linestyle=":", linewidth=0.8)
        axis.set_title(title)
        axis.set_xlabel("step")
        if log_scale:
            axis.set_yscale("log")
        if axis.lines:
            axis.legend(loc="best", fontsize=8)
    figure.suptitle(storage.join(run_uri).rstrip("/").rsplit("/", 1)[-1])
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    target = out or storage.join(run_uri, "curves.png")
    storage.write_bytes(target, buffer.getvalue())
    return target
