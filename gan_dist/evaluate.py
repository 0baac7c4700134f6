"""`gan-dist evaluate`: what a generator or a translator is worth, in numbers. For a generator it draws `num` images
from the checkpoint's (EMA) generator with fixed seeds, embeds them and the dataset's images with a feature network,
and compares them; for a translator it does the same per direction with translations of source images
(eval/translation.py)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import torch
from pydantic import ValidationError

from gan_dist import checkpoint
from gan_dist.complete import is_completion, load_completer, masks_for
from gan_dist.config import EVAL_METRICS, EvalConfig, config_from_dict
from gan_dist.data import placement
from gan_dist.errors import UserError
from gan_dist.eval.completion import BASELINES, CompletionJudge
from gan_dist.eval.completion import MEANINGS as COMPLETION_MEANINGS
from gan_dist.eval.measure import MEANINGS, check_sizes, compare, feature_kind, feature_network, plan_rows
from gan_dist.eval.paired import BASELINES as PAIRED_BASELINES
from gan_dist.eval.paired import MEANINGS as PAIRED_MEANINGS
from gan_dist.eval.paired import PairedJudge
from gan_dist.eval.stats import embed, real_features
from gan_dist.eval.translation import DIRECTIONS, judge_all, judges
from gan_dist.eval.translation import MEANINGS as TRANSLATION_MEANINGS
from gan_dist.progress import Progress
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
             data_a: str | None = None, data_b: str | None = None, mask: str = "center",
             raw: bool = False) -> Evaluation:
    """A generator's checkpoint against `data_uri` (its EMA generator, or with `raw` the trained one); a
    translator's per direction against `data_a`, `data_b`; a completion net's on the images of `data_uri` with
    `mask` holes, beside non-learned fills (by default the datasets each was trained on)."""
    started = time.perf_counter()
    dev = torch.device(device)
    newest = _newest_meta(checkpoint_uri)  # which kind of checkpoint: one read of meta.json
    if raw and (is_completion(newest) or is_translation(newest)):
        raise UserError(f"--raw picks a generator's trained weights over their average, and {checkpoint_uri} holds "
                        f"no image generator (its nets have no average); drop --raw")
    if is_completion(newest):
        if data_a or data_b:
            raise UserError(f"{checkpoint_uri} is an inpainting checkpoint: pass the images to complete with --data, "
                            f"not --data-a/--data-b")
        return evaluate_completion(checkpoint_uri, data_uri, num, features, dev, mask, seed, started)
    if is_translation(newest) and trained_on_pairs(newest):
        if data_a or data_b:
            raise UserError(f"{checkpoint_uri} is a paired translator's: pass held-out pairs with --data, not "
                            f"--data-a/--data-b")
        return evaluate_paired(checkpoint_uri, data_uri, num, features, dev, started)
    if is_translation(newest):
        if data_uri:
            raise UserError(f"{checkpoint_uri} is a translator's: pass its domains with --data-a and --data-b, not "
                            f"--data")
        return evaluate_translation(checkpoint_uri, {"a": data_a, "b": data_b}, num, names, features, dev,
                                    inception_weights, started)
    if data_a or data_b:
        raise UserError(f"{checkpoint_uri} is an image generator's: pass its real images with --data, not "
                        f"--data-a/--data-b")
    uri, generator = checkpoint.load_newest(checkpoint_uri, lambda c: load_generator(c, dev, raw),
                                            lambda warning: print(warning, file=sys.stderr))
    meta = checkpoint.load_meta(uri)
    data = placement.Dataset.open(
        data_uri or placement.dataset_uri("train", meta.get("config", {}).get("data", {}).get("path")))
    manifest = data.manifest
    trained_on = meta.get("data", {})
    if (trained_on.get("resolution"), trained_on.get("channels")) != (manifest.resolution, manifest.channels):
        raise UserError(f"{uri} generates {trained_on.get('resolution')}x{trained_on.get('resolution')}x"
                        f"{trained_on.get('channels')} images and {data.uri} holds {manifest.resolution}x"
                        f"{manifest.resolution}x{manifest.channels}; pass the run's dataset with --data")
    check_sizes(names, num, manifest, "--num")
    plan_rows(data, num, names)
    features = feature_kind(features, manifest, unlabeled="inception")
    net = feature_network(features, data, dev, inception_weights)
    real = real_features(net, data, num, dev)

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
    result = compare(names, net, real, torch.cat(fake), data.images,
                     torch.cat(fake_images), torch.cat(asked) if classes else None, seed)
    return Evaluation(uri, meta.get("step"), features, num, len(real), time.perf_counter() - started, result)


# What a metric's name may start with: a translation direction, or the fill a completion is compared with.
PREFIXES = tuple(f"{name}_" for name in (*DIRECTIONS, *BASELINES, *PAIRED_BASELINES))


def format_table(result: Evaluation) -> str:
    width = max(11, *(len(name) + 2 for name in result.metrics))
    what = {"completion": "completed", "paired": "translated"}.get(result.features, "generated")
    own_meanings = PAIRED_MEANINGS if result.features == "paired" else COMPLETION_MEANINGS  # both name "labels"
    lines = [f"{result.checkpoint} (step {result.step}): {result.num} {what} vs {result.real} real images, "
             f"{result.features} features, {result.seconds:.1f} s",
             f"{'metric':<{width}}{'value':>10}  {'better':<7} meaning"]
    for name, value in result.metrics.items():
        metric = name.split("_", 1)[1] if name.startswith(PREFIXES) else name
        better, meaning = {**MEANINGS, **TRANSLATION_MEANINGS, **own_meanings}.get(
            metric, ("lower", "sliced Wasserstein distance at this pyramid level (x1e3)"))
        lines.append(f"{name:<{width}}{value:>10.4g}  {better:<7} {meaning}")
    return "\n".join(lines)


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
    # One Dataset per domain, handed to both directions (the source of one, the target of the other): its rows load
    # once for both.
    run, sources = {}, {}
    for name, configured in cfg.dataset_paths().items():
        run[name] = placement.Dataset.open(placement.dataset_uri(name, configured))
        sources[name] = placement.Dataset.open(given[name]) if given[name] else run[name]
        saved, manifest = trained[name], sources[name].manifest
        if (saved["resolution"], saved["channels"]) != (manifest.resolution, manifest.channels):
            raise UserError(f"{uri} translates {saved['resolution']}x{saved['resolution']}x{saved['channels']} "
                            f"images of {name.upper()} and {sources[name].uri} holds {manifest.resolution}x"
                            f"{manifest.resolution}x{manifest.channels}; pass that domain's images with "
                            f"--data-{name}")
    found = judges(cfg, sources, run, names, num, features, device, inception_weights, unlabeled="inception")
    metrics = judge_all(found, translators)
    kinds = sorted({judge.kind for judge in found.values()})
    num = min(judge.num for judge in found.values())
    real = min((len(judge.real) for judge in found.values() if judge.net is not None), default=0)
    return Evaluation(uri, meta.get("step"), "/".join(kinds), num, real, time.perf_counter() - started, metrics)


def trained_on_pairs(meta: dict) -> bool:
    """Whether the checkpoint learned from a paired dataset (each row an input and its image)."""
    return any(data.get("input_channels") for data in checkpoint.trained_on(meta).values())


def evaluate_paired(checkpoint_uri: str, data_uri: str | None, num: int, features: str, device: torch.device,
                    started: float) -> Evaluation:
    """The paired translator on the first `num` pairs of `data_uri` (e.g. held-out pairs; by default the run's
    dataset) beside the trivial translators (the input passed through, the mean target), labels judged by the
    classifier of the run's own dataset."""
    uri, translator = checkpoint.load_newest(checkpoint_uri, lambda c: load_translator(c, "a2b", device),
                                             lambda warning: print(warning, file=sys.stderr))
    meta = checkpoint.load_meta(uri)
    run = placement.Dataset.open(placement.dataset_uri("train", config_from_dict(meta["config"]).data.path))
    pairs = placement.Dataset.open(data_uri) if data_uri else run
    trained, m = checkpoint.trained_on(meta)["train"], pairs.manifest
    if (m.resolution, m.input_channels, m.channels) != (trained["resolution"], trained["input_channels"],
                                                         trained["channels"]):
        raise UserError(f"{uri} translates {trained['resolution']}x{trained['resolution']}x"
                        f"{trained['input_channels']} inputs into x{trained['channels']} images and {pairs.uri} holds "
                        + (f"{m.resolution}x{m.resolution}x{m.input_channels} -> x{m.channels} pairs" if m.paired
                           else "single images, not pairs") + "; pass pairs of the run's sizes with --data")
    if features == "inception":
        raise UserError("--features inception does not apply to a paired translator (it is judged against each "
                        "target, and by the dataset's classifier); use --features auto or domain")
    judge = PairedJudge(pairs, num, features, device, reference=run)
    n = len(judge.targets_u8)
    return Evaluation(uri, meta.get("step"), "paired", n, n, time.perf_counter() - started,
                      judge.with_baselines(translator.net))


