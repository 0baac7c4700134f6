"""What a `gan-dist tune` search leaves for a person: one row per trial (its hyper-parameters, best metric and
where, steps, status) as CSV and markdown, and the metric over images seen for every trial with PBT's exploits
marked. Plain data in, files out: runtime/tune.py reads Ray Tune's results into TrialRecords."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Any

from gan_dist import storage

RESULTS_CSV, RESULTS_MD, METRIC_PLOT = "results.csv", "results.md", "metric.png"


@dataclass
class Report:
    """One result a trial reported to Tune: a checkpoint of its gan-dist run `run`, which started at `started_at`
    (a step of another trial's run when PBT made it exploit one)."""

    step: int
    images_seen: int
    value: float | None
    run: str
    checkpoint: str
    started_at: int
    exploited: str | None = None  # the trial whose checkpoint this run started from


@dataclass
class TrialRecord:
    trial: str
    config: dict[str, Any]  # the drawn values the trial ended with
    reports: list[Report] = field(default_factory=list)
    error: str | None = None
    ended: bool = True  # Tune ended it (finished, stopped or failed): not left running by an interrupted search


@dataclass
class Row:
    trial: str
    config: dict[str, Any]
    best: float | None
    best_step: int | None
    best_checkpoint: str | None
    steps: int  # the newest step it reached
    trained: int  # steps it trained, over all its runs (ASHA's savings are in these)
    status: str


def _better(mode: str, a: float, b: float) -> bool:
    return a < b if mode == "min" else a > b


def summarize(record: TrialRecord, mode: str, budget: int) -> Row:
    best = None
    for report in record.reports:
        if report.value is not None and math.isfinite(report.value) and \
                (best is None or _better(mode, report.value, best.value)):
            best = report
    spans: dict[str, tuple[int, int]] = {}  # each run's first and newest step
    for report in record.reports:
        start, end = spans.get(report.run, (report.started_at, report.step))
        spans[report.run] = (min(start, report.started_at), max(end, report.step))
    trained = sum(end - start for start, end in spans.values())
    steps = record.reports[-1].step if record.reports else 0
    if record.error:
        status = f"error: {record.error}"
    else:
        status = "finished" if steps >= budget else "stopped early" if record.ended else "unfinished"
    return Row(record.trial, record.config, best and best.value, best and best.step, best and best.checkpoint,
               steps, trained, status)


def best_row(rows: list[Row], mode: str) -> Row | None:
    scored = [row for row in rows if row.best is not None]
    if not scored:
        return None
    return min(scored, key=lambda row: row.best if mode == "min" else -row.best)


def _short(value: Any) -> Any:
    return f"{value:.4g}" if isinstance(value, float) else value


def _cells(row: Row, keys: list[str], metric: str) -> dict[str, Any]:
    return {"trial": row.trial, **{key: _short(row.config.get(key)) for key in keys},
            f"best {metric}": None if row.best is None else f"{row.best:.4g}", "at step": row.best_step,
            "steps": row.steps, "steps trained": row.trained, "status": row.status,
            "best checkpoint": row.best_checkpoint}


def table_csv(rows: list[Row], keys: list[str], metric: str) -> str:
    out = io.StringIO()
    cells = [_cells(row, keys, metric) for row in rows]
    writer = csv.DictWriter(out, fieldnames=list(_cells(rows[0], keys, metric)) if rows else ["trial"])
    writer.writeheader()
    writer.writerows(cells)
    return out.getvalue()


def table_markdown(rows: list[Row], keys: list[str], metric: str) -> str:
    if not rows:
        return "no trial reported a result\n"
    cells = [_cells(row, keys, metric) for row in rows]
    header = list(cells[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("" if c[h] is None else str(c[h]) for h in header) + " |" for c in cells]
    return "\n".join(lines) + "\n"


def plot(records: list[TrialRecord], metric: str, title: str) -> bytes:
    """PNG bytes: the metric over images seen, one line per trial and run; where PBT started a trial from another
    trial's checkpoint, a dotted line from that checkpoint and a marker."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    at_step = {(record.trial, r.step): r for record in records for r in record.reports}
    for index, record in enumerate(records):
        color = f"C{index % 10}"
        runs: dict[str, list[Report]] = {}
        for report in record.reports:
            if report.value is not None:
                runs.setdefault(report.run, []).append(report)
        for number, (run, points) in enumerate(runs.items()):
            axes.plot([p.images_seen for p in points], [p.value for p in points], color=color, marker=".",
                      label=record.trial if number == 0 else None)
            first = points[0]
            donor = at_step.get((first.exploited, first.started_at)) if first.exploited else None
            if donor is not None and donor.value is not None:
                axes.plot([donor.images_seen, first.images_seen], [donor.value, first.value], color=color,
                          linestyle=":")
                axes.scatter([donor.images_seen], [donor.value], color=color, marker="*", s=120, zorder=3)
    values = [r.value for record in records for r in record.reports if r.value is not None]
    if values and min(values) > 0 and max(values) > 10 * min(values):
        axes.set_yscale("log")  # FIDs from 100 down to 1: the good trials would lie flat on a linear axis
    axes.set_xlabel("images seen")
    axes.set_ylabel(metric)
    axes.set_title(title + ("  (*: PBT exploit, from the checkpoint copied)" if any(
        r.exploited for record in records for r in record.reports) else ""), fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return out.getvalue()


def write(experiment_uri: str, records: list[TrialRecord], rows: list[Row], keys: list[str], metric: str,
          title: str) -> list[str]:
    """The table as CSV and markdown and the plot, into the search's folder; their URIs."""
    written = {RESULTS_CSV: table_csv(rows, keys, metric).encode(),
               RESULTS_MD: table_markdown(rows, keys, metric).encode(),
               METRIC_PLOT: plot(records, metric, title)}
    uris = []
    for name, data in written.items():
        uri = storage.join(experiment_uri, name)
        storage.write_bytes(uri, data)
        uris.append(uri)
    return uris
