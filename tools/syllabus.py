"""The syllabus inside the repository: every reading the course owes (id, title, part), in docs/syllabus.json.

The syllabus itself is ../shared/guide/SYLLABUS.md, beside the repository (not part of it, so not on a
reader's clone or in CI). Its list of readings is copied into docs/syllabus.json, which the learning-path
map, the issue form and the prerequisite check read.

python tools/syllabus.py            # rewrite docs/syllabus.json from ../shared/guide/SYLLABUS.md
python tools/syllabus.py --check    # exit 1 when docs/syllabus.json is stale, or a prerequisite or a
                                    # reading id is not in it
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools.course import PART_LETTER, ROOT, Reading, notebooks, shown  # noqa: E402

SYLLABUS_JSON = ROOT / "docs" / "syllabus.json"
SYLLABUS_MD = ROOT.parent / "shared" / "guide" / "SYLLABUS.md"
LETTER_PART = {letter: part for part, letter in PART_LETTER.items()}
ROW = re.compile(r"^\|\s*([FVLR]\d{1,2})\s*\|\s*([^|]+?)\s*\|")


def parse_markdown(text: str) -> list[dict]:
    """The readings of SYLLABUS.md: one ``| id | reading | ...`` table row each, in the page's order."""
    entries, seen = [], set()
    for line in text.splitlines():
        m = ROW.match(line)
        if not m:
            continue
        rid, title = m.groups()
        if rid in seen:
            raise ValueError(f"syllabus lists {rid} twice")
        seen.add(rid)
        entries.append({"id": rid, "title": title, "part": LETTER_PART[rid[0]]})
    return entries


def render(entries: list[dict]) -> str:
    return json.dumps(entries, ensure_ascii=False, indent=1) + "\n"


def load(path: Path = SYLLABUS_JSON) -> list[dict]:
    """The syllabus as committed: a list of {id, title, part}."""
    return json.loads(path.read_text(encoding="utf-8"))


def unknown_ids(readings: list[Reading], entries: list[dict]) -> list[str]:
    """Problems: a reading whose id, or one of whose prerequisites, is not a syllabus id."""
    ids = {e["id"] for e in entries}
    problems = []
    for r in readings:
        if r.id not in ids:
            problems.append(f"{shown(r.path)}: reading id {r.id} is not in the syllabus")
        for p in r.prerequisites:
            if p not in ids:
                problems.append(f"{shown(r.path)}: prerequisite {p} is not a syllabus id")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Copy the syllabus's readings into docs/syllabus.json.")
    parser.add_argument("--check", action="store_true", help="check instead of writing")
    parser.add_argument("--source", type=Path, default=SYLLABUS_MD, help="SYLLABUS.md to read")
    args = parser.parse_args(argv)
    fresh = render(parse_markdown(args.source.read_text(encoding="utf-8"))) if args.source.exists() else None
    if not args.check:
        if fresh is None:
            raise SystemExit(f"{args.source} not found")
        SYLLABUS_JSON.parent.mkdir(parents=True, exist_ok=True)
        SYLLABUS_JSON.write_text(fresh, encoding="utf-8")
        print(f"wrote {shown(SYLLABUS_JSON)} ({len(load())} readings)")
        return 0
    problems = []
    if fresh is not None and SYLLABUS_JSON.read_text(encoding="utf-8") != fresh:
        problems.append(f"{shown(SYLLABUS_JSON)} is stale: run python tools/syllabus.py and commit it")
    entries = load()
    problems += unknown_ids([Reading.from_notebook(p) for p in notebooks()], entries)
    for p in problems:
        print(p)
    if not problems:
        print(f"syllabus ok ({len(entries)} readings; every reading id and prerequisite is in it)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
