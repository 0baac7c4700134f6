"""Guards that every config value the project documents loads as written, from `--set key=value` and from a YAML
file: each value of every enumerated key (Literal and bool fields, found by walking the Config model, discriminated
unions included) and every value README.md and the docs/ pages show (`--set` examples, backticked `key=value` /
`key: value`, the defaults column of the configuration reference's tables)."""

import functools
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pytest
from pydantic import BaseModel

from gan_dist.config import TASK_SECTIONS, Config, load_config, parse_override
from gan_dist.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
PRESET = "dcgan-digits"

# Values a field validator normalises (LogConfig._off_is_disabled: W&B has no "off" mode).
ALIASES = {("log.wandb", "off"): "disabled"}
# Values that need another key to pass the config's own cross-key rules, as (key, value) -> {key: value}.
# None today: the preset runs one worker, so run.backend=local passes RunConfig._local_is_one_process; a member of
# a union section gets its discriminator from the walk below, not from here.
COMPANIONS: dict[tuple[str, str], dict[str, str]] = {}
# `--set` keys in the docs that stand for any key (the README's synopsis, the configuration reference's intro).
PLACEHOLDER_KEYS = {"key", "section.key"}
PLACEHOLDER_VALUE = re.compile(r"[A-Z][A-Z0-9_-]*")  # N, RUN, PRESET-TIMESTAMP: the docs' metavariables


# ---- the model tree ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Place:
    """Where a dotted key lives: its annotation, and the union members on its path (one place per member)."""

    annotation: Any
    companions: tuple[tuple[str, str], ...] = ()  # (discriminator key, tag) that select the members
    members: tuple[tuple[str, type], ...] = ()  # (section key, member class)


def _unwrap(annotation):
    return get_args(annotation)[0] if get_origin(annotation) is Annotated else annotation


def _is_model(annotation) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _union_args(annotation) -> tuple:
    return get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else ()


def _section_members(annotation) -> list[type]:
    """The model classes of a section field: [cls] for a plain section, every member of a union of sections."""
    annotation = _unwrap(annotation)
    if _is_model(annotation):
        return [annotation]
    args = [_unwrap(arg) for arg in _union_args(annotation) if arg is not type(None)]
    return args if args and all(_is_model(arg) for arg in args) else []


def _tag_field(field, members: list[type]) -> str:
    """The discriminator's name: pydantic's own, else the one field that is a one-value Literal in every member."""
    if isinstance(field.discriminator, str):
        return field.discriminator
    common = set.intersection(*(set(m.model_fields) for m in members))
    tags = [name for name in sorted(common) if all(
        get_origin(_unwrap(m.model_fields[name].annotation)) is Literal
        and len(get_args(_unwrap(m.model_fields[name].annotation))) == 1 for m in members)]
    assert len(tags) == 1, f"cannot tell the discriminator of the union of {[m.__name__ for m in members]}: {tags}"
    return tags[0]


def _text(value) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def walk(model=Config, prefix="", companions=(), members=(), places=None, union_tags=None):
    """({dotted key: [Place]}, {discriminator key: every tag}) for the leaves of the config tree."""
    places = {} if places is None else places
    union_tags = {} if union_tags is None else union_tags
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        classes = _section_members(field.annotation)
        if len(classes) == 1:
            walk(classes[0], f"{key}.", companions, members, places, union_tags)
        elif classes:
            tag = _tag_field(field, classes)
            tags = [_text(get_args(_unwrap(c.model_fields[tag].annotation))[0]) for c in classes]
            union_tags[f"{key}.{tag}"] = set(tags)
            for cls, value in zip(classes, tags):
                walk(cls, f"{key}.", companions + ((f"{key}.{tag}", value),), members + ((key, cls),), places,
                     union_tags)
        else:
            places.setdefault(key, []).append(Place(field.annotation, companions, members))
    return places, union_tags


PLACES, UNION_TAGS = walk()
SECTIONS = {key.split(".")[0] for key in PLACES}


def enumerated(annotation) -> list[tuple[str, Any]]:
    """(text as documented, value it loads as) for a Literal or bool field, through Optional/Union."""
    annotation = _unwrap(annotation)
    if annotation is bool:
        return [("true", True), ("false", False)]
    if get_origin(annotation) is Literal:
        return [(_text(value), value) for value in get_args(annotation)]
    return [item for arg in _union_args(annotation) for item in enumerated(arg)]


def enumerated_cases() -> dict[tuple[str, str], Any]:
    cases = {}
    for key, places in PLACES.items():
        for place in places:
            for text, value in enumerated(place.annotation):
                cases.setdefault((key, text), ALIASES.get((key, text), value))
    return cases


ENUMERATED = enumerated_cases()


