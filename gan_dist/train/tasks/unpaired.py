"""Unpaired image-to-image translation between datasets A and B: what CycleGAN and CUT share (the two domains, the
translators' previews and exports, the DDP-wrapped and compiled views of the nets, the data checks, and the
measurement during training)."""

from __future__ import annotations

import torch
from torch import nn

from gan_dist.config import Config
from gan_dist.data.placement import Dataset
from gan_dist.data.reader import Batch
from gan_dist.data.shards import Manifest
from gan_dist.eval.translation import judge_all, judges, translation_logged
from gan_dist.imaging import grid_image, to_model_range, to_uint8
from gan_dist.models import build_patch_discriminator, build_translator, check_translation_sizes
from gan_dist.train import speed
from gan_dist.train.context import WorkerContext
from gan_dist.train.task import Measure, Task, first_images, replicated

PREVIEW_IMAGES = 8  # source images per domain in the preview grid: a column each


class TranslationTask(Task):
    """The nets are built by subclasses; this holds what every translation task does with them."""

    EXPORTS = {"translator_a2b": ("translate", "evaluate"), "translator_b2a": ("translate", "evaluate")}

    @classmethod
    def check_data(cls, cfg: Config, datasets: dict[str, Dataset]) -> None:
        super().check_data(cfg, datasets)
        check_translation_sizes(cfg.model, datasets["a"].manifest, datasets["b"].manifest)

    @classmethod
    def measured(cls, cfg: Config, manifests: dict[str, Manifest]) -> tuple[str, ...]:
        return translation_logged(cfg)

    def measure(self, ctx: WorkerContext) -> Measure | None:
        """Rank 0 translates the first eval.num images of each source domain with the current translators and
        judges them (eval/translation.py); the other ranks go on training and wait for it at their next
        collective."""
        e = self.cfg.eval
        if e.features == "off" or ctx.rank != 0:
            return None
        found = judges(self.cfg, ctx.datasets, ctx.datasets, e.metric_names(), e.num, e.features, ctx.device)
        return lambda: judge_all(found, self.translators())

    def __init__(self, cfg: Config, datasets: dict[str, Dataset], device: torch.device, rank: int, world_size: int):
        super().__init__(cfg, device, rank, world_size)
        self.channels = {name: datasets[name].manifest.channels for name in self.datasets}
        self.preview_inputs = {name: first_images(datasets[name], PREVIEW_IMAGES, device) for name in self.datasets}

    def translator(self, source: str, target: str) -> nn.Module:
        return build_translator(self.cfg.model, self.channels[source], self.channels[target])

    def discriminator(self, domain: str) -> nn.Module:
        return build_patch_discriminator(self.cfg.model, self.channels[domain])

    def distributed(self, net: nn.Module, compile: bool = True) -> nn.Module:
        return replicated(net, self.device, self.world_size, self.features, compile)

    def translators(self) -> dict[str, nn.Module]:
        """The trained translators by direction ("a2b", "b2a"): what inference and evaluation use."""
        raise NotImplementedError

    def reals(self, batches: dict[str, Batch]) -> tuple[torch.Tensor, torch.Tensor]:
        speed.mark_step_begin(self.features)
        return tuple(to_model_range(batches[name]["image"].to(self.device, non_blocking=True))
                     for name in self.datasets)

    @torch.no_grad()
    def preview(self) -> torch.Tensor:
        """A row of source images per direction, under it their translations, under those the translations back
        where there is a way back: input | translation | translated back, a column per image."""
        nets = self.translators()
        rows = []
        for direction, net in nets.items():
            source = self.preview_inputs[direction[0]]
            with self.autocast():
                translated = net(source)
                rows += [source, translated]
                back = nets.get(direction[::-1])
                if back is not None:
                    rows.append(back(translated))
        images = [to_uint8(row) for row in rows]
        if len({len(x) for x in images}) > 1 or len({x.shape[1] for x in images}) > 1:
            images = [_rgb(_pad(x, PREVIEW_IMAGES)) for x in images]  # domains of other sizes or channel counts
        return grid_image(torch.cat(images), nrow=len(images[0]))

    def export(self) -> dict[str, dict[str, torch.Tensor]]:
        return {f"translator_{direction}": net.state_dict() for direction, net in self.translators().items()}


def _rgb(images: torch.Tensor) -> torch.Tensor:
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def _pad(images: torch.Tensor, n: int) -> torch.Tensor:
    """n images (black ones after a short row)."""
    return torch.cat([images, images.new_zeros((n - len(images), *images.shape[1:]))]) if len(images) < n else images
