"""checkpoint.copy: what a PBT exploit starts its run from (runtime/tune_trial.py)."""

from __future__ import annotations

import shutil

import pytest
import torch

from gan_dist import checkpoint


def test_a_copy_is_complete_and_identical_and_a_deleted_source_is_refused(tmp_path):
    state = {"nets": {"G": {"w": torch.arange(6.0)}}, checkpoint.EXPORTS: {"generator": {"w": torch.ones(3)}}}
    source = checkpoint.publish(str(tmp_path / "donor"), 40, state, {"step": 40, "metrics": {}})
    copied = checkpoint.copy(source, str(tmp_path / "t1-from-t0-40"))
    assert copied == str(tmp_path / "t1-from-t0-40" / "checkpoint_000000040")
    assert checkpoint.is_complete(copied) and checkpoint.load_meta(copied)["step"] == 40
    assert torch.equal(checkpoint.load_state(copied)["nets"]["G"]["w"], torch.arange(6.0))

    (tmp_path / "donor" / "checkpoint_000000040" / checkpoint.STATE_FILE).unlink()  # pruned while being copied
    with pytest.raises(checkpoint.CorruptCheckpoint, match="no state.pt"):
        checkpoint.copy(source, str(tmp_path / "t2"))
    shutil.rmtree(tmp_path / "donor")
    with pytest.raises(checkpoint.CorruptCheckpoint, match="no meta.json"):
        checkpoint.copy(source, str(tmp_path / "t3"))
    assert not (tmp_path / "t2" / "checkpoint_000000040" / checkpoint.META_FILE).exists()  # never looks complete
