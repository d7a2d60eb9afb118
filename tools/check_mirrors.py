"""Check (or rewrite) the py:percent mirror beside every notebook.

    python tools/check_mirrors.py           # exit 1 when a mirror is missing or out of date
    python tools/check_mirrors.py --write   # regenerate every mirror from its notebook

A mirror is generated from its notebook (``jupytext`` py:percent, pinned version), never edited apart from
it: editing a notebook without regenerating its mirror makes this check fail. ``make sync`` runs
``jupytext --sync`` (which also carries edits made to a mirror back into its notebook), then this check.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools.course import TEMPLATE, mirror_of, mirror_text, notebooks, shown  # noqa: E402


def expected_mirror(nb_path: Path) -> str:
    return mirror_text(nbformat.read(nb_path, as_version=4))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check the py:percent mirrors of the notebooks.")
    parser.add_argument("--write", action="store_true", help="regenerate the mirrors instead of checking")
    parser.add_argument("paths", nargs="*", type=Path)
    args = parser.parse_args(argv)
    stale = 0
    for nb_path in args.paths or [TEMPLATE, *notebooks()]:
        mirror = mirror_of(nb_path)
        want = expected_mirror(nb_path)
        have = mirror.read_text(encoding="utf-8") if mirror.exists() else None
        rel = shown(mirror)
        if have == want:
            continue
        if args.write:
            mirror.write_text(want, encoding="utf-8")
            print(f"wrote {rel}")
            continue
        stale += 1
        if have is None:
            print(f"missing mirror {rel}")
        else:
            diff = difflib.unified_diff(
                have.splitlines(), want.splitlines(), str(rel), "from notebook", lineterm="", n=1
            )
            print(f"stale mirror {rel}:\n" + "\n".join(list(diff)[:20]))
    if stale:
        print(f"{stale} mirror(s) out of date: run `make sync` and commit the result.")
        return 1
    print("mirrors up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
