"""What the tools share: where the notebooks are, their metadata schema, the course settings."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
TEMPLATE = ROOT / "template.ipynb"

# The parts of the course, in catalogue order: folder name -> heading.
PARTS = {
    "foundations": "Part F · Foundations",
    "vlm": "Part V · Vision-language models",
    "llm": "Part L · Language-model technical reports",
    "rl": "Part R · Reinforcement learning and post-training",
}
PART_LETTER = {"foundations": "F", "vlm": "V", "llm": "L", "rl": "R"}

# The eleven sections of the reading contract (../shared/guide/READING_CONTRACT.md), in order. The title
# block is the first cell (a `# ` heading); the other ten are `## ` headings with exactly these titles.
SECTIONS = [
    "TL;DR",
    "中文速览",
    "Setup",
    "The problem",
    "Derivations",
    "Walkthrough",
    "Check against a reference",
    "Reproduction",
    "Misconceptions",
    "Exercises",
    "References",
]

READING_ID = re.compile(r"^[FVLR]\d{1,2}$")
RUNTIME_LINE = re.compile(r"\*\*CPU run time:\*\* (\d+) s")
MEMORY_LINE = re.compile(r"\*\*Peak memory:\*\* (\d+) MB")
# The heading of the Reproduction cell that tells readers what a healthy run prints.
HEALTHY_RUN = "### What a healthy run prints"
# The metadata every reading carries (``course`` table); ``make run`` measures the last two.
METADATA_KEYS = ("id", "title", "part", "papers", "prerequisites", "cpu_seconds", "peak_memory_mb")


def settings() -> dict:
    """The ``[tool.course]`` table of pyproject.toml (GitHub repo and branch for the Colab badges)."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["course"]


def colab_url(path: Path) -> str:
    """The Colab link that opens ``path`` (a notebook inside the repo) from GitHub."""
    s = settings()
    rel = path.resolve().relative_to(ROOT).as_posix()
    return f"https://colab.research.google.com/github/{s['github']}/blob/{s['branch']}/{rel}"


def notebooks() -> list[Path]:
    """Every reading notebook, sorted by part (catalogue order) then reading number."""
    found = [p for p in NOTEBOOKS.glob("*/*.ipynb") if ".ipynb_checkpoints" not in p.parts]

    def key(p: Path) -> tuple[int, int, str]:
        part = list(PARTS).index(p.parent.name) if p.parent.name in PARTS else len(PARTS)
        m = re.match(r"[A-Z](\d+)_", p.name)
        return (part, int(m.group(1)) if m else 999, p.name)

    return sorted(found, key=key)


def mirror_of(nb_path: Path) -> Path:
    """The py:percent mirror that sits beside a notebook."""
    return nb_path.with_suffix(".py")


MIRROR_FORMAT = "py:percent"


def mirror_text(nb: nbformat.NotebookNode) -> str:
    """The text of a notebook's mirror: the one place that says how a mirror is generated."""
    return jupytext.writes(nb, fmt=MIRROR_FORMAT)


def shown(path: Path) -> Path:
    """``path`` relative to the repository when it lies inside it (for messages), else as given."""
    resolved = path.resolve()
    return resolved.relative_to(ROOT) if resolved.is_relative_to(ROOT) else path


def read(nb_path: Path) -> nbformat.NotebookNode:
    return nbformat.read(nb_path, as_version=4)


@dataclass
class Reading:
    """The ``course`` metadata of a notebook, as the catalogue uses it."""

    path: Path
    id: str
    title: str
    part: str
    papers: list[dict]
    prerequisites: list[str]
    cpu_seconds: float
    peak_memory_mb: float | None  # None until `make run` has measured it (the contract check requires it)

    @classmethod
    def from_notebook(cls, path: Path, nb: nbformat.NotebookNode | None = None) -> Reading:
        meta = (nb if nb is not None else read(path)).metadata.get("course")
        if not isinstance(meta, dict):
            raise ValueError(f"{path}: notebook metadata has no 'course' table")
        missing = [k for k in METADATA_KEYS if k not in meta and k != "peak_memory_mb"]
        if missing:
            raise ValueError(f"{path}: course metadata lacks {', '.join(missing)}")
        return cls(
            path=path,
            id=meta["id"],
            title=meta["title"],
            part=meta["part"],
            papers=list(meta["papers"]),
            prerequisites=list(meta["prerequisites"]),
            cpu_seconds=meta["cpu_seconds"],
            peak_memory_mb=meta.get("peak_memory_mb"),
        )
