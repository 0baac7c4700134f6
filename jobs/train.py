"""Entrypoint for `ray job submit --working-dir . -- python jobs/train.py [train flags]`: the same code path as
`gan-dist train`, joining the cluster the job runs on."""

import sys

from gan_dist.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
