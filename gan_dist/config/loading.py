"""Reading a config: preset YAML + dotted `--set` overrides, validated with one-line errors that name the bad key."""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from gan_dist.config.schema import DEFAULT_PRESET, PRESET_DIR, Config
from gan_dist.errors import UserError


class _Loader(yaml.SafeLoader):
    """YAML with 1.2 booleans (true/false only): YAML 1.1 reads on/off/yes/no as booleans, which turns documented
    values such as `compile: off` into False."""


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_NULLS = ("~", "null", "Null", "NULL")


def section_classes(annotation: Any) -> list[type[BaseModel]]:
    """The section classes an annotation stands for: one, the members of a union (the model families), or none."""
    if get_origin(annotation) is Annotated:
        return section_classes(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        return [section for arg in get_args(annotation) for section in section_classes(arg)]
    return [annotation] if isinstance(annotation, type) and issubclass(annotation, BaseModel) else []


def _is_section(annotation: Any) -> bool:
    return bool(section_classes(annotation))


def _field_type(key: str) -> Any:
    """The annotation of a dotted key in Config (a section's is its model class, or the union of the families');
    None for an unknown key."""
    node: Any = Config
    for part in key.split("."):
        fields = [section.model_fields[part] for section in section_classes(node) if part in section.model_fields]
        if not fields:
            return None
        node = fields[0].annotation
    return node


def tag_field(families: list[type[BaseModel]]) -> str:
    """The field a union of sections is told apart by (model: arch, task: kind)."""
    return next(name for name, field in families[0].model_fields.items() if get_origin(field.annotation) is Literal)


def _error_key(loc: tuple) -> str:
    """A validation error's location as the user's dotted key: without the family tag pydantic puts in it."""
    parts: list[str] = []
    for part in map(str, loc):
        families = section_classes(_field_type(".".join(parts))) if parts else []
        if len(families) > 1 and part in {family.model_fields[tag_field(families)].default for family in families}:
            continue  # the tag of the union member that was tried
        parts.append(part)
    return ".".join(parts)


def _is_text(annotation: Any) -> bool:
    """str, a Literal of strings, or either or None: fields whose value is the text as typed."""
    if annotation is str:
        return True
    args = get_args(annotation)
    if get_origin(annotation) is Literal:
        return all(isinstance(arg, str) for arg in args)
    if get_origin(annotation) in (Union, types.UnionType):
        return all(arg is type(None) or _is_text(arg) for arg in args)
    return False


def _not_a_mapping(section: str, value: Any) -> str:
    return f"config section '{section}' must be a mapping of its keys, not {value!r}"


def _describe(err: ValidationError, typed: Mapping[str, str]) -> str:
    """One line naming the key and the value as the user typed it (`typed`: --set text by key)."""
    first = err.errors()[0]
    key = _error_key(first["loc"])
    if first["type"] == "extra_forbidden":
        if any("." in str(part) for part in first["loc"]):  # only a YAML file can write one: --set splits dots
            return f"config key '{key}' has a dot in its name; in a YAML file nest it (train: {{steps: 5}})"
        return f"unknown config key '{key}' (check the spelling; `gan-dist train --help` lists the flags)"
    value = typed.get(key, first.get("input"))
    if first["type"] in ("model_type", "union_tag_not_found"):
        return _not_a_mapping(key, value)
    if first["type"] == "union_tag_invalid":  # an unknown model family or task
        tag_key = f"{key}.{tag_field(section_classes(_field_type(key)))}"
        tag, expected = typed.get(tag_key, first["ctx"]["tag"]), first["ctx"]["expected_tags"]
        return f"bad config value {tag_key}={tag!r}: expected {expected}"
    msg = str(first["ctx"]["error"]) if first["type"] == "value_error" else first["msg"]
    if not key:  # a rule across sections
        return f"bad config: {msg}"
    if _is_section(_field_type(key)):
        return f"bad config section '{key}': {msg}"  # a rule across the section's keys
    return f"bad config value {key}={value!r}: {msg}"


@dataclass(frozen=True)
class Override:
    """A `--set` value as the user typed it: load_config reads it by its key's type and echoes it in errors."""

    text: str


def parse_override(text: str) -> tuple[str, Override]:
    """`train.lr_g=1e-4` -> ("train.lr_g", Override("1e-4"))."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"bad --set '{text}': expected key=value, e.g. --set train.lr_g=1e-4")
    return key.strip(), Override(raw)


def _read_value(key: str, text: str) -> Any:
    """Text fields take the text as typed (`run.name=2024` is a name); other values are YAML scalars."""
    if not text.strip():
        return None  # as YAML reads an empty value
    annotation = _field_type(key)
    if _is_text(annotation) and not (text in _NULLS and type(None) in get_args(annotation)):
        return text
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return text


def _keep_text_as_written(node: yaml.Node, key: str = "") -> None:
    """Tag a file's plain scalars under text keys as strings, as `_read_value` reads `--set`: `name: 2024` is the
    name '2024', not a number (null, ~ and an empty value stay None where the key allows None)."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                _keep_text_as_written(value_node, f"{key}.{key_node.value}" if key else key_node.value)
        return
    annotation = _field_type(key)
    null = node.value in _NULLS or not node.value
    if isinstance(node, yaml.ScalarNode) and node.style is None and _is_text(annotation) \
            and not (null and type(None) in get_args(annotation)):
        node.tag = "tag:yaml.org,2002:str"


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = tree
    for depth, part in enumerate(parents, 1):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            section = ".".join(parents[:depth])
            if _is_section(_field_type(section)):  # the file gave the section a scalar or a list
                raise UserError(_not_a_mapping(section, child))
            raise UserError(f"unknown config key '{key}': '{part}' is a value, not a section")
        node = child
    node[leaf] = value


def _read_preset(name_or_file: str) -> tuple[str, dict]:
    path = Path(name_or_file)
    if path.is_dir():
        raise UserError(f"'{name_or_file}' is a directory; expected a preset name or a YAML config file")
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_file}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
        raise UserError(f"no preset or config file '{name_or_file}' (presets: {known})")
    try:
        loader = _Loader(path.read_text())
        try:
            node = loader.get_single_node()
            if node is not None:
                _keep_text_as_written(node)
            tree = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except OSError as exc:
        raise UserError(f"cannot read config file {path}: {exc.strerror}") from None
    sections = ", ".join(name for name, field in Config.model_fields.items() if _is_section(field.annotation))
    if tree is None:
        raise UserError(f"config file {path} is empty; write its sections ({sections}) or name a preset")
    if not isinstance(tree, dict):
        raise UserError(f"config file {path} must hold a mapping of sections ({sections}), not {type(tree).__name__}")
    tree.setdefault("preset", path.stem)
    return path.stem, tree


def load_config(preset: str | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Build the config from a preset name or YAML file, then apply dotted overrides (values or Override text)."""
    _, tree = _read_preset(preset or DEFAULT_PRESET)
    return _overridden(tree, overrides or {})


def override_config(cfg: Config, overrides: Mapping[str, Any]) -> Config:
    """`cfg` with dotted overrides (values or Override text) applied and validated again: a tune trial's config."""
    return _overridden(cfg.model_dump(), overrides)


def _overridden(tree: dict, overrides: Mapping[str, Any]) -> Config:
    typed: dict[str, str] = {}
    for key, value in overrides.items():
        if isinstance(value, Override):
            typed[key] = value.text
            value = _read_value(key, value.text)
        _set_dotted(tree, key, value)
    return config_from_dict(tree, typed)


def config_from_dict(tree: dict, typed: Mapping[str, str] | None = None) -> Config:
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise UserError(_describe(err, typed or {})) from None
