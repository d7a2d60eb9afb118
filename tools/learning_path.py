"""The learning-path map: every syllabus reading by part, arrows from each reading's prerequisites.

Drawn as a plain SVG from docs/syllabus.json and the notebooks' ``course`` metadata: a reading that exists is
a filled box linking to it, a planned one a dashed box marked "planned". The README shows
docs/learning_path.svg (links to GitHub); the site draws its own copy with links to its pages.

python tools/learning_path.py           # rewrite docs/learning_path.svg
python tools/learning_path.py --check   # exit 1 when it is stale
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from html import escape
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools import syllabus  # noqa: E402
from tools.course import PARTS, ROOT, Reading, notebooks, settings, shown  # noqa: E402

SVG = ROOT / "docs" / "learning_path.svg"
COL_W, BOX_W, BOX_H, ROW_H, TOP, LEFT = 270, 240, 36, 46, 70, 15
COLOURS = {"foundations": "#1f6feb", "vlm": "#8250df", "llm": "#bf8700", "rl": "#1a7f37"}
SHORT = {
    "foundations": "F · Foundations",
    "vlm": "V · Vision-language",
    "llm": "L · LM reports",
    "rl": "R · RL and post-training",
}


def github_link(reading: Reading) -> str:
    s = settings()
    rel = reading.path.resolve().relative_to(ROOT).as_posix()
    return f"https://github.com/{s['github']}/blob/{s['branch']}/{rel}"


def short(title: str, n: int = 27) -> str:
    return title if len(title) <= n else title[: n - 1].rstrip() + "…"


def layout(entries: list[dict]) -> dict[str, tuple[float, float]]:
    """The top-left corner of each reading's box: one column per part, syllabus order down it."""
    pos, rows = {}, dict.fromkeys(PARTS, 0)
    for e in entries:
        col = list(PARTS).index(e["part"])
        pos[e["id"]] = (LEFT + col * COL_W, TOP + rows[e["part"]] * ROW_H)
        rows[e["part"]] += 1
    return pos


def edge_path(a: tuple[float, float], b: tuple[float, float]) -> str:
    """A curve from prerequisite box ``a`` to reading box ``b`` (side to side, or down a column)."""
    (ax, ay), (bx, by) = a, b
    if ax == bx:  # same column: out of the right side, round and into the right side
        x0, y0, x1, y1 = ax + BOX_W, ay + BOX_H / 2, bx + BOX_W, by + BOX_H / 2
        bulge = 18 + min(abs(by - ay), 400) / 14
        return (
            f"M{x0:.0f},{y0:.0f} C{x0 + bulge:.0f},{y0:.0f} {x1 + bulge:.0f},{y1:.0f} {x1 + 2:.0f},{y1:.0f}"
        )
    if ax < bx:
        x0, x1 = ax + BOX_W, bx - 2
    else:
        x0, x1 = ax, bx + BOX_W + 2
    y0, y1 = ay + BOX_H / 2, by + BOX_H / 2
    mid = (x0 + x1) / 2
    return f"M{x0:.0f},{y0:.0f} C{mid:.0f},{y0:.0f} {mid:.0f},{y1:.0f} {x1:.0f},{y1:.0f}"


def render(entries: list[dict], readings: list[Reading], link: Callable[[Reading], str]) -> str:
    """The map as SVG text; ``link`` gives the URL of an existing reading."""
    pos = layout(entries)
    have = {r.id: r for r in readings if r.id in pos}
    rows = max(sum(1 for e in entries if e["part"] == p) for p in PARTS)
    width, height = LEFT * 2 + COL_W * (len(PARTS) - 1) + BOX_W + 30, TOP + rows * ROW_H + 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" font-family="Helvetica, Arial, sans-serif" font-size="13">',
        "<title>Learning path: every reading of the syllabus by part; arrows go from a prerequisite to the "
        "reading that builds on it</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#57606a"/></marker></defs>',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{LEFT}" y="22" font-size="15" font-weight="bold" fill="#24292f">Learning path</text>',
        f'<text x="{LEFT + 115}" y="22" fill="#57606a">filled: written (click to open) · dashed: planned · '
        "arrow: prerequisite → reading</text>",
    ]
    for col, part in enumerate(PARTS):
        out.append(
            f'<text x="{LEFT + col * COL_W}" y="{TOP - 14}" font-weight="bold" fill="{COLOURS[part]}">'
            f"{escape(SHORT[part])}</text>"
        )
    for r in sorted(have.values(), key=lambda r: list(pos).index(r.id)):
        for p in r.prerequisites:
            if p in pos:
                out.append(
                    f'<path d="{edge_path(pos[p], pos[r.id])}" fill="none" stroke="#57606a" '
                    f'stroke-width="1.4" marker-end="url(#arrow)"/>'
                )
    for e in entries:
        x, y = pos[e["id"]]
        colour = COLOURS[e["part"]]
        label = f"{e['id']} · {short(e['title'])}"
        if e["id"] in have:
            r = have[e["id"]]
            out.append(
                f'<a href="{escape(link(r))}"><title>{escape(e["id"])}: {escape(r.title)}</title>'
                f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="{colour}"/>'
                f'<text x="{x + 8}" y="{y + 23}" fill="#ffffff">{escape(label)}</text></a>'
            )
        else:
            out.append(
                f"<g><title>{escape(e['id'])}: {escape(e['title'])} (planned)</title>"
                f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="#f6f8fa" '
                f'stroke="{colour}" stroke-dasharray="4 3"/>'
                f'<text x="{x + 8}" y="{y + 16}" fill="#24292f">{escape(label)}</text>'
                f'<text x="{x + 8}" y="{y + 30}" font-size="10" fill="#57606a">planned</text></g>'
            )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def readme_svg() -> str:
    return render(syllabus.load(), [Reading.from_notebook(p) for p in notebooks()], github_link)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Draw the learning-path map (docs/learning_path.svg).")
    parser.add_argument("--check", action="store_true", help="fail if the committed map is stale")
    args = parser.parse_args(argv)
    text = readme_svg()
    if args.check:
        if not SVG.exists() or SVG.read_text(encoding="utf-8") != text:
            print(f"{shown(SVG)} is stale: run python tools/learning_path.py and commit it")
            return 1
        print(f"{shown(SVG)} up to date")
        return 0
    SVG.parent.mkdir(parents=True, exist_ok=True)
    SVG.write_text(text, encoding="utf-8")
    print(f"wrote {shown(SVG)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
