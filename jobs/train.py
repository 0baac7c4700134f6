"""Entrypoint for `ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- python jobs/train.py ...`
and for the KubeRay RayJobs in k8s/: `gan-dist train`, joining the cluster the job runs on.

Where the job's environment says so and the command line does not, it sets: GAN_DIST_STORAGE (--storage, e.g.
s3://bucket/runs), GAN_DIST_NUM_WORKERS (--num-workers), GAN_DIST_STEPS (--steps), GAN_DIST_DATA (--data), and
for translation presets GAN_DIST_DATA_A / GAN_DIST_DATA_B (--data-a / --data-b). W&B follows WANDB_MODE /
WANDB_API_KEY as everywhere."""

import os
import sys

from gan_dist.cli import main

FROM_ENVIRONMENT = {"GAN_DIST_STORAGE": "--storage", "GAN_DIST_NUM_WORKERS": "--num-workers",
                    "GAN_DIST_STEPS": "--steps", "GAN_DIST_DATA": "--data", "GAN_DIST_DATA_A": "--data-a",
                    "GAN_DIST_DATA_B": "--data-b"}


def train_args(argv: list[str], environ: dict[str, str]) -> list[str]:
    args = ["train", *argv]
    for variable, flag in FROM_ENVIRONMENT.items():
        if environ.get(variable) and flag not in argv:
            args += [flag, environ[variable]]
    if "--backend" not in argv:
        args += ["--backend", "ray"]  # a job always runs on its cluster, one worker or many
    return args


if __name__ == "__main__":
    sys.exit(main(train_args(sys.argv[1:], dict(os.environ))))
