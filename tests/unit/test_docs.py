"""The docs and the tree say the same thing: a stage, a layer or a folder the docs miss fails here.

The stage registry feeds these checks, as it feeds the CLI's choices and the compose file's test.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from services.registry import STAGES

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
STAGE_FILES = {"__init__.py", "app.py", "handlers.py", "README.md"}


def _markdown() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md")), *sorted(ROOT.glob("services/*/*.md"))]


def _headings(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.startswith("## ")]


def test_the_project_stands_alone() -> None:
    # The project carries its own design: nothing points outside the repository.
    for path in _markdown():
        text = path.read_text()
        assert "../shared" not in text and "shared/" not in text, path


def test_the_readme_opens_with_the_two_commands() -> None:
    first_block = ROOT.joinpath("README.md").read_text().split("```")[1]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()[1:] if line]
    assert commands == ["make demo", "make test"]


def test_the_readme_links_every_design_document() -> None:
    readme = ROOT.joinpath("README.md").read_text()
    index = DOCS.joinpath("README.md").read_text()
    for doc in sorted(DOCS.glob("*.md")):
        if doc.name != "README.md":
            assert f"{doc.name}" in index, f"docs/README.md does not list {doc.name}"
    assert "docs/" in readme


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_folder_has_the_same_files_and_readme_shape(stage: str) -> None:
    folder = ROOT / "services" / stage
    assert {p.name for p in folder.iterdir() if p.name != "__pycache__"} == STAGE_FILES
    assert _headings(folder / "README.md") == _headings(ROOT / "services/submitter/README.md")


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_says_what_it_reads_and_writes_on_its_first_screen(stage: str) -> None:
    first_screen = "\n".join(
        (ROOT / "services" / stage / "handlers.py").read_text().splitlines()[:25]
    )
    assert "Reads:" in first_screen and "Writes:" in first_screen


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_is_in_the_architecture_and_the_readme(stage: str) -> None:
    assert f"`{stage}`" in DOCS.joinpath("architecture.md").read_text()
    assert f"`{stage}`" in ROOT.joinpath("README.md").read_text()


def test_every_layer_of_the_contract_is_described() -> None:
    config = tomllib.loads(ROOT.joinpath("pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    described = DOCS.joinpath("layers.md").read_text()
    for layer in layers:
        for module in re.split(r"\s*\|\s*", layer):
            path = module.replace(".", "/")
            assert path in described or module in described, f"docs/layers.md misses {module}"


def test_every_kernel_module_and_package_is_placed_in_a_layer() -> None:
    described = DOCS.joinpath("layers.md").read_text()
    for entry in sorted((ROOT / "vidpipe").iterdir()):
        if entry.name.startswith("__") and entry.name != "__main__.py":
            continue
        if entry.is_dir() or entry.suffix == ".py":
            assert f"vidpipe/{entry.name}" in described or f"{entry.name}" in described, entry


def test_every_source_file_is_named_in_the_layers_table() -> None:
    described = DOCS.joinpath("layers.md").read_text()
    for package in ("vidpipe", "services", "schemas"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name != "__init__.py":
                assert f"{path.name}`" in described, f"docs/layers.md never names {path}"
