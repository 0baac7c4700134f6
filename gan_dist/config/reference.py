"""The configuration reference, docs/configuration.md, rendered from the schema: each section's docstring and each
key's type, bounds, default and `Field(description=...)`. After changing a config section, regenerate it:

    python -m gan_dist.config.reference > docs/configuration.md
"""

from __future__ import annotations

import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from gan_dist.config.loading import section_classes, tag_field
from gan_dist.config.schema import Config

INTRO = """\
# Configuration reference

<!-- Generated from gan_dist/config/schema.py by `python -m gan_dist.config.reference > docs/configuration.md`:
edit the field descriptions there, then regenerate. tests/test_config_reference.py fails while this is stale. -->

A run's configuration is a preset (`gan_dist/configs/*.yaml`) or your own YAML file with the same sections,
then `--set section.key=value` overrides, then the flags. Unknown keys and bad values are errors that name the
key and echo the value as typed. Values are read by the key's type: text keys keep what you typed
(`--set run.name=2024`, `--set train.compile=off`), and in files and `--set` alike only `true`/`false` are
booleans (YAML 1.2), so `compile: off` means the mode `off`.

The model and the task sections are one section per model family and per task kind, chosen by `model.arch` and
`task.kind`: keys another family or kind lacks are refused.
"""

# annotated_types' bound classes (Field(ge=...) and the like) by attribute, as the reference writes them
_BOUNDS = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤"}
_TYPE_NAMES = {int: "integer", float: "number", bool: "true/false", str: "text"}


def _type_text(annotation: Any) -> str:
    """A key's type in words: `number or null`, `one of auto, resident, stream`, `integer or list of integers`."""
    if get_origin(annotation) is Literal and len(get_args(annotation)) == 1:
        return "selects this section"  # a union member's tag (model.arch, task.kind)
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in get_args(annotation))
    if get_origin(annotation) in (Union, types.UnionType):
        args = get_args(annotation)
        kinds = [_type_text(arg) for arg in args if arg is not type(None)]
        return " or ".join(kinds + (["null"] if type(None) in args else []))
    if get_origin(annotation) is list:
        return f"list of {_type_text(get_args(annotation)[0])}s"
    return _TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _bounds_text(field: FieldInfo) -> str:
    bounds = [f"{sign} {getattr(meta, name)}" for meta in field.metadata for name, sign in _BOUNDS.items()
              if getattr(meta, name, None) is not None]
    return ", ".join(bounds)


def _value_text(value: Any) -> str:
    """A default as a user writes it in YAML or `--set`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(prefix: str, fields: dict[str, FieldInfo]) -> list[str]:
    rows = ["| key | default | type | description |", "|---|---|---|---|"]
    for name, field in fields.items():
        kind = ", ".join(part for part in (_type_text(field.annotation), _bounds_text(field)) if part)
        rows.append(f"| `{prefix}{name}` | `{_value_text(field.default)}` | {_cell(kind)} | "
                    f"{_cell(field.description or '')} |")
    return rows


def _doc(section: type[BaseModel]) -> str:
    return " ".join((section.__doc__ or "").split())


def render() -> str:
    """The whole reference: the top-level keys, then one table per section and per member of a union section."""
    top = {name: field for name, field in Config.model_fields.items() if not section_classes(field.annotation)}
    lines = [INTRO, "## Top level", "", *_table("", top), ""]
    for name, field in Config.model_fields.items():
        sections = section_classes(field.annotation)
        if len(sections) == 1:
            lines += [f"## `{name}`", "", _doc(sections[0]), "", *_table(f"{name}.", sections[0].model_fields), ""]
        elif sections:
            tag = tag_field(sections)
            lines += [f"## `{name}`: one section per `{name}.{tag}`", ""]
            for section in sections:
                value = section.model_fields[tag].default
                default = " (the default)" if value == getattr(field.default, tag) else ""
                lines += [f"### `{name}.{tag}: {value}`{default}", "", _doc(section), "",
                          *_table(f"{name}.", section.model_fields), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def undescribed(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """The keys without a description and the sections without a docstring: each needs one for the reference."""
    missing = []
    for name, field in model.model_fields.items():
        sections = section_classes(field.annotation)
        for section in sections:
            if not _doc(section):
                missing.append(f"section {section.__name__} ({prefix}{name}) has no docstring")
            missing += undescribed(section, f"{prefix}{name}.")
        if not sections and not field.description:
            missing.append(f"{prefix}{name} has no Field(description=...)")
    return list(dict.fromkeys(missing))  # a key every union member shares is named once


if __name__ == "__main__":
    print(render(), end="")
