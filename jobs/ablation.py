"""The stabilizer ablation on the embedded digits: each row trains `gan-dist train` with a few switches on, the same
steps and seed, then `gan-dist evaluate` scores its 1,000 samples with the domain classifier. Writes results.jsonl
(one line per row and seed, with the training wall time), table.md and ablation.png into --out.

    python jobs/ablation.py --out /tmp/ablation                   # every row, seed 0 (~25 min on a 2-core CPU)
    python jobs/ablation.py --out /tmp/ablation --rows "cond +R1 (default)" --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

DIFFAUGMENT = {"train.augment": "translation,cutout,color"}
R1 = {"train.r1_gamma": "0.1"}
# The rows start from the default preset with its stabilizers off, so they do not move when the preset does.
PLAIN = {"model.conditional": "false", "train.r1_gamma": "0"}
COND = {**PLAIN, "model.conditional": "true"}
# name -> --set overrides of dcgan-digits: each row adds one switch to the row named in its comment.
ROWS = {
    "baseline": {**PLAIN, "train.ema": "false"},
    "+EMA": PLAIN,  # baseline
    "+DiffAugment": {**PLAIN, **DIFFAUGMENT},  # +EMA
    "+ADA": {**PLAIN, **DIFFAUGMENT, "train.ada_target": "0.6"},  # +EMA
    "+R1": {**PLAIN, **R1},  # +EMA
    "+R1 gamma=1": {**PLAIN, "train.r1_gamma": "1"},  # +EMA
    "+LeCam": {**PLAIN, "train.lecam_weight": "0.1"},  # +EMA
    "n_dis=2": {**PLAIN, "train.n_dis": "2"},  # +EMA
    "hinge": {**PLAIN, "train.loss": "hinge"},  # +EMA
    "conditional": COND,  # +EMA
    "cond +DiffAugment": {**COND, **DIFFAUGMENT},  # conditional
    "cond +LeCam": {**COND, "train.lecam_weight": "0.1"},  # conditional
    "cond +R1 (default)": {},  # conditional: the preset as shipped
}
METRICS = ("fid", "precision", "recall", "copies", "confident", "class_min", "coverage")


def run_row(name: str, seed: int, out: Path, steps: int | None, data: str | None) -> dict:
    overrides = ROWS[name]
    run = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-") + f"-seed{seed}"
    args = [sys.executable, "-m", "gan_dist", "train", "dcgan-digits", "--storage", str(out / "runs"), "--name", run,
            "--set", f"train.seed={seed}", "--set", "eval.features=off"]
    if steps:
        args += ["--steps", str(steps)]
    if data:
        args += ["--data", data]
    for key, value in overrides.items():
        args += ["--set", f"{key}={value}"]
    started = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    scores = out / f"{run}.json"
    subprocess.run([sys.executable, "-m", "gan_dist", "evaluate", str(out / "runs" / run), "--num", "1000",
                    "--metrics", "fid,pr,copies", "--json", str(scores)], check=True, stdout=subprocess.DEVNULL)
    metrics = json.loads(scores.read_text())["metrics"]
    return {"row": name, "seed": seed, "train_seconds": round(seconds, 1),
            **{key: metrics[key] for key in METRICS}}


def table(records: list[dict]) -> str:
    """One line per row: the mean over seeds (and the seeds' range where there are several). Training times stay in
    results.jsonl: they compare only between rows run alone on the same machine."""
    lines = ["| row | seeds | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 2) + "|"]
    for name in dict.fromkeys(r["row"] for r in records):
        mine = [r for r in records if r["row"] == name]
        cells = []
        for key in METRICS:
            values = [r[key] for r in mine]
            mean = sum(values) / len(values)
            spread = f" ({min(values):.3g}-{max(values):.3g})" if len(values) > 1 else ""
            cells.append(f"{mean:.3g}{spread}")
        lines.append(f"| {name} | {len(mine)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["row"] for r in records))
    panels = (("fid", "domain FID (lower is better)"), ("confident", "confident share (higher is better)"),
              ("recall", "recall: diversity (higher)"), ("class_min", "rarest class among confident (higher)"))
    figure, axes = plt.subplots(1, len(panels), figsize=(18, 4.2))
    for axis, (key, title) in zip(axes, panels):
        for i, name in enumerate(names):
            values = [r[key] for r in records if r["row"] == name]
            axis.bar(i, sum(values) / len(values), color="tab:blue", alpha=0.8)
            axis.scatter([i] * len(values), values, color="black", s=10, zorder=3)
        axis.set_xticks(range(len(names)), names, rotation=40, ha="right")
        axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated, from: " + ", ".join(ROWS))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--steps", type=int, help="override every row's preset steps")
    parser.add_argument("--data", help="a prepared dataset instead of the embedded digits")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    for name in args.rows.split(","):
        for seed in map(int, args.seeds.split(",")):
            record = run_row(name, seed, args.out, args.steps, args.data)
            with results.open("a") as file:
                file.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)
    records = [json.loads(line) for line in results.read_text().splitlines()]
    (args.out / "table.md").write_text(table(records) + "\n")
    plot(records, args.out / "ablation.png")
    print(table(records))


if __name__ == "__main__":
    main()
