"""The kinds of model gan-dist trains, a module each, registered here by their config section's task.kind: a new
kind is a module in this package (its Task), its config section, and a line in TASKS."""

from __future__ import annotations

import torch

from gan_dist.config import Config
from gan_dist.data.placement import Dataset
from gan_dist.train.task import Task
from gan_dist.train.tasks.cut import CUTTask
from gan_dist.train.tasks.cyclegan import CycleGANTask
from gan_dist.train.tasks.generation import GenerationTask
from gan_dist.train.tasks.inpaint import InpaintTask
from gan_dist.train.tasks.pix2pix import Pix2PixTask

TASKS: dict[str, type[Task]] = {task.kind(): task for task in (GenerationTask, CycleGANTask, CUTTask, InpaintTask,
                                                               Pix2PixTask)}


def task_class(cfg: Config) -> type[Task]:
    return TASKS[cfg.task.kind]


def build_task(cfg: Config, datasets: dict[str, Dataset], device: torch.device, rank: int = 0,
               world_size: int = 1) -> Task:
    """The task a config trains, on its named datasets."""
    return task_class(cfg)(cfg, datasets, device, rank, world_size)
