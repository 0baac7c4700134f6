"""The exact-resume comparison every task's resume test relies on: it must fail on any difference, and say where."""

import ast
import re
from pathlib import Path

import pytest
import torch

from helpers import assert_same_state


def state() -> dict:
    return {"nets": {"G": {"w": torch.arange(6.0).reshape(2, 3)}},
            "optimizers": {"G": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 1e-4}]}},
            "adversary": {"ada": {"p": torch.tensor(0.16)}, "lecam": {"means": torch.tensor([0.1, float("nan")])}},
            "ranks": [{"pools": {"a": {"images": torch.zeros(2, 1, 4, 4), "count": 2}}}],
            "rng": [{"cpu": torch.arange(8, dtype=torch.uint8)}], "train": {"step": 6}}


def test_identical_states_pass_nan_included():
    assert_same_state(state(), state())


@pytest.mark.parametrize("change, message", [
    (lambda s: s["adversary"]["ada"].__setitem__("p", torch.tensor(0.17)), "state/adversary/ada/p: 1 of 1 elements"),
    (lambda s: s["nets"]["G"]["w"].__setitem__((1, 2), -1.0),
     "state/nets/G/w: 1 of 6 elements differ, the first at flat index 5: 5.0 against -1.0"),
    (lambda s: s["optimizers"]["G"]["state"][0]["step"].add_(1), "state/optimizers/G/state/0/step"),
    (lambda s: s["optimizers"]["G"]["param_groups"][0].__setitem__("lr", 2e-4),
     "state/optimizers/G/param_groups/0/lr: 0.0001 against 0.0002"),
    (lambda s: s["ranks"][0]["pools"]["a"].__setitem__("count", 1), "state/ranks/0/pools/a/count: 2 against 1"),
    (lambda s: s["rng"][0]["cpu"].__setitem__(7, 0), "state/rng/0/cpu"),
    (lambda s: s["adversary"].pop("lecam"), "state/adversary: keys only in the first ['lecam'], only in the second []"),
    (lambda s: s.__setitem__("ema", {}), "state: keys only in the first [], only in the second ['ema']"),
    (lambda s: s["rng"].append({}), "state/rng: 1 items against 2"),
    (lambda s: s["nets"]["G"].__setitem__("w", torch.arange(6).reshape(2, 3)),
     "torch.float32 (2, 3) against torch.int64"),
    (lambda s: s["nets"]["G"]["w"].__setitem__((0, 0), -0.0), "the first at flat index 0: 0.0 against -0.0"),
], ids=["ada_p", "net", "adam_step", "lr", "pool_count", "rng", "missing_key", "extra_key", "list_length", "dtype",
        "signed_zero"])
def test_any_difference_fails_naming_its_key_path(change, message):
    other = state()
    change(other)
    with pytest.raises(AssertionError, match=re.escape(message)):
        assert_same_state(state(), other)


def test_no_test_module_imports_conftest_or_another_test_module():
    """Shared code lives in helpers.py (and the small helper modules beside it): a test module importing conftest or
    another test module runs that module's import-time code and ties the two together."""
    offenders = []
    for path in sorted(Path(__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            offenders += [f"{path.name}:{node.lineno} imports {name}" for name in names
                          if name == "conftest" or name.startswith("test_")]
    assert offenders == []
