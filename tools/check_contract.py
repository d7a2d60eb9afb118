"""Check that each notebook keeps the reading contract (../shared/guide/READING_CONTRACT.md).

    python tools/check_contract.py                 # every reading and the template
    python tools/check_contract.py PATH.ipynb ...  # just these

For each reading it checks: the ``course`` metadata (id, title, part, papers with arXiv ids, prerequisites,
measured CPU seconds and peak memory) and that it matches the file's place; the title block (a ``# ID ·
Title`` heading, an "Open in Colab" badge pointing at the notebook's own path, prerequisites, the run time
and peak memory equal to the metadata); the eleven sections in order; a Colab-only install cell tagged
``nbval-skip`` and a seed in Setup; a markdown cell before each code cell of Derivations and Walkthrough
(they may interleave, so a derivation sits beside its code); at least one ``assert`` in the reference
check; a "What a healthy run prints" heading in Reproduction followed by a code cell; stored outputs from
one top-to-bottom run (execution counts 1, 2, 3, ...) with no errors; every relative link in the markdown
resolving to a file (a reading not yet written is named in plain text). Exit 1 on any problem, listing them
all.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools.course import (  # noqa: E402
    HEALTHY_RUN,
    MEMORY_LINE,
    METADATA_KEYS,
    PART_LETTER,
    PARTS,
    READING_ID,
    RUNTIME_LINE,
    SECTIONS,
    TEMPLATE,
    colab_url,
    notebooks,
    shown,
)

ARXIV_ID = re.compile(r"^\d{4}\.\d{4,5}$")


def is_measured(value: object) -> bool:
    """A run time or memory figure as ``make run`` writes it: a finite positive number (not a bool)."""
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


def check_metadata(path: Path, nb: nbformat.NotebookNode, is_template: bool) -> list[str]:
    meta = nb.metadata.get("course")
    if not isinstance(meta, dict):
        return [f"metadata: no 'course' table ({', '.join(METADATA_KEYS)})"]
    problems = []
    for key in METADATA_KEYS:
        if key not in meta:
            problems.append(f"metadata: course.{key} is missing")
    if problems:
        return problems
    rid, part = meta["id"], meta["part"]
    if part not in PARTS:
        problems.append(f"metadata: part {part!r} is not one of {sorted(PARTS)}")
    if not is_template:
        if not isinstance(rid, str) or not READING_ID.match(rid):
            problems.append(f"metadata: id {rid!r} is not a syllabus id like F2, V6, R7")
        elif part in PART_LETTER and rid[0] != PART_LETTER[part]:
            problems.append(f"metadata: id {rid} does not belong to part {part!r}")
        if not path.name.startswith(f"{rid}_"):
            problems.append(f"file name {path.name} must start with its id '{rid}_'")
        if path.parent.name != part:
            problems.append(f"notebook sits in {path.parent.name}/ but its part is {part!r}")
    if not isinstance(meta["title"], str) or not meta["title"].strip():
        problems.append("metadata: title must be a non-empty string")
    papers = meta["papers"]
    if not isinstance(papers, list) or not papers:
        problems.append("metadata: papers must be a non-empty list")
    else:
        for i, paper in enumerate(papers):
            if not isinstance(paper, dict) or not paper.get("title"):
                problems.append(f"metadata: papers[{i}] needs a title")
                continue
            arxiv = paper.get("arxiv")
            if arxiv is None and not paper.get("url"):
                problems.append(f"metadata: papers[{i}] ({paper['title']}) needs an arxiv id or a url")
            if arxiv is not None and not ARXIV_ID.match(str(arxiv)):
                problems.append(f"metadata: papers[{i}] arxiv {arxiv!r} is not an id like 2409.12191")
    prereqs = meta["prerequisites"]
    if not isinstance(prereqs, list) or not all(isinstance(p, str) and READING_ID.match(p) for p in prereqs):
        problems.append(f"metadata: prerequisites must be a list of reading ids, got {prereqs!r}")
    for key in ("cpu_seconds", "peak_memory_mb"):
        value = meta[key]
        if not is_measured(value):
            problems.append(
                f"metadata: {key} must be a positive number (measured by make run), got {value!r}"
            )
    return problems


def check_prerequisite_links(path: Path, src: str, prerequisites: list[str]) -> list[str]:
    """Each prerequisite of the metadata is linked from the title block: to its notebook when it is written,
    else to its entry on docs/syllabus.md (so a reader never meets a dead or bare name)."""
    root = path.resolve().parents[2]  # the repository holding notebooks/<part>/<file>.ipynb
    linked = set()
    for target in LOCAL_LINK.findall(src):
        file, _, anchor = target.partition("#")
        linked.add(((path.parent / file).resolve(), anchor))
    written = {p.name.split("_", 1)[0]: p.resolve() for p in notebooks()}
    problems = []
    for p in prerequisites:
        want = (written[p], "") if p in written else ((root / "docs" / "syllabus.md").resolve(), p.lower())
        if want not in linked:
            where = os.path.relpath(want[0], root) + (f"#{want[1]}" if want[1] else "")
            problems.append(f"title block: prerequisite {p} is not linked (link it to {where})")
    return problems


def check_title_block(path: Path, nb: nbformat.NotebookNode) -> list[str]:
    if not nb.cells or nb.cells[0].cell_type != "markdown":
        return ["title block: the first cell must be markdown"]
    src = nb.cells[0].source
    meta = nb.metadata.get("course", {})
    problems = []
    if not src.startswith("# "):
        problems.append("title block: the first cell must start with a '# ' title")
    elif meta.get("id") and meta["id"] not in src.splitlines()[0]:
        problems.append(f"title block: the title line must name the reading id {meta['id']}")
    if f"({colab_url(path)})" not in src:
        problems.append(f"title block: no Colab badge linking to {colab_url(path)}")
    if "arxiv.org/abs/" not in src and "http" not in src:
        problems.append("title block: no link to the paper")
    if "**Prerequisites:**" not in src:
        problems.append("title block: no '**Prerequisites:**' line")
    problems += check_prerequisite_links(path, src, meta.get("prerequisites") or [])
    # The measured figures: the title block's line must say what the metadata says (make run writes both).
    for what, line, key, unit in (
        ("run time", RUNTIME_LINE, "cpu_seconds", "s"),
        ("peak memory", MEMORY_LINE, "peak_memory_mb", "MB"),
    ):
        m = line.search(src)
        if not m:
            problems.append(
                f"title block: no '{line.pattern.replace(chr(92), '')}' line (make run writes it)"
            )
        elif is_measured(meta.get(key)) and int(m.group(1)) != round(meta[key]):
            problems.append(
                f"title block: {what} {m.group(1)} {unit} differs from metadata {key} {meta[key]}"
            )
    return problems


def split_sections(nb: nbformat.NotebookNode) -> tuple[list[str], dict[str, list]]:
    """The ``## `` headings in order, and the cells under each (the heading cell included)."""
    order: list[str] = []
    cells: dict[str, list] = {}
    current = None
    for cell in nb.cells[1:]:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("## "):
                    current = line[3:].strip()
                    order.append(current)
                    cells.setdefault(current, [])
        if current is not None:
            cells[current].append(cell)
    return order, cells