def accepts(annotation, text: str) -> bool:
    """Whether `text` can be a value of the field at all (only enumerated fields and None are told apart)."""
    args = [_unwrap(arg) for arg in _union_args(_unwrap(annotation))] or [_unwrap(annotation)]
    if text in ("null", "~"):
        return type(None) in args
    if any(arg not in (bool, type(None)) and get_origin(arg) is not Literal for arg in args):
        return True  # a number or free text: the config itself judges it
    return text in {documented for documented, _ in enumerated(annotation)}


def needed_overrides(key: str, text: str) -> tuple[dict[str, str], list[Place]]:
    """The extra overrides (key -> text) that `key=text` needs, and the places it can load into."""
    valid = [place for place in PLACES[key] if accepts(place.annotation, text)]
    assert valid, f"{key}={text}: no section member of the config accepts it"
    extra = {}
    for disc_key, tag in valid[0].companions:
        # a key/value that every member of the union takes needs no discriminator: the preset's member takes it
        if {dict(place.companions)[disc_key] for place in valid} != UNION_TAGS[disc_key] and disc_key != key:
            extra[disc_key] = tag  # this value exists only in some members: select one
    extra.update(COMPANIONS.get((key, text), {}))
    return extra, valid


def translation_companions(overrides: dict[str, str]) -> tuple[dict[str, str], str]:
    """A task that trains other nets than generation's (translation, inpainting, pix2pix) needs its model family
    and the other way round: the companion keys, and the preset of that task to --set on (a generation preset's
    model keys are not a translator's)."""
    kind, arch = overrides.get("task.kind"), overrides.get("model.arch")
    sections = {section.kind_name(): section for section in TASK_SECTIONS}
    if kind is None and arch is not None and arch not in sections["generation"].ARCHS:
        kind = next(name for name, section in sections.items() if arch in section.ARCHS)  # its first task
    if kind is None or kind == "generation":
        return {}, PRESET
    return {"task.kind": kind, "model.arch": sections[kind].ARCHS[0]}, f"{kind}-digits"


# ---- loading -----------------------------------------------------------------------------------------------------

def dotted(cfg: Config, key: str) -> Any:
    return functools.reduce(getattr, key.split("."), cfg)


def yaml_text(overrides: dict[str, str]) -> str:
    """The overrides as a user writes them in a file: nested sections, values unquoted."""
    tree: dict = {}
    for key, text in overrides.items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = text

    def lines(node: dict, depth: int):
        for name, value in node.items():
            if isinstance(value, dict):
                yield f"{'  ' * depth}{name}:"
                yield from lines(value, depth + 1)
            else:
                yield f"{'  ' * depth}{name}: {value}"

    return "\n".join(lines(tree, 0)) + "\n"


def check_loads(key: str, text: str, expected: Any, tmp_path: Path, origin: str) -> None:
    """`key=text` loads from --set on the preset and from a YAML file, and reads back as `expected`."""
    extra, valid = needed_overrides(key, text)
    overrides = {**extra, key: text}
    companions, preset = translation_companions(overrides)
    overrides = {**companions, **overrides}
    path = tmp_path / "mine.yaml"
    path.write_text(yaml_text(overrides))
    set_args = [f"{k}={v}" for k, v in overrides.items()]
    sources = {
        "--set " + " --set ".join(set_args): lambda: load_config(preset, dict(map(parse_override, set_args))),
        f"YAML file {path.read_text()!r}": lambda: load_config(str(path), {}),
    }
    for how, load in sources.items():
        try:
            cfg = load()
        except UserError as exc:
            pytest.fail(f"{origin}: {key}={text} does not load from {how}: {exc}")
        got = dotted(cfg, key)
        same = got == pytest.approx(expected) if isinstance(expected, float) else got == expected
        assert same and type(got) is type(expected), \
            f"{origin}: {key}={text} from {how} reads back as {got!r}, expected {expected!r}"
        assert any(all(isinstance(dotted(cfg, section), cls) for section, cls in place.members) for place in valid), \
            f"{origin}: {key}={text} from {how} did not select the section member that has it"


# ---- 1. every enumerated value of the model tree -----------------------------------------------------------------

@pytest.mark.parametrize("key, text", sorted(ENUMERATED), ids=lambda item: item)
def test_every_enumerated_value_loads_from_set_and_a_file(key, text, tmp_path):
    check_loads(key, text, ENUMERATED[key, text], tmp_path, "enumerated value")


def test_the_walk_finds_the_enumerated_keys():
    # a walk that silently stopped recursing (a new section shape) would leave the parametrization above empty
    for key in ("data.placement", "model.arch", "train.compile", "train.bf16", "run.backend", "log.wandb"):
        assert any(k == key for k, _ in ENUMERATED), f"the Config walk missed {key}"
    assert ("train.compile", "off") in ENUMERATED and ("run.gpu", "true") in ENUMERATED


# ---- 2. every value the docs show --------------------------------------------------------------------------------

