"""docs/configuration.md is the schema rendered (gan_dist/config/reference.py): it fails here when a config section
changed without regenerating the page, or when a key has no description to render."""

import re
from pathlib import Path

from pydantic import BaseModel, Field

from gan_dist.config import MODEL_SECTIONS, TASK_SECTIONS, Config
from gan_dist.config.reference import render, undescribed

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
REGENERATE = "python -m gan_dist.config.reference > docs/configuration.md"


def test_the_reference_page_is_the_schema_rendered():
    assert PAGE.read_text() == render(), f"docs/configuration.md is stale: regenerate it with `{REGENERATE}`"


def test_every_key_and_section_is_described():
    missing = undescribed()
    assert not missing, "the configuration reference needs: " + "; ".join(missing) + f" (then `{REGENERATE}`)"


def test_a_key_or_section_without_description_is_named():
    class Part(BaseModel):
        width: int = 3

    class Whole(BaseModel):
        """A config."""

        part: Part = Part()
        name: str = Field("x", description="a name")
        seed: int = 0

    assert undescribed(Whole) == ["section Part (part) has no docstring", "part.width has no Field(description=...)",
                                  "seed has no Field(description=...)"]


def test_every_family_and_kind_has_its_own_table():
    page = render()
    for key, sections in (("model.arch", MODEL_SECTIONS), ("task.kind", TASK_SECTIONS)):
        tag = key.split(".")[1]
        for section in sections:
            assert f"### `{key}: {section.model_fields[tag].default}`" in page, f"no table for {section.__name__}"


def test_each_row_has_the_key_its_default_and_its_description():
    rows = {}
    for line in render().splitlines():
        cells = re.split(r"(?<!\\)\|", line)[1:-1]  # a description's own "|" is escaped
        if line.startswith("| `"):
            assert len(cells) == 4, f"a table row with {len(cells)} cells: {line}"
            rows.setdefault(cells[0].strip(" `"), []).append([cell.strip() for cell in cells[1:]])
    steps = rows["train.steps"][0]
    assert steps[0] == "`1500`" and steps[1] == "integer, ≥ 1" and steps[2] == "total steps"
    assert rows["train.lr_decay_start"][0][:2] == ["`null`", "number or null, ≥ 0, < 1"]
    assert rows["data.placement"][0][1] == "one of `auto`, `resident`, `stream`"
    assert rows["train.ema"][0][0] == "`true`"
    assert [row[1] for row in rows["model.blocks"]] == ["integer or list of integers", "integer, ≥ 1"]  # R3GAN, translator
    # a key each model family has is in each family's table, with that family's default
    assert [row[0] for row in rows["model.g_channels"]] == [f"`{section.model_fields['g_channels'].default}`"
                                                           for section in MODEL_SECTIONS]
    assert rows["preset"][0][:2] == [f"`{Config.model_fields['preset'].default}`", "text"]