def check_sections(nb: nbformat.NotebookNode, is_template: bool) -> list[str]:
    order, cells = split_sections(nb)
    if order != SECTIONS:
        return [f"sections: the '## ' headings must be exactly {SECTIONS} in this order, found {order}"]
    problems = []
    for title in SECTIONS:
        body = "".join(c.source for c in cells[title]).replace(f"## {title}", "").strip()
        if not body:
            problems.append(f"section '{title}' is empty")
    setup = cells["Setup"]
    if not any(
        c.cell_type == "code" and "nbval-skip" in c.metadata.get("tags", []) and "google.colab" in c.source
        for c in setup
    ):
        problems.append("Setup: no Colab-only install cell (code mentioning google.colab, tagged nbval-skip)")
    if not any(
        c.cell_type == "code" and re.search(r"seed_everything\(|manual_seed\(", c.source) for c in setup
    ):
        problems.append("Setup: no fixed seed (seed_everything(...) or torch.manual_seed(...))")
    # Derivations and Walkthrough may interleave (a derivation sits beside its code): in both, every code
    # cell follows a markdown cell that says what it does.
    for title in ("Derivations", "Walkthrough"):
        body = cells[title]
        for prev, cell in zip(body, body[1:], strict=False):
            if cell.cell_type == "code" and prev.cell_type == "code":
                first = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
                problems.append(f"{title}: code cell starting {first[:60]!r} has no markdown cell before it")
    repro = cells["Reproduction"]
    at = next((i for i, c in enumerate(repro) if c.cell_type == "markdown" and HEALTHY_RUN in c.source), None)
    if at is None:
        problems.append(f"Reproduction: no markdown cell with the heading '{HEALTHY_RUN}'")
    elif not any(c.cell_type == "code" and c.source.strip() for c in repro[at + 1 :]):
        problems.append(f"Reproduction: no code cell after '{HEALTHY_RUN}' printing the expected values")
    if not any(
        c.cell_type == "code" and re.search(r"^\s*assert\b|assert_close\(", c.source, re.M)
        for c in cells["Check against a reference"]
    ):
        problems.append("Check against a reference: no code cell with an assert")
    if not is_template and any("Template guide" in c.source for c in nb.cells):
        problems.append("the template's guide text is still there")
    return problems


def check_outputs(nb: nbformat.NotebookNode) -> list[str]:
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.get("execution_count") for c in code]
    problems = []
    if counts != list(range(1, len(code) + 1)):
        problems.append(
            f"outputs: code cells must be executed once, top to bottom (counts 1..{len(code)}), found {counts}"
        )
    for c in code:
        for out in c.get("outputs", []):
            if out.get("output_type") == "error":
                problems.append(f"outputs: a cell stored an error ({out.get('ename')}: {out.get('evalue')})")
    return problems


LOCAL_LINK = re.compile(r"\]\((?!https?://|mailto:|#)([^)\s]+)\)")


def check_links(path: Path, nb: nbformat.NotebookNode) -> list[str]:
    """Every relative link in the markdown resolves to a file of the repository (no dead prerequisites)."""
    problems = []
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for target in LOCAL_LINK.findall(cell.source):
            file = target.split("#", 1)[0]
            if file and not (path.parent / file).exists():
                problems.append(
                    f"links: [{target}] does not resolve from {path.parent.name}/ "
                    "(a reading not yet written links to its entry in docs/syllabus.md)"
                )
    return problems


def check(path: Path) -> list[str]:
    """Every contract problem of one notebook (empty when it keeps the contract)."""
    path = path.resolve()
    is_template = path == TEMPLATE.resolve()
    nb = nbformat.read(path, as_version=4)
    return (
        check_metadata(path, nb, is_template)
        + check_title_block(path, nb)
        + check_sections(nb, is_template)
        + check_outputs(nb)
        + check_links(path, nb)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check notebooks against the reading contract.")
    parser.add_argument("paths", nargs="*", type=Path)
    args = parser.parse_args(argv)
    paths = args.paths or [TEMPLATE, *notebooks()]
    failed = 0
    for path in paths:
        problems = check(path)
        rel = shown(path)
        if problems:
            failed += 1
            print(f"FAIL {rel}")
            for p in problems:
                print(f"  - {p}")
        else:
            print(f"ok   {rel}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