def _leaf_key(word: str) -> str | None:
    """A dotted key as written, or the dotted key of a leaf name that only one key ends with (`compile`)."""
    if word in PLACES:
        return word
    matches = {key for key in PLACES if key.rsplit(".", 1)[-1] == word}
    return matches.pop() if len(matches) == 1 else None


def documented_values(text: str, doc: str) -> list[tuple[str, str, str]]:
    """(key, value, where) for every config value the document `doc` shows."""
    found = []
    for key, value in re.findall(r"--set\s+([^\s=`]+)=([^\s`]+)", text):  # prose and code blocks alike
        if key not in PLACEHOLDER_KEYS:
            found.append((key, value, f"{doc} `--set {key}={value}`"))
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    for span in re.findall(r"`([^`\n]+)`", prose):
        match = re.fullmatch(r"([A-Za-z_][\w.]*)(?:=|: )(\S+)", span)
        if not match:
            continue
        word, value = match.groups()
        key = _leaf_key(word)
        if key is not None:
            found.append((key, value, f"{doc} `{span}`"))
        elif "." in word and word.split(".")[0] in SECTIONS:
            found.append((word, value, f"{doc} `{span}`"))  # a misspelled key: fails below as unknown
    for line in prose.splitlines():  # a key table: | `sec.a`, `b` | default-a, default-b | ... |
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not re.fullmatch(r"`\w+\.\w+`(, `[\w.]+`)*", cells[0]):
            continue
        names = re.findall(r"`([\w.]+)`", cells[0])
        # one key's default is the whole cell (`center,boxes,strokes` is one value); several keys' are comma-separated
        defaults = [cells[1]] if len(names) == 1 else cells[1].split(",")
        defaults = [value.strip().strip("`") for value in defaults]
        assert len(names) == len(defaults), f"{doc} table row {cells[0]} lists {len(defaults)} defaults"
        section = names[0].split(".")[0]
        for name, value in zip(names, defaults):
            key = name if "." in name else f"{section}.{name}"
            found.append((key, value, f"{doc} table row {cells[0]}"))
    return found


DOCUMENTED_VALUES = [found for path in DOCUMENTS
                     for found in documented_values(path.read_text(), str(path.relative_to(ROOT)))]
DOCUMENTED_CASES = {(key, value): where for key, value, where in reversed(DOCUMENTED_VALUES)}  # first mention names it


def expected_value(key: str, text: str) -> Any:
    """What `text` must read back as, by the key's type (numbers as numbers, null as None, text as typed)."""
    annotations = [_unwrap(place.annotation) for place in PLACES[key]]  # a family's key may differ in type
    args = [_unwrap(arg) for annotation in annotations for arg in _union_args(annotation) or [annotation]]
    if text in ("null", "~") and type(None) in args:
        return None
    if (key, text) in ENUMERATED:
        return ENUMERATED[key, text]
    for kind in (int, float):
        if kind in args:
            try:
                return kind(text)
            except ValueError:  # `int | str` (run.num_workers: 2-4) reads other text as text
                continue
    return text


@pytest.mark.parametrize("key, text", sorted(DOCUMENTED_CASES), ids=lambda item: item)
def test_every_documented_value_loads_from_set_and_a_file(key, text, tmp_path):
    where = DOCUMENTED_CASES[key, text]
    assert key in PLACES, f"{where}: '{key}' is not a config key"
    if PLACEHOLDER_VALUE.fullmatch(text):
        return  # a metavariable (N, RUN): the key is real, the value is the reader's
    check_loads(key, text, expected_value(key, text), tmp_path, where)


def test_the_extraction_finds_the_documented_values():
    # an extraction that matched nothing (a changed docs layout) would leave the parametrization above empty
    for case in [("train.compile", "off"), ("run.name", "2024"), ("train.lr_d", "1e-4"), ("model.g_channels", "64"),
                 ("train.compile_backend", "aot_eager"), ("data.placement", "auto"), ("log.wandb", "auto")]:
        assert case in DOCUMENTED_CASES, f"the docs extraction missed {case}"


# ---- 3. the example ----------------------------------------------------------------------------------------

def test_compile_off_is_the_mode_off(tmp_path):
    assert load_config(PRESET, dict([parse_override("train.compile=off")])).train.compile == "off"
    path = tmp_path / "mine.yaml"
    path.write_text("train:\n  compile: off\n")
    assert load_config(str(path), {}).train.compile == "off"


@pytest.mark.parametrize("source", ["--set", "file"])
def test_a_misspelled_mode_is_echoed_as_typed(source, tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("train:\n  compile: offf\n")
    with pytest.raises(UserError) as caught:
        if source == "--set":
            load_config(PRESET, dict([parse_override("train.compile=offf")]))
        else:
            load_config(str(path), {})
    message = str(caught.value)
    assert "train.compile" in message and "'offf'" in message, message
    assert not re.search(r"\b(true|false)\b", message, re.I), f"the error lists a bool: {message}"
