"""`gan-dist report RUN`: loss and metric curves from a run's metrics.jsonl, drawn to one PNG."""

from __future__ import annotations

import io
import json
import sys
from typing import NamedTuple

import pyarrow.fs as pafs

from gan_dist import storage
from gan_dist.errors import UserError
from gan_dist.tracking import LANDED_STEP, METRICS_FILE

PANELS = (
    ("losses (penalty_D: D's regularizers)", ("loss_D", "loss_G", "penalty_D"), False),
    ("discriminator outputs, augmentation p", ("D_real", "D_fake", "augment_p"), False),
    ("gradient norms", ("grad_norm_D", "grad_norm_G"), True),
    ("throughput (img/s)", ("img_per_s",), False),
    ("evaluation: FID (lower is better)", ("fid", "a2b_fid", "b2a_fid"), False),
    # generation's verdicts; translation's and completion's share of images keeping their class
    ("evaluation: domain classifier", ("confident", "coverage", "agreement", "a2b_labels", "b2a_labels", "labels"),
     False),
)


class RunMetrics(NamedTuple):
    rows: list[dict]  # one metric record per step, by step
    events: list[dict]  # restores and skipped updates, by step
    skipped: int  # lines that are not a JSON record with a step


def _record(line: str) -> dict | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) and isinstance(row.get("step"), int) else None


def panel_curves(metrics: RunMetrics) -> list[tuple[str, dict[str, list[tuple[int, float]]], bool]]:
    """Per panel: its title, the (step, value) points of each of its keys the run logged, and its log scale."""
    return [(title, {key: points for key in keys if (points := [(r["step"], r[key]) for r in metrics.rows
                                                                  if key in r])}, log_scale)
            for title, keys, log_scale in PANELS]


def read_metrics(run_uri: str) -> RunMetrics:
    """A run's metrics.jsonl as the report draws it. A run killed mid-write leaves a torn line: skipped and counted.
    A resumed run logs again the steps after its checkpoint: for each step the record written last wins, but an
    evaluation that landed after its step (LANDED_STEP) adds its numbers to that step's record."""
    uri = storage.join(run_uri, METRICS_FILE)
    storage.check_bucket(run_uri)
    fs, path = storage.resolve(run_uri)
    with storage.user_errors(run_uri, "read"):
        kind = fs.get_file_info(path).type
        if kind == pafs.FileType.NotFound:
            raise UserError(f"no run at {run_uri}; pass a run directory (e.g. runs/NAME)")
        if kind == pafs.FileType.File:
            raise UserError(f"{run_uri} is a file, not a run directory; pass a run directory (e.g. runs/NAME)")
        try:
            lines = storage.read_bytes(uri).decode(errors="replace").splitlines()
        except FileNotFoundError:
            raise UserError(f"no {METRICS_FILE} in {run_uri}; pass a run directory (e.g. runs/NAME)") from None
    records = [_record(line) for line in lines if line.strip()]
    rows: dict[int, dict] = {}
    for r in (r for r in records if r is not None and "event" not in r):  # later records supersede
        rows[r["step"]] = {**rows.get(r["step"], {}), **r} if LANDED_STEP in r else r
    events = sorted((r for r in records if r is not None and "event" in r), key=lambda r: r["step"])
    return RunMetrics([rows[step] for step in sorted(rows)], events, records.count(None))


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_png(uri: str) -> bool:
    """By its first bytes, not its name: a metrics file renamed .png is still not ours to replace."""
    fs, path = storage.resolve(uri)
    with storage.user_errors(uri, "read"), fs.open_input_stream(path) as head:
        return head.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE


def curves_target(run_uri: str, out: str | None) -> str:
    """Where the PNG goes, checked writable: RUN/curves.png, or --out, or inside --out when that is a folder
    (like cp). Only a PNG is replaced: any other file there (metrics, a manifest, notes) is someone's data."""
    if out is None:
        target, flag = storage.join(run_uri, "curves.png"), "--out (default)"
    else:
        storage.check_bucket(out)  # a missing bucket is named as such, before looking inside it
        folder = out.endswith("/") or storage.is_folder(out)
        target, flag = (storage.join(out, "curves.png") if folder else out), "--out"
        if not target.lower().endswith(".png"):
            raise UserError(f"--out {out}: the curves are a PNG; pass a path ending in .png or a folder")
    if storage.check_output_file(target, flag) and not _is_png(target):
        raise UserError(f"{flag} {target} is a file that is not a PNG, and writing the curves would replace it; "
                        f"pass a new .png path or a folder")
    return target


def draw_curves(run_uri: str, out: str | None = None) -> str:
    """Write the curves PNG (default RUN/curves.png) and return where it went."""
    metrics = read_metrics(run_uri)
    skipped = f"{metrics.skipped} unreadable line{'s' if metrics.skipped > 1 else ''} skipped"
    if not metrics.rows:
        raise UserError(f"{run_uri} has no metrics yet{f' ({skipped})' if metrics.skipped else ''}; "
                        f"it logs every train.log_every steps")
    target = curves_target(run_uri, out)
    if metrics.skipped:  # the rest of the run is still drawn
        print(f"warning: {skipped} in {storage.join(run_uri, METRICS_FILE)} (a write cut short, e.g. by a killed "
              f"run)", file=sys.stderr)

    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(3, 2, figsize=(11, 10.5), constrained_layout=True)
    for axis, (title, curves, log_scale) in zip(axes.flat, panel_curves(metrics)):
        for key, points in curves.items():
            axis.plot(*zip(*points), label=key, linewidth=1.2)
        for event in metrics.events:  # restores and skipped updates, where they happened
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
    storage.write_bytes(target, buffer.getvalue())
    return target
