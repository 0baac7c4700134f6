"""The `gan-dist` command. Every failure the user can fix ends as one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Any

from gan_dist.config import DEFAULT_PRESET, EVAL_METRICS, Config, load_config, parse_override
from gan_dist.data.images import FILTERS
from gan_dist.data.shards import FORMATS
from gan_dist.errors import UserError
from gan_dist.seeds import MAX_SEED

EXIT_USER_ERROR = 2


def _seed(text: str) -> int:
    """A whole number torch takes as a seed."""
    if not text.isdigit() or int(text) > MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to {MAX_SEED}, got '{text}'")
    return int(text)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line that points at --help, instead of argparse's usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _checkpoint_argument(command: argparse.ArgumentParser) -> None:
    command.add_argument("checkpoint", metavar="CKPT", help="checkpoint directory, or a run directory (its newest)")


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="gan-dist", description="Distributed GAN training on Ray.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    prepare = commands.add_parser(
        "prepare", help="turn a dataset into Parquet shards + manifest",
        description="Write SOURCE as Parquet shards and _manifest.json under OUT. Unreadable, corrupt and "
                    "non-image inputs are skipped and counted; the manifest is written last.")
    prepare.add_argument("source", metavar="SOURCE",
                         help="an image folder (class subfolders become labels), an .npz file (images, optional "
                              "labels), 'digits' (embedded handwritten), 'typeset-digits' (2,000 digits rendered in "
                              "matplotlib's fonts), 'digit-edges' (pairs: each digit's outline -> the digit), or a "
                              "torchvision dataset name with --root")
    prepare.add_argument("out", metavar="OUT", help="output folder or s3://bucket/prefix")
    prepare.add_argument("--resolution", type=_positive_int, default=32, help="square side in pixels (default 32)")
    prepare.add_argument("--channels", type=int, choices=[1, 3], default=None,
                         help="1 (grayscale) or 3 (RGB); default: 1 when no image has colour (a folder of gray "
                              "PNGs, the digits), else 3")
    prepare.add_argument("--crop", choices=["center", "none"], default="center",
                         help="center: crop the largest centred square; none: squash to square (default center)")
    prepare.add_argument("--resize-filter", choices=list(FILTERS), default="auto",
                         help="auto: lanczos when shrinking, bilinear when enlarging (default auto)")
    prepare.add_argument("--min-size", type=int, default=None,
                         help="skip images whose short side is below this (default resolution/4)")
    prepare.add_argument("--format", choices=list(FORMATS), default="raw",
                         help="raw uint8 (fastest to read, the default), png or jpeg (smaller)")
    prepare.add_argument("--shard-size", type=_positive_int, default=2048, help="images per shard (default 2048)")
    prepare.add_argument("--workers", type=_positive_int, default=os.cpu_count() or 1,
                         help="parallel encoding processes (default: all cores)")
    prepare.add_argument("--limit", type=_positive_int, help="stop after this many images")
    prepare.add_argument("--skip", type=int, default=0,
                         help="leave out the first N images of the --shuffle-seed order, those --limit N writes: a "
                              "held-out split disjoint from them (default 0)")
    prepare.add_argument("--shuffle-seed", type=int, default=0,
                         help="seed of the order images are written in; -1 keeps the source order (default 0)")
    prepare.add_argument("--root", help="torchvision datasets: the folder the dataset lives in")
    prepare.add_argument("--download", action="store_true", help="torchvision datasets: download if missing")
    prepare.add_argument("--inputs", help="a paired dataset (pix2pix): the folder of input images, each paired by "
                                          "relative name (extension aside) with its target in the SOURCE folder")

    train = commands.add_parser("train", help="train a GAN (default: DCGAN on the embedded digits, locally)",
                                description="Train from a preset or YAML file; flags override its values.")
    train.add_argument("preset", nargs="?", default=DEFAULT_PRESET, help=f"preset name or YAML file (default {DEFAULT_PRESET})")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set train.lr_g=1e-4 (repeatable)")
    train.add_argument("--data", help="prepared shard folder or s3:// URI (default: the embedded digits)")
    train.add_argument("--data-a", help="translation presets: domain A's prepared shards (default: the embedded "
                                        "handwritten digits)")
    train.add_argument("--data-b", help="translation presets: domain B's prepared shards (default: the embedded "
                                        "typeset digits)")
    train.add_argument("--backend", choices=["auto", "local", "ray"],
                       help="local: this process; ray: TorchTrainer (default: ray when --num-workers > 1 or --address)")
    train.add_argument("--num-workers", metavar="N|MIN-MAX",
                       help="training workers (Ray backend); MIN-MAX: elastic, goes on with as few as MIN when "
                            "workers are lost and grows back to MAX")
    train.add_argument("--address", help="Ray cluster address to join (default: start a local Ray)")
    train.add_argument("--gpu", action="store_true", default=None, help="one GPU per worker")
    train.add_argument("--storage", help="where runs live: local path or s3://bucket/prefix (default ./runs)")
    train.add_argument("--name", help="run name (default: PRESET-TIMESTAMP)")
    train.add_argument("--steps", type=_positive_int, help="total training steps")
    train.add_argument("--batch-size", type=_positive_int, help="images per worker per step")
    train.add_argument("--resume", action="store_true", default=None,
                       help="continue the run's newest checkpoint (without --name: this preset's newest run)")
    train.add_argument("--resume-from", metavar="URI",
                       help="start this run from another run's checkpoint (a checkpoint or run directory)")

    tune = commands.add_parser(
        "tune", help="search hyper-parameters over multi-worker trials with Ray Tune (ASHA or PBT)",
        description="Train trials of PRESET, each an ordinary multi-worker Ray run of --budget-steps steps with "
                    "--space values drawn for it, evaluated at each checkpoint; ASHA stops weak trials there, PBT "
                    "has weak trials continue from the checkpoint of a strong one with perturbed values. Writes "
                    "results.csv, results.md and metric.png into STORAGE/NAME and prints the best checkpoint.")
    tune.add_argument("preset", nargs="?", default=DEFAULT_PRESET,
                      help=f"preset name or YAML file (default {DEFAULT_PRESET})")
    tune.add_argument("--space", action="append", required=True, metavar="KEY=SPEC",
                      help="a config key and what to draw it from: loguniform(LOW,HIGH), uniform(LOW,HIGH), "
                           "choice(A,B,...) or grid(A,B,...) (every grid point gets --trials trials); quote it, "
                           "the shell reads parentheses; repeatable")
    tune.add_argument("--metric", required=True, help="the logged metric to optimise, e.g. fid")
    tune.add_argument("--mode", choices=["min", "max"], default="min", help="which way --metric is better (default min)")
    tune.add_argument("--scheduler", choices=["asha", "pbt", "none"], default="asha",
                      help="asha: stop weak trials early at their checkpoints; pbt: weak trials continue from strong "
                           "ones' checkpoints with perturbed values; none: run every trial to the budget (default asha)")
    tune.add_argument("--trials", type=_positive_int,
                      help="trials drawn (per grid point); default 1 for a space of grids only, else 8")
    tune.add_argument("--workers-per-trial", type=_positive_int, default=1, metavar="K",
                      help="training workers (DDP ranks) of each trial (default 1)")
    tune.add_argument("--gpu", action="store_true", help="one GPU per worker")
    tune.add_argument("--budget-steps", type=_positive_int, metavar="S",
                      help="steps of a trial that is never stopped (default: the config's train.steps)")
    tune.add_argument("--concurrent", type=_positive_int,
                      help="trials at once (default: as many as the cluster has room for)")
    tune.add_argument("--grace-steps", type=_positive_int,
                      help="asha: steps every trial trains before it may be stopped (default train.checkpoint_every)")
    tune.add_argument("--perturb-steps", type=_positive_int,
                      help="pbt: steps between a trial's exploit/explore decisions (default train.checkpoint_every)")
    tune.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config value for every trial (repeatable)")
    tune.add_argument("--data", help="prepared shard folder or s3:// URI (default: the embedded digits)")
    tune.add_argument("--data-a", help="translation presets: domain A's prepared shards")
    tune.add_argument("--data-b", help="translation presets: domain B's prepared shards")
    tune.add_argument("--storage", default="runs", help="where searches live: local path or s3://bucket/prefix "
                                                       "(default ./runs)")
    tune.add_argument("--name", help="the search's name (default: tune-PRESET-TIMESTAMP)")
    tune.add_argument("--resume", action="store_true",
                      help="continue an interrupted search (without --name: this preset's newest): finished trials "
                           "are kept, the others resume from their newest checkpoints")
    tune.add_argument("--address", help="Ray cluster address to join (default: start a local Ray)")

    sample = commands.add_parser(
        "sample", help="write images from a checkpoint: PNGs, or a synthetic dataset",
        description="Write N images from a checkpoint's generator: PNG files, or (--format parquet) a prepared "
                    "dataset that `gan-dist train --data` reads, written by this process or by Ray workers.")
    _checkpoint_argument(sample)
    sample.add_argument("--num", type=_positive_int, default=64, help="number of images (default 64)")
    sample.add_argument("--out", required=True,
                        help="output folder or s3:// URI (png: one already holding sample_*.png is refused; "
                             "parquet: it must be empty)")
    sample.add_argument("--seed", type=int, default=0, help="latent seed (default 0)")
    sample.add_argument("--class", dest="classes", action="append", metavar="K",
                        help="conditional generators: a class index or name, repeatable, or 'all' (the default): an "
                             "equal share of each; labels.csv (png) or the label column (parquet) names each "
                             "image's class")
    sample.add_argument("--raw", action="store_true",
                        help="the trained generator instead of its exponential moving average")
    sample.add_argument("--truncation", type=float, default=1.0, metavar="PSI",
                        help="latents scaled by PSI from 0 (each class's average image) to 1 (no truncation, the "
                             "default): less variety, more fidelity")
    sample.add_argument("--format", choices=["png", "parquet"], default="png",
                        help="png: one file per image, written by this process (the default); parquet: Parquet "
                             "shards + _manifest.json, as `gan-dist prepare` writes them")
    sample.add_argument("--shard-size", type=_positive_int, default=2048,
                        help="parquet: images per shard; each shard's latents come from its own seed (default 2048)")
    sample.add_argument("--backend", choices=["auto", "local", "ray"], default="auto",
                        help="parquet: local: this process; ray: Ray workers (default: ray when --num-workers > 1 "
                             "or --address)")
    sample.add_argument("--num-workers", type=_positive_int, default=1, help="parquet: Ray workers (default 1)")
    sample.add_argument("--gpu", action="store_true", help="one GPU per worker (or for this process)")
    sample.add_argument("--address", help="parquet: Ray cluster address to join (default: start a local Ray)")

    report = commands.add_parser("report", help="draw a run's loss and metric curves to a PNG",
                                 description="Draw losses, D outputs, gradient norms and throughput from RUN's "
                                             "metrics.jsonl; restores and skipped updates show as red lines.")
    report.add_argument("run", metavar="RUN", help="run directory (local or s3://)")
    report.add_argument("--out", help="a .png path, or a folder for FOLDER/curves.png (default RUN/curves.png); "
                                      "only a PNG is ever replaced")
    evaluate = commands.add_parser(
        "evaluate", help="FID, KID, precision/recall and SWD of a checkpoint's generator against its dataset",
        description="Draw --num images from the checkpoint's (EMA) generator with fixed seeds, embed them and the "
                    "dataset's images with a feature network, and print one table. Real features are cached beside "
                    "the dataset, keyed by its content hash.")
    _checkpoint_argument(evaluate)
    evaluate.add_argument("--data", help="the real images (default: the dataset the run trained on)")
    evaluate.add_argument("--data-a", help="a translator's: domain A's images, e.g. held out (default: the run's A)")
    evaluate.add_argument("--data-b", help="a translator's: domain B's images, e.g. held out (default: the run's B)")
    evaluate.add_argument("--num", type=_positive_int, default=10_000, help="generated images (default 10000)")
    evaluate.add_argument("--metrics", default=",".join(EVAL_METRICS),
                          help=f"comma-separated: {', '.join(EVAL_METRICS)} (default all)")
    evaluate.add_argument("--features", default="auto", choices=["auto", "domain", "inception"],
                          help="domain: a classifier trained on the dataset's labels (fast on a CPU); inception: the "
                               "standard FID network (pip install 'gan-dist[fid]'; slow on a CPU); auto (default): "
                               "domain for a labeled dataset, else inception")
    evaluate.add_argument("--inception-weights", metavar="PATH", help="your own copy of the TorchScript FID network")
    evaluate.add_argument("--seed", type=int, default=0, help="latent seed (default 0)")
    evaluate.add_argument("--raw", action="store_true",
                          help="a generator's: the trained generator instead of its exponential moving average")
    evaluate.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    evaluate.add_argument("--json", metavar="FILE", help="also write the results as JSON (local or s3://)")
    evaluate.add_argument("--mask", choices=["center", "random"], default="center",
                          help="an inpainting checkpoint's holes: center (default), a centred square over a quarter "
                               "of each image; random: drawn per image as in training, from --seed")

    study = commands.add_parser(
        "augmentation-study", help="does a class-conditional generator's output help a classifier with few labels?",
        description="Train the domain classifier on a class-stratified --real-fraction of --data, on that plus "
                    "synthetic images from the checkpoint's (EMA) generator (their union), on synthetic images alone "
                    "(the Classification Accuracy Score) and on all of --data, and print each one's accuracy on "
                    "--held-out, mean ± std over --repeats seeds.")
    _checkpoint_argument(study)
    study.add_argument("--held-out", metavar="URI", required=True,
                       help="labeled real images neither the generator nor the classifiers train on")
    study.add_argument("--data", metavar="URI",
                       help="the labeled real images (default: the dataset the run trained on)")
    study.add_argument("--real-fraction", metavar="F", type=float, default=0.05,
                       help="share of each class of --data in the real subset, at least one image per class "
                            "(default 0.05)")
    study.add_argument("--synthetic", metavar="N", type=_positive_int,
                       help="generated images, an equal share per class (default 10x the real subset, and at least "
                            "as many as --data holds)")
    study.add_argument("--repeats", metavar="N", type=_positive_int, default=3,
                       help="seeds --seed, --seed+1, ...: each draws its own subset, synthetic images, classifier "
                            "init and batch order (default 3)")
    study.add_argument("--steps", metavar="N", type=_positive_int,
                       help="training steps of each classifier (default 500)")
    study.add_argument("--seed", type=int, default=0, help="the first seed (default 0)")
    study.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    study.add_argument("--json", metavar="FILE", help="also write the results as JSON (local or s3://)")

    agreement = commands.add_parser(
        "agreement", help="score whether class-conditional samples show the class asked for",
        description="Train a classifier on a labeled dataset's real images and report how often it puts each "
                    "sample under SAMPLES_DIR in the class labels.csv says it was drawn for (as `gan-dist sample` "
                    "writes them), overall and per class, beside the classifier's own held-out accuracy.")
    agreement.add_argument("samples", metavar="SAMPLES_DIR",
                           help="folder or s3:// prefix of PNGs + labels.csv (header file,label,class_name)")
    agreement.add_argument("--data", help="prepared labeled dataset the generator learned (default: embedded digits)")
    agreement.add_argument("--steps", type=_positive_int, help="classifier training steps (default 500)")
    agreement.add_argument("--seed", type=_seed, default=0,
                           help="classifier seed: init, batches, holdout (default 0)")
    agreement.add_argument("--json", metavar="FILE", help="also write the numbers as JSON (local or s3://)")

    translate = commands.add_parser(
        "translate", help="translate a folder of images with a translation checkpoint (CycleGAN, CUT)",
        description="Translate every image under --input (a folder or s3:// prefix, read recursively) into a PNG of "
                    "the same relative name under --out. Unreadable files are skipped and counted.")
    _checkpoint_argument(translate)
    translate.add_argument("--input", required=True, help="folder or s3:// prefix of images of the source domain")
    translate.add_argument("--out", required=True, help="output folder or s3:// URI (existing outputs are refused)")
    translate.add_argument("--direction", choices=["a2b", "b2a"], default="a2b", help="default a2b")
    translate.add_argument("--size", choices=["model", "native"], default="model",
                           help="model (default): centre-crop and resize to the resolution the model was trained "
                                "at; native: run the fully convolutional translator on each image at its own size "
                                "(cropped to a multiple of its downsampling)")
    translate.add_argument("--batch-size", type=_positive_int, default=64, help="images per forward (default 64)")
    translate.add_argument("--device", choices=["cpu", "cuda"], default="cpu")

    explore = commands.add_parser(
        "explore", help="pictures of what a generator learned: latent paths, truncation, classes",
        description="Write PNG grids and animated GIFs under --out: interpolations (rows of slerp paths between "
                    "seeded latents), truncation (the same latents from psi 1 to 0) and, for a class-conditional "
                    "generator, classes (a row per class, the same latents in every row).")
    _checkpoint_argument(explore)
    explore.add_argument("--out", required=True,
                         help="output folder or s3:// URI (one already holding an exploration is refused)")
    explore.add_argument("--rows", type=_positive_int, default=6,
                         help="paths, and truncation rows; a conditional generator's row r keeps class r %% K "
                              "(default 6)")
    explore.add_argument("--frames", type=_positive_int, default=10,
                         help="steps along each path, at least 2 (default 10)")
    explore.add_argument("--per-class", type=_positive_int, default=10,
                         help="conditional generators: latents shown in every class's row (default 10)")
    explore.add_argument("--truncation", metavar="PSI,PSI,...",
                         help="comma-separated psi values from 1 (as drawn) to 0 (the average image), at least 2 "
                              "(default 1 to 0 in steps of 0.1)")
    explore.add_argument("--seed", type=int, default=0, help="latent seed (default 0)")
    explore.add_argument("--raw", action="store_true",
                         help="the trained generator instead of its exponential moving average")
    explore.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    explore.add_argument("--wandb", choices=["disabled", "offline", "online"], default="disabled",
                         help="also log the pictures to a W&B run 'explore-RUN' in the checkpoint's project "
                              "(default disabled)")

    complete = commands.add_parser(
        "complete", help="fill holes in a folder of images with an inpainting checkpoint",
        description="Complete every image under --input (a folder or s3:// prefix, read recursively; centre-cropped "
                    "and resized to the net's resolution) with holes from --mask, into a PNG of the same relative "
                    "name under --out. Unreadable files are skipped and counted.")
    _checkpoint_argument(complete)
    complete.add_argument("--input", required=True, help="folder or s3:// prefix of images")
    complete.add_argument("--out", required=True, help="output folder or s3:// URI (existing outputs are refused)")
    complete.add_argument("--mask", default="center",
                          help="center (default): a centred square over a quarter of the image; random: holes drawn "
                               "per image as in training (boxes, strokes, centre), from --seed; or a mask image "
                               "(local or s3://) whose white pixels mark the hole, for every input")
    complete.add_argument("--seed", type=int, default=0, help="seed of --mask random (default 0)")
    complete.add_argument("--batch-size", type=_positive_int, default=64, help="images per forward (default 64)")
    complete.add_argument("--device", choices=["cpu", "cuda"], default="cpu")

    bench = commands.add_parser(
        "bench", help="time the training step on synthetic on-device data, on real shards, and the reference loop",
        description="Time the project's training step in this process on one device: on synthetic uint8 batches "
                    "already on the device, on real shards kept resident and streamed, and (with --reference) the "
                    "plain PyTorch loop of reference_gan_bench.py at the same model and batch. Prints img/s and "
                    "ratios.")
    bench.add_argument("preset", nargs="?", default=DEFAULT_PRESET, help=f"preset name or YAML file (default {DEFAULT_PRESET})")
    bench.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set train.compile=off (repeatable)")
    bench.add_argument("--batch-size", type=_positive_int, help="images per step")
    bench.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                       help="auto: the GPU when there is one (default)")
    bench.add_argument("--steps", type=_positive_int, default=40, help="timed steps per repeat (default 40)")
    bench.add_argument("--warmup", type=_positive_int, default=8, help="untimed steps first (default 8)")
    bench.add_argument("--repeats", type=_positive_int, default=3, help="timed repeats; the median counts (default 3)")
    bench.add_argument("--data", help="prepared shards (default: synthetic shards written to a temporary folder)")
    bench.add_argument("--resolution", type=_positive_int, default=64, help="synthetic shards' resolution (default 64)")
    bench.add_argument("--channels", type=int, choices=[1, 3], default=3, help="synthetic shards' channels (default 3)")
    bench.add_argument("--reference", metavar="PATH", help="path of reference_gan_bench.py to time beside the step")
    bench.add_argument("--ray", action="store_true", help="also time the Ray Data streamed path (starts a local Ray)")
    bench.add_argument("--json", metavar="PATH",
                       help="also write the rows as JSON (a .json path; only an earlier bench result is replaced)")

    bench_data = commands.add_parser(
        "bench-data", help="time reading prepared shards into uint8 tensors, per format and size",
        description="Write synthetic datasets (raw and png, 32x32 and 64x64, RGB) under --root, then time pyarrow "
                    "reading plus the project's decode on one core, and with --ray the Ray Data path, for a few "
                    "batch sizes. Prints img/s and the time to the first batch.")
    bench_data.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "gan-dist-bench"),
                            help="where the datasets are written and reused (local or s3://; default: a folder "
                                 "in the temporary directory)")
    bench_data.add_argument("--count", type=_positive_int, default=20_000, help="images per dataset (default 20000)")
    bench_data.add_argument("--ray", action="store_true", help="also time the Ray Data path (starts a local Ray)")
    return parser


_FLAG_KEYS = {
    "data": "data.path", "data_a": "data.a", "data_b": "data.b", "backend": "run.backend",
    "num_workers": "run.num_workers", "address": "run.ray_address", "gpu": "run.gpu", "storage": "run.storage", "name": "run.name", "steps": "train.steps",
    "batch_size": "train.batch_size", "resume": "run.resume", "resume_from": "run.resume_from",
}


def _config(args: argparse.Namespace, flags: tuple[str, ...] = tuple(_FLAG_KEYS)) -> Config:
    """The preset or file, then its --set overrides, then those of `flags` that were given (train and bench)."""
    overrides: dict[str, Any] = dict(parse_override(text) for text in args.overrides)
    overrides.update({_FLAG_KEYS[flag]: getattr(args, flag) for flag in flags if getattr(args, flag) is not None})
    return load_config(args.preset, overrides)


def _check_device(device: str) -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was given but torch sees no CUDA device; use --device cpu")


def _train(args: argparse.Namespace) -> None:
    from gan_dist.runtime.launch import train

    result = train(_config(args))
    print(f"done: step {result.step}" + (f" (resumed from step {result.resumed_from})" if result.resumed_from is not None else ""))


def _tune(args: argparse.Namespace) -> None:
    from gan_dist.runtime.tune import TuneRequest, print_outcome, tune

    request = TuneRequest(
        _config(args, flags=("data", "data_a", "data_b")), args.space, args.metric, args.mode, args.scheduler,
        args.trials, args.workers_per_trial, args.gpu, args.budget_steps, args.storage, args.name, args.resume,
        args.address, args.concurrent, args.grace_steps, args.perturb_steps)
    print_outcome(tune(request), args.metric, args.name)


def _prepare(args: argparse.Namespace) -> None:
    from gan_dist.data.images import ImageSpec
    from gan_dist.data.prepare import PrepareOptions, prepare
    from gan_dist.models import check_resolution

    check_resolution(args.resolution)  # before reading a single image
    min_size = args.resolution // 4 if args.min_size is None else args.min_size
    spec = ImageSpec(args.resolution, args.channels, args.crop, args.resize_filter, min_size)
    options = PrepareOptions(spec, args.format, args.shard_size, args.workers, args.limit,
                             args.shuffle_seed, args.skip)
    manifest, skipped = prepare(args.source, args.out, options, root=args.root, download=args.download,
                                inputs=args.inputs)
    print(skipped.summary(manifest.count + sum(skipped.counts.values())), file=sys.stderr)
    print(f"wrote {manifest.count} images ({args.resolution}x{args.resolution}x{manifest.channels}, {args.format}) "
          f"in {len(manifest.shards)} shards to {args.out}")


def _bench(args: argparse.Namespace) -> None:
    import torch

    from gan_dist.bench import BenchOptions, check_json_target, format_rows, run_bench, write_json

    if args.json:
        check_json_target(args.json)  # one line now, not a traceback after the benchmark

    cfg = _config(args, flags=("batch_size",))  # its --steps and --data are the benchmark's own
    _check_device(args.device)
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    options = BenchOptions(device, args.steps, args.warmup, args.repeats, args.data, args.resolution, args.channels,
                           args.reference, args.ray)
    rows = run_bench(cfg, options)
    print(format_rows(rows))
    if args.json:
        write_json(rows, cfg, options, args.json)


def _sample(args: argparse.Namespace) -> None:
    from gan_dist.sample import write_samples
    from gan_dist.runtime.export import Workers, check_workers, export_dataset

    workers = Workers(args.backend, args.num_workers, args.gpu, args.address)
    if args.format == "parquet":
        manifest = export_dataset(args.checkpoint, args.out, args.num, workers, seed=args.seed,
                                  classes=args.classes, raw=args.raw, truncation=args.truncation,
                                  shard_size=args.shard_size)
        print(f"wrote {manifest.count} images ({manifest.resolution}x{manifest.resolution}x{manifest.channels}, "
              f"raw) in {len(manifest.shards)} shards to {args.out}")
        return
    if workers.resolved == "ray":
        raise UserError("--format png is written by this process alone; drop --backend ray, --num-workers and "
                        "--address, or write a dataset with --format parquet")
    check_workers(workers)
    written = write_samples(args.checkpoint, args.num, args.out, seed=args.seed, classes=args.classes, raw=args.raw,
                            truncation=args.truncation, device="cuda" if args.gpu else "cpu")
    print(f"wrote {len(written)} images to {args.out}")


def _json_target(uri: str | None) -> None:
    """One line before any work for a --json that would replace a file."""
    from gan_dist.storage import check_output_file

    if uri and check_output_file(uri, "--json"):
        raise UserError(f"--json {uri} already exists; pass a new path")


def _write_json(result: Any, uri: str | None) -> None:
    """A result dataclass as JSON, local or object storage, where --json asked for it."""
    if uri:
        import json
        from dataclasses import asdict

        from gan_dist.storage import write_bytes

        write_bytes(uri, json.dumps(asdict(result), indent=1).encode())


def _evaluate(args: argparse.Namespace) -> None:
    from gan_dist.evaluate import evaluate, format_table, parse_metrics

    names = parse_metrics(args.metrics)
    _json_target(args.json)
    _check_device(args.device)
    result = evaluate(args.checkpoint, args.data, args.num, names, args.features, args.seed, args.device,
                      args.inception_weights, args.data_a, args.data_b, args.mask, args.raw)
    print(format_table(result))
    _write_json(result, args.json)


def _augmentation_study(args: argparse.Namespace) -> None:
    from gan_dist.augmentation_study import format_augmentation, measure_augmentation

    _json_target(args.json)
    _check_device(args.device)
    result = measure_augmentation(args.checkpoint, args.held_out, args.data, args.real_fraction, args.synthetic,
                                  args.repeats, args.steps, args.seed, args.device)
    print(format_augmentation(result))
    _write_json(result, args.json)


def _agreement(args: argparse.Namespace) -> None:
    from gan_dist.eval.agreement import format_agreement, run

    _json_target(args.json)
    result = run(args.samples, args.data, args.steps, args.seed)
    print(format_agreement(result))
    _write_json(result, args.json)


def _bench_data(args: argparse.Namespace) -> None:
    from gan_dist.data.bench import bench_reading

    bench_reading(args.root, args.count, args.ray)


def _translate(args: argparse.Namespace) -> None:
    from gan_dist.translate import translate_folder

    _check_device(args.device)
    written, skipped, uri = translate_folder(args.checkpoint, args.input, args.out, args.direction, args.size,
                                             args.device, args.batch_size)
    print(skipped.summary(written + sum(skipped.counts.values())), file=sys.stderr)
    print(f"wrote {written} {args.direction} translations by {uri} to {args.out}")


def _explore(args: argparse.Namespace) -> None:
    from gan_dist.explore import DEFAULT_PSIS, ExploreOptions, explore, parse_psis

    _check_device(args.device)
    psis = parse_psis(args.truncation) if args.truncation is not None else DEFAULT_PSIS
    options = ExploreOptions(args.rows, args.frames, args.per_class, psis, args.seed, args.raw, args.device,
                             args.wandb)
    uri, written = explore(args.checkpoint, args.out, options)
    print(f"wrote {len(written)} pictures of {uri} to {args.out}")


def _complete(args: argparse.Namespace) -> None:
    from gan_dist.complete import complete_folder

    _check_device(args.device)
    written, skipped, uri = complete_folder(args.checkpoint, args.input, args.out, args.mask, args.seed, args.device,
                                            args.batch_size)
    print(skipped.summary(written + sum(skipped.counts.values())), file=sys.stderr)
    print(f"wrote {written} completed images ({args.mask} holes) by {uri} to {args.out}")


def _report(args: argparse.Namespace) -> None:
    from gan_dist.report import draw_curves

    print(f"wrote {draw_curves(args.run, args.out)}")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        {"train": _train, "tune": _tune, "prepare": _prepare, "sample": _sample, "report": _report, "bench": _bench,
         "evaluate": _evaluate, "augmentation-study": _augmentation_study, "agreement": _agreement,
         "bench-data": _bench_data, "translate": _translate, "complete": _complete,
         "explore": _explore}[args.command](args)
    except UserError as err:
        print(f"gan-dist: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as err:  # storage that failed mid-command (an endpoint gone, a disk full): a line, not a traceback
        print(f"gan-dist: error: {' '.join(str(err).split())[:400]}; check the storage and run the command again",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        advice = {"train": "; the newest complete checkpoint is kept (continue with --resume)",
                  "translate": "; the images written are whole: run the same command again to finish the rest",
                  "complete": "; the images written are whole: run the same command again to finish the rest"}
        print(f"gan-dist: interrupted{advice.get(args.command, '')}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
