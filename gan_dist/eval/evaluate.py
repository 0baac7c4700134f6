"""`gan-dist evaluate`: what a generator is worth, in numbers. It draws `num` images from the checkpoint's (EMA)
generator with fixed seeds, embeds them and the dataset's images with a feature network, and compares them."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
from pydantic import ValidationError

from gan_dist import checkpoint, storage
from gan_dist.config import EVAL_METRICS, EvalConfig
from gan_dist.data.prepare import Progress, embedded_digits
from gan_dist.data.reader import read_manifest
from gan_dist.errors import UserError
from gan_dist.eval.measure import MEANINGS, check_sizes, compare, feature_network
from gan_dist.eval.stats import embed, real_features, real_images
from gan_dist.sample import generate, load_generator

METRICS = EVAL_METRICS  # with domain features also: confident, class_min, coverage, agreement (conditional)


@dataclass
class Evaluation:
    checkpoint: str
    step: int | None
    features: str
    num: int
    real: int
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)


def parse_metrics(text: str) -> tuple[str, ...]:
    try:
        return EvalConfig(metrics=text).metric_names()
    except ValidationError:
        raise UserError(f"--metrics {text!r}: choose from {', '.join(METRICS)} (comma-separated)") from None


def evaluate(checkpoint_uri: str, data_uri: str | None = None, num: int = 10_000, names: tuple[str, ...] = METRICS,
             features: str = "auto", seed: int = 0, device: str = "cpu",
             inception_weights: str | None = None) -> Evaluation:
    started = time.perf_counter()
    dev = torch.device(device)
    uri, generator = checkpoint.load_newest(checkpoint_uri, lambda c: load_generator(c, dev),
                                            lambda warning: print(warning, file=sys.stderr))
    meta = checkpoint.load_meta(uri)
    data_uri = data_uri or meta.get("config", {}).get("data", {}).get("path") or embedded_digits()
    manifest = read_manifest(data_uri)
    trained_on = meta.get("data", {})
    if (trained_on.get("resolution"), trained_on.get("channels")) != (manifest.resolution, manifest.channels):
        raise UserError(f"{uri} generates {trained_on.get('resolution')}x{trained_on.get('resolution')}x"
                        f"{trained_on.get('channels')} images and {data_uri} holds {manifest.resolution}x"
                        f"{manifest.resolution}x{manifest.channels}; pass the run's dataset with --data")
    check_sizes(names, num, manifest, "--num")
    if features == "auto":
        features = "domain" if manifest.class_names else "inception"
    net = feature_network(features, data_uri, manifest, dev, inception_weights)
    real = real_features(net, data_uri, manifest, num, dev)

    classes = list(range(len(generator.class_names)))
    progress = Progress(num, label="generate + embed")
    fake_images, fake, asked, done = [], [], [], 0
    for images, labels in generate(generator, num, seed, classes, device=dev):
        batch = images.permute(0, 2, 3, 1).contiguous()  # B×H×W×C, as stored
        fake_images.append(batch.cpu())
        fake.append(embed(net, batch, dev))
        asked.append(labels)
        done += len(batch)
        progress.update(done, final=done >= num)
    result = compare(names, net, real, torch.cat(fake), lambda n: real_images(data_uri, manifest, n),
                     torch.cat(fake_images), torch.cat(asked) if classes else None, seed)
    return Evaluation(uri, meta.get("step"), features, num, len(real), time.perf_counter() - started, result)


def format_table(result: Evaluation) -> str:
    lines = [f"{result.checkpoint} (step {result.step}): {result.num} generated vs {result.real} real images, "
             f"{result.features} features, {result.seconds:.1f} s",
             f"{'metric':<11}{'value':>10}  {'better':<7} meaning"]
    for name, value in result.metrics.items():
        better, meaning = MEANINGS.get(name, ("lower", "sliced Wasserstein distance at this pyramid level (x1e3)"))
        lines.append(f"{name:<11}{value:>10.4g}  {better:<7} {meaning}")
    return "\n".join(lines)


def write_json(result: Evaluation, uri: str) -> None:
    storage.write_bytes(uri, json.dumps(asdict(result), indent=1).encode())
