"""`gan-dist tune --space KEY=SPEC`: what a search draws each config key from, parsed and checked against the
config before any trial starts. No Ray here: runtime/tune.py turns a Space into Ray Tune's domains."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from gan_dist.config import RETUNABLE, Config, Override, override_config
from gan_dist.errors import UserError

RANGES = ("loguniform", "uniform")
LISTS = ("choice", "grid")
SPEC = re.compile(r"(\w+)\((.*)\)")
SPEC_FORMS = "loguniform(LOW,HIGH), uniform(LOW,HIGH), choice(A,B,...) or grid(A,B,...)"
# Keys the tune command sets for every trial itself, from its own flags.
TUNE_OWNED = {"train.steps": "--budget-steps", "run.": "the tune command's flags", "eval.where": "inline, always"}
# Inside a range's interior, away from round numbers: an int-only key refuses it as a whole number would not be.
_PROBE = 0.37


@dataclass(frozen=True)
class Spec:
    """How one key's values are drawn: `low`, `high` for a range; the texts as typed for a list (each read as
    `--set` reads it, in the trial)."""

    kind: str
    low: float = 0.0
    high: float = 0.0
    values: tuple[str, ...] = ()

    def describe(self) -> str:
        args = f"{self.low:g},{self.high:g}" if self.kind in RANGES else ",".join(self.values)
        return f"{self.kind}({args})"

    def override(self, value: Any) -> Any:
        """A drawn value as `override_config` takes it: a list's text is read by the key's type, as --set reads it."""
        return Override(value) if self.kind in LISTS else value

    def examples(self) -> list[Any]:
        """Values that stand for the whole spec when the config checks it: both ends and an interior point of a
        range, every entry of a list."""
        if self.kind in LISTS:
            return list(self.values)
        if self.kind == "loguniform":
            inside = math.exp(math.log(self.low) + _PROBE * (math.log(self.high) - math.log(self.low)))
        else:
            inside = self.low + _PROBE * (self.high - self.low)
        return [self.low, inside, self.high]


Space = dict[str, Spec]


def parse_spec(key: str, text: str) -> Spec:
    bad = f"bad --space {key}={text}: expected {SPEC_FORMS}"
    match = SPEC.fullmatch(text.strip())
    if not match or match[1] not in RANGES + LISTS:
        raise UserError(bad)
    kind, args = match[1], [arg.strip() for arg in match[2].split(",")]
    if kind in LISTS:
        if not all(args):
            raise UserError(f"{bad} (an empty value)")
        if len(set(args)) != len(args):
            raise UserError(f"bad --space {key}={text}: a value is listed twice")
        return Spec(kind, values=tuple(args))
    try:
        low, high = (float(arg) for arg in args) if len(args) == 2 else (math.nan, math.nan)
    except ValueError:
        low = high = math.nan
    if not (math.isfinite(low) and math.isfinite(high)):
        raise UserError(f"{bad} (two numbers)")
    if not low < high:
        raise UserError(f"bad --space {key}={text}: LOW must be below HIGH")
    if kind == "loguniform" and low <= 0:
        raise UserError(f"bad --space {key}={text}: loguniform needs LOW > 0; use uniform for a range from 0")
    return Spec(kind, low, high)


def parse_space(texts: list[str], base: Config, retunable_only: bool = False) -> Space:
    """Each KEY=SPEC checked against `base`: the key exists, is not one the tune command sets, and every value the
    spec stands for makes a valid config (so a trial cannot fail on its config). `retunable_only` (PBT, which
    changes a running trial's values) refuses keys whose change a resume does not apply."""
    space: Space = {}
    for text in texts:
        key, sep, spec_text = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"bad --space '{text}': expected KEY=SPEC, e.g. --space train.lr_g=loguniform(1e-5,1e-3)")
        if key in space:
            raise UserError(f"--space {key} is given twice; give each key one SPEC")
        owned = next((flag for prefix, flag in TUNE_OWNED.items() if key == prefix or
                      (prefix.endswith(".") and key.startswith(prefix))), None)
        if owned:
            raise UserError(f"--space {key}: the tune command sets it for every trial ({owned}); search other keys")
        spec = parse_spec(key, spec_text)
        for example in spec.examples():
            try:
                override_config(base, {key: spec.override(example)})
            except UserError as exc:
                raise UserError(f"--space {key}={spec_text.strip()}: {exc}") from None
        if retunable_only and key not in RETUNABLE:
            raise UserError(f"--space {key}: PBT changes the values of running trials and a resume cannot change "
                            f"{key}; with --scheduler pbt search {', '.join(RETUNABLE)}, or use --scheduler asha")
        space[key] = spec
    return space


def grid_only(space: Space) -> bool:
    return all(spec.kind == "grid" for spec in space.values())
