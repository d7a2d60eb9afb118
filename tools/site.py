"""Write the sources of the course's static site into build/site-src/ (make site then runs mkdocs on it).

- syllabus.md: every reading owed (docs/syllabus.md), where a prerequisite not yet written links;
- index.md: the catalogue (one table per part) and the learning-path map, with links to the site's pages;
- <part>/<ID>_<slug>.ipynb: a copy of each reading with its stored outputs (nothing is executed), a
  generated header after the title (Colab and download links, CPU time, peak memory, prerequisites), the
  Colab badge served from the site (tools/badges.py), and links to other readings pointing at their pages
  (links to other files of the repository point at GitHub);
- assets/: site/assets/ and MathJax (tex-svg-full.js) copied from the installed django-static-mathjax
  package;
- mkdocs.yml: inherits site/mkdocs.yml and adds the navigation by part.

python tools/site.py [--out build/site-src]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools import badges, learning_path, syllabus  # noqa: E402
from tools.catalogue import paper_link  # noqa: E402
from tools.course import PARTS, ROOT, Reading, colab_url, notebooks, settings, shown  # noqa: E402

OUT = ROOT / "build" / "site-src"
SITE_CONFIG = ROOT / "site" / "mkdocs.yml"
SITE_ASSETS = ROOT / "site" / "assets"
LINK = re.compile(r"(\]\()(?!https?://|mailto:|#)([^)\s]+)(\))")


def page_dir(r: Reading) -> str:
    """Where a reading's page lives in the site (mkdocs' directory URLs): <part>/<stem>/."""
    return f"{r.part}/{r.path.stem}/"


def github_blob(rel: str) -> str:
    s = settings()
    return f"https://github.com/{s['github']}/blob/{s['branch']}/{rel}"


def rewrite_links(source: str, nb_path: Path, pages: dict[Path, str], here: str) -> str:
    """Relative links of a notebook's markdown, made to work on the site: a reading's notebook becomes its
    page; any other file of the repository its GitHub page."""

    def fix(m: re.Match) -> str:
        target, _, anchor = m.group(2).partition("#")
        if not target:
            return m.group(0)
        resolved = (nb_path.parent / target).resolve()
        if resolved in pages:
            new = os.path.relpath(pages[resolved], here) + "/"
        elif resolved.is_relative_to(ROOT) and resolved.exists():
            new = github_blob(resolved.relative_to(ROOT).as_posix())
        else:
            return m.group(0)
        return f"{m.group(1)}{new}{'#' + anchor if anchor else ''}{m.group(3)}"

    return LINK.sub(fix, source)


def prereq_links(r: Reading, by_id: dict[str, Reading], to_root: str) -> str:
    return (
        ", ".join(
            f"[{p}]({to_root}{page_dir(by_id[p])})"
            if p in by_id
            else f"[{p} (planned)]({to_root}syllabus/#{p.lower()})"
            for p in r.prerequisites
        )
        or "none"
    )


def header(r: Reading, by_id: dict[str, Reading]) -> str:
    """The generated header of a reading's page (markdown), for a page at <part>/<stem>/."""
    to_root = "../../"
    memory = f"{r.peak_memory_mb:g} MB" if r.peak_memory_mb is not None else "not measured"
    return (
        f'<div class="reading-header" markdown="1">\n\n'
        f"[![Open in Colab]({to_root}img/colab-badge.svg)]({colab_url(r.path)}) · "
        f"[Download the notebook]({r.path.name}) · "
        f"[View on GitHub]({github_blob(r.path.relative_to(ROOT).as_posix())})\n\n"
        f"**CPU time:** {r.cpu_seconds:g} s on a 2-core CPU · **Peak memory:** {memory} · "
        f"**Prerequisites:** {prereq_links(r, by_id, to_root)}\n\n</div>"
    )


def site_notebook(r: Reading, by_id: dict[str, Reading], pages: dict[Path, str]) -> nbformat.NotebookNode:
    """The copy of a reading shown on the site (the notebook itself is not changed)."""
    nb = nbformat.read(r.path, as_version=4)
    here = page_dir(r)
    badges.localize_notebook(nb, "../../img/colab-badge.svg")
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = rewrite_links(cell.source, r.path, pages, here)
    nb.cells.insert(1, nbformat.v4.new_markdown_cell(header(r, by_id)))
    return nb


