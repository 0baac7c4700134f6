"""`gan-dist evaluate`: what a generator or a translator is worth, in numbers. For a generator it draws `num` images
from the checkpoint's (EMA) generator with fixed seeds, embeds them and the dataset's images with a feature network,
and compares them; for a translator it does the same per direction with translations of source images
(eval/translation.py)."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
from pydantic import ValidationError

from gan_dist import checkpoint, storage
from gan_dist.config import EVAL_METRICS, EvalConfig, config_from_dict
from gan_dist.data import placement
from gan_dist.data.prepare import Progress, embedded_digits
from gan_dist.data.reader import read_manifest
from gan_dist.errors import UserError
from gan_dist.eval.measure import MEANINGS, check_sizes, compare, feature_kind, feature_network
from gan_dist.eval.stats import embed, real_features, real_images
from gan_dist.eval.translation import DIRECTIONS, judge_all, judges
from gan_dist.eval.translation import MEANINGS as TRANSLATION_MEANINGS
from gan_dist.sample import generate, load_generator
from gan_dist.translate import is_translation, load_translator

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


def _newest_meta(uri: str) -> dict:
    """meta.json of the checkpoint `uri` names (a run: its newest complete one), {} where there is none to read:
    the loaders below then say what is wrong."""
    target = uri if checkpoint.is_checkpoint_dir(uri) else checkpoint.latest_complete(uri)
    try:
        return checkpoint.load_meta(target) if target is not None else {}
    except checkpoint.CorruptCheckpoint:
        return {}


def evaluate(checkpoint_uri: str, data_uri: str | None = None, num: int = 10_000, names: tuple[str, ...] = METRICS,
             features: str = "auto", seed: int = 0, device: str = "cpu", inception_weights: str | None = None,
             data_a: str | None = None, data_b: str | None = None) -> Evaluation:
    """A generator's checkpoint against `data_uri`; a translator's per direction against `data_a`, `data_b` (by
    default the datasets each was trained on)."""
    started = time.perf_counter()
    dev = torch.device(device)
    if is_translation(_newest_meta(checkpoint_uri)):
        if data_uri:
            raise UserError(f"{checkpoint_uri} is a translator's: pass its domains with --data-a and --data-b, not "
                            f"--data")
        return evaluate_translation(checkpoint_uri, {"a": data_a, "b": data_b}, num, names, features, dev,
                                    inception_weights, started)
    if data_a or data_b:
        raise UserError(f"{checkpoint_uri} is an image generator's: pass its real images with --data, not "
                        f"--data-a/--data-b")
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
    features = feature_kind(features, manifest, unlabeled="inception")
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
    width = max(11, *(len(name) + 2 for name in result.metrics))
    lines = [f"{result.checkpoint} (step {result.step}): {result.num} generated vs {result.real} real images, "
             f"{result.features} features, {result.seconds:.1f} s",
             f"{'metric':<{width}}{'value':>10}  {'better':<7} meaning"]
    for name, value in result.metrics.items():
        metric = name.split("_", 1)[1] if name[:4] in ("a2b_", "b2a_") else name  # a translation direction's
        better, meaning = {**MEANINGS, **TRANSLATION_MEANINGS}.get(
            metric, ("lower", "sliced Wasserstein distance at this pyramid level (x1e3)"))
        lines.append(f"{name:<{width}}{value:>10.4g}  {better:<7} {meaning}")
    return "\n".join(lines)


def write_json(result: Evaluation, uri: str) -> None:
    storage.write_bytes(uri, json.dumps(asdict(result), indent=1).encode())


def evaluate_translation(checkpoint_uri: str, given: dict[str, str | None], num: int, names: tuple[str, ...],
                         features: str, device: torch.device, inception_weights: str | None,
                         started: float) -> Evaluation:
    """Each direction's translations of the first `num` source images (`given`, e.g. held-out sets; by default the
    run's datasets), judged by the run's own dataset of the target domain (its classifier and real features)."""
    def load(uri: str) -> dict[str, torch.nn.Module]:
        files = checkpoint.load_meta(uri).get("files", {})
        return {d: load_translator(uri, d, device).net for d in DIRECTIONS if f"translator_{d}.safetensors" in files}

    uri, translators = checkpoint.load_newest(checkpoint_uri, load, lambda warning: print(warning, file=sys.stderr))
    meta = checkpoint.load_meta(uri)
    cfg = config_from_dict(meta["config"])
    trained = checkpoint.trained_on(meta)
    run, sources = {}, {}
    for name, configured in cfg.dataset_paths().items():
        run[name] = _dataset(placement.dataset_uri(name, configured))
        sources[name] = _dataset(given[name]) if given[name] else run[name]
        saved, manifest = trained[name], sources[name].manifest
        if (saved["resolution"], saved["channels"]) != (manifest.resolution, manifest.channels):
            raise UserError(f"{uri} translates {saved['resolution']}x{saved['resolution']}x{saved['channels']} "
                            f"images of {name.upper()} and {sources[name].uri} holds {manifest.resolution}x"
                            f"{manifest.resolution}x{manifest.channels}; pass that domain's images with "
                            f"--data-{name}")
    found = judges(cfg, sources, run, names, num, features, device, inception_weights, unlabeled="inception")
    metrics = judge_all(found, translators)
    kinds = sorted({judge.kind for judge in found.values()})
    num = min(len(judge.source_u8) for judge in found.values())
    real = min((len(judge.real) for judge in found.values() if judge.net is not None), default=0)
    return Evaluation(uri, meta.get("step"), "/".join(kinds), num, real, time.perf_counter() - started, metrics)


def _dataset(uri: str) -> placement.Dataset:
    return placement.Dataset(uri, read_manifest(uri))
