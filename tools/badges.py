"""The "Open in Colab" badge: a copy of the image in the repository, and checks of the Colab links.

A badge loaded from Colab's site is a broken image offline, so every notebook shows the copy shipped in
docs/img/colab-badge.svg (``localize_badge``). ``check_notebook`` says where a Colab link does not open a file
of this repository (the repository and branch of ``[tool.course]`` in pyproject.toml, the one place they are
set), where a badge is fetched from the network, and where the Colab-only install cell does not install the
helper package from that same repository and branch.

python tools/badges.py            # check every notebook's Colab links
python tools/badges.py PATH ...   # just these

ModelScope: no documented URL opens a public GitHub notebook in ModelScope's notebook service (its notebooks
start from a model or an uploaded file), so there is no ModelScope button.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools.course import ROOT, TEMPLATE, notebooks, settings, shown  # noqa: E402

REMOTE_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
LOCAL_BADGE = ROOT / "docs" / "img" / "colab-badge.svg"
COLAB_LINK = re.compile(
    r"https://colab\.research\.google\.com/github/([^/\s)]+/[^/\s)]+)/blob/([^/\s)]+)/([^\s)#?]+)"
)
BADGE_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]*colab-badge\.svg)\)")


def badge_path_from(nb_path: Path, image: Path = LOCAL_BADGE) -> str:
    """The badge image's path relative to a notebook's folder (what its markdown links to)."""
    return Path(os.path.relpath(image, nb_path.resolve().parent)).as_posix()


def localize_badge(source: str, image: str) -> str:
    """``source`` (markdown) with each Colab badge image pointing at ``image`` instead of Colab's site."""
    return BADGE_IMAGE.sub(lambda m: f"![{m.group(1)}]({image})", source)


def localize_notebook(nb: nbformat.NotebookNode, image: str) -> int:
    """Rewrite the badges of every markdown cell in place; the number of cells changed."""
    changed = 0
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            new = localize_badge(cell.source, image)
            if new != cell.source:
                cell.source, changed = new, changed + 1
    return changed


def install_spec() -> str:
    """What a notebook's Colab-only cell installs: the helper package at the branch the badge opens, so the
    notebook and the ``shared`` it imports come from the same commit."""
    s = settings()
    return f"vlm-llm-course[notebooks] @ git+https://github.com/{s['github']}@{s['branch']}"


INSTALL = re.compile(r"vlm-llm-course\[notebooks\] @ git\+https://github\.com/[^\"'\s]+")


def pin_install(source: str) -> str:
    """``source`` (the Colab-only install cell) with its package spec set to ``install_spec()``."""
    return INSTALL.sub(install_spec(), source)


def check_notebook(path: Path, nb: nbformat.NotebookNode | None = None, root: Path = ROOT) -> list[str]:
    """Problems: a Colab link to another repository or branch, or to a path that does not exist; a badge
    image that is not the local copy (an image fetched from Colab's site is broken offline); a Colab-only
    install cell that does not install the helper from the repository and branch the badge opens."""
    nb = nb if nb is not None else nbformat.read(path, as_version=4)
    s = settings()
    problems = []
    for cell in nb.cells:
        if cell.cell_type == "code" and "google.colab" in cell.source:
            specs = INSTALL.findall(cell.source)
            if specs != [install_spec()]:
                problems.append(f"Colab install cell installs {specs or 'nothing'}, not [{install_spec()!r}]")
        if cell.cell_type != "markdown":
            continue
        for repo, branch, rel in COLAB_LINK.findall(cell.source):
            if (repo, branch) != (s["github"], s["branch"]):
                problems.append(f"Colab link to {repo}@{branch}, not {s['github']}@{s['branch']}: {rel}")
            if not (root / rel).is_file():
                problems.append(f"Colab link to {rel}, which does not exist")
        for _, image in BADGE_IMAGE.findall(cell.source):
            if image == REMOTE_BADGE:
                problems.append(f"badge image fetched from Colab's site; use {badge_path_from(path)}")
            elif not (path.parent / image).is_file():
                problems.append(f"badge image {image} does not exist")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check that every Colab link opens a file of the repo.")
    parser.add_argument("paths", nargs="*", type=Path)
    args = parser.parse_args(argv)
    failed = 0
    for path in args.paths or [TEMPLATE, *notebooks()]:
        problems = check_notebook(path)
        failed += bool(problems)
        for p in problems:
            print(f"{shown(path)}: {p}")
    if not failed:
        print("Colab links ok")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