def catalogue(readings: list[Reading]) -> str:
    by_id = {r.id: r for r in readings}
    lines = []
    for part, heading in PARTS.items():
        rows = [r for r in readings if r.part == part]
        if not rows:
            continue
        lines += [
            f"### {heading}",
            "",
            "| id | reading | papers | builds on | CPU time | peak memory | open |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            memory = f"{r.peak_memory_mb:g} MB" if r.peak_memory_mb is not None else "—"
            papers = "; ".join(paper_link(p) for p in r.papers)
            lines.append(
                f"| {r.id} | [{r.title}]({page_dir(r)}) | {papers} | {prereq_links(r, by_id, '')} "
                f"| {r.cpu_seconds:g} s | {memory} | [![Open in Colab](img/colab-badge.svg)]({colab_url(r.path)}) |"
            )
        lines.append("")
    return "\n".join(lines)


def index(readings: list[Reading], entries: list[dict]) -> str:
    svg = learning_path.render(entries, readings, lambda r: page_dir(r))
    svg = svg.replace("\n", "")  # one line: Markdown passes a raw HTML block through untouched
    return (
        "---\nhide:\n  - toc\n---\n\n"  # the map needs the table of contents' width on a desktop
        "# Vision-language and large language models, one paper at a time\n\n"
        "An open course that reads the important papers on vision-language models, large language models and "
        "the reinforcement learning used to post-train them. Every reading is one Jupyter notebook with the "
        "derivations, a from-scratch implementation checked against a trusted reference, a small "
        "reproduction that runs on a laptop CPU, and the misconceptions that circulate about the paper. "
        "Each page shows the notebook with its stored outputs; open it in Colab or download it to run it. "
        f"The source is on [GitHub](https://github.com/{settings()['github']}).\n\n"
        f"{len(readings)} of the {len(entries)} readings of the syllabus are written.\n\n"
        "## Learning path\n\n"
        f'<div class="learning-path">{svg}</div>\n\n'
        "## Catalogue\n\n"
        f"{catalogue(readings)}\n"
    )


def mathjax_dir() -> Path:
    """MathJax 3's browser components, as the django-static-mathjax package installs them."""
    import mathjax  # the django-static-mathjax distribution's package

    found = Path(mathjax.__file__).resolve().parent / "static" / "mathjax" / "es5"
    if not (found / "tex-svg-full.js").is_file():
        raise SystemExit(f"MathJax not found under {found}: install the site extra (make site)")
    return found


def config(readings: list[Reading], out: Path) -> str:
    nav: list = [{"Home": "index.md"}]
    for part, heading in PARTS.items():
        rows = [r for r in readings if r.part == part]
        if rows:
            nav.append({heading: [{f"{r.id} · {r.title}": f"{r.part}/{r.path.name}"} for r in rows]})
    nav.append({"Syllabus": "syllabus.md"})
    rel = lambda p: os.path.relpath(p, out)  # noqa: E731
    return (
        f"# Generated by tools/site.py; do not edit.\n"
        f"INHERIT: {rel(SITE_CONFIG)}\n"
        f"docs_dir: docs\n"
        f"site_dir: {rel(ROOT / 'build' / 'site')}\n"
        f"hooks:\n  - {rel(ROOT / 'tools' / 'site_hooks.py')}\n"
        f"nav: {json.dumps(nav, ensure_ascii=False)}\n"
    )


def build(out: Path = OUT) -> list[Reading]:
    readings = [Reading.from_notebook(p) for p in notebooks()]
    entries = syllabus.load()
    problems = syllabus.unknown_ids(readings, entries)
    if problems:
        raise SystemExit("\n".join(problems))
    if out.exists():
        shutil.rmtree(out)
    docs = out / "docs"
    (docs / "img").mkdir(parents=True)
    by_id = {r.id: r for r in readings}
    pages = {r.path.resolve(): page_dir(r) for r in readings}
    pages[syllabus.SYLLABUS_PAGE.resolve()] = "syllabus"  # a prerequisite not yet written links to its entry
    for r in readings:
        (docs / r.part).mkdir(exist_ok=True)
        nbformat.write(site_notebook(r, by_id, pages), docs / r.part / r.path.name)
    (docs / "index.md").write_text(index(readings, entries), encoding="utf-8")
    (docs / "syllabus.md").write_text(syllabus.page(entries), encoding="utf-8")
    shutil.copy(badges.LOCAL_BADGE, docs / "img" / "colab-badge.svg")
    shutil.copytree(SITE_ASSETS, docs / "assets")
    # One file: the full TeX input and SVG output in one component (no fonts to fetch, nothing loaded on
    # demand with the menu off); make site-test fails on any request it would still make.
    (docs / "assets" / "mathjax").mkdir()
    shutil.copy(mathjax_dir() / "tex-svg-full.js", docs / "assets" / "mathjax" / "tex-svg-full.js")
    (out / "mkdocs.yml").write_text(config(readings, out), encoding="utf-8")
    return readings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the site's sources (docs and mkdocs.yml).")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    readings = build(args.out.resolve())
    print(
        f"site sources in {shown(args.out)}: {len(readings)} readings; now mkdocs build -f {shown(args.out)}/mkdocs.yml"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