def evaluate_completion(checkpoint_uri: str, data_uri: str | None, num: int, features: str, device: torch.device,
                        mask: str, seed: int, started: float) -> Evaluation:
    """The completion net on the first `num` images of `data_uri` (e.g. a held-out split; by default the run's
    dataset) with `mask` holes, beside the non-learned fills on the same holes, judged by the run's own dataset's
    classifier."""
    uri, completer = checkpoint.load_newest(checkpoint_uri, lambda c: load_completer(c, device),
                                            lambda warning: print(warning, file=sys.stderr))
    meta = checkpoint.load_meta(uri)
    run = placement.Dataset.open(placement.dataset_uri("train", config_from_dict(meta["config"]).data.path))
    source = placement.Dataset.open(data_uri) if data_uri else run
    if (completer.resolution, completer.in_channels) != (source.manifest.resolution, source.manifest.channels):
        raise UserError(f"{uri} completes {completer.resolution}x{completer.resolution}x{completer.in_channels} "
                        f"images and {source.uri} holds {source.manifest.resolution}x{source.manifest.resolution}x"
                        f"{source.manifest.channels}; pass a dataset of the run's size with --data")
    if features == "inception":
        raise UserError("--features inception does not apply to completion (it is judged on the holes' pixels and "
                        "by the dataset's classifier); use --features auto or domain")
    n = min(num, source.manifest.count)
    judge = CompletionJudge(source, run, n, features, device, masks_for(mask, completer.resolution, seed)(0, n))
    metrics = judge.with_baselines(completer.net)
    return Evaluation(uri, meta.get("step"), "completion", n, n, time.perf_counter() - started, metrics)
