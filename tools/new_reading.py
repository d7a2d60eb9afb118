"""Start a new reading from the template, with its metadata and title block filled in.

    python tools/new_reading.py --id V7 --part vlm --slug qwen2_5_vl --title "Qwen2.5-VL"

Writes ``notebooks/<part>/<ID>_<slug>.ipynb`` and its py:percent mirror. Then write the reading (in
JupyterLab or in the mirror), run it with ``make run NB=...``, and check it with ``make test``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools import badges  # noqa: E402
from tools.course import NOTEBOOKS, PART_LETTER, READING_ID, TEMPLATE, colab_url, read  # noqa: E402
from tools.run_notebook import write_pair  # noqa: E402


def create(rid: str, part: str, slug: str, title: str) -> Path:
    if not READING_ID.match(rid):
        raise SystemExit(f"--id must be a syllabus id like F2, V6, R7; got {rid!r}")
    if part not in PART_LETTER or PART_LETTER[part] != rid[0]:
        raise SystemExit(f"--part must match the id's letter ({rid[0]}): one of {PART_LETTER}; got {part!r}")
    if not re.fullmatch(r"[a-z0-9_]+", slug):
        raise SystemExit(f"--slug must be lower_snake_case, got {slug!r}")
    path = NOTEBOOKS / part / f"{rid}_{slug}.ipynb"
    if path.exists():
        raise SystemExit(f"{path} exists already")
    nb = read(TEMPLATE)
    nb.metadata["course"].update({"id": rid, "title": title, "part": part, "prerequisites": []})
    first = nb.cells[0]
    first.source = re.sub(r"^# .*$", f"# {rid} · {title}", first.source, count=1, flags=re.M)
    first.source = re.sub(
        r"\]\(https://colab\.research\.google\.com/github/[^)]*\)", f"]({colab_url(path)})", first.source
    )
    badges.localize_notebook(nb, badges.badge_path_from(path))  # the badge image, relative to the new folder
    first.source = first.source.replace("](docs/", "](../../docs/")  # the syllabus links, likewise
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.execution_count = None
            cell.outputs = []
    path.parent.mkdir(parents=True, exist_ok=True)
    write_pair(path, nbformat.from_dict(nb))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Start a new reading from template.ipynb.")
    parser.add_argument("--id", required=True, help="syllabus id, e.g. V7")
    parser.add_argument("--part", required=True, choices=sorted(PART_LETTER))
    parser.add_argument("--slug", required=True, help="short lower_snake_case name, e.g. qwen2_5_vl")
    parser.add_argument("--title", required=True, help="the reading's title")
    args = parser.parse_args(argv)
    path = create(args.id, args.part, args.slug, args.title)
    print(f"created {path} and its mirror; next: write it, then `make run NB={path}`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
