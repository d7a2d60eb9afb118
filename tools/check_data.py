"""Check ``data/`` against its manifest: every file listed, every checksum right, provenance given.

    python tools/check_data.py               # exit 1 on any mismatch
    python tools/check_data.py --hash FILE   # print the sha256 and size to put in the manifest

``data/manifest.json`` lists each data file with its ``sha256``, ``bytes``, ``source`` (where it came from)
``license`` and ``used_by`` (reading ids). ``README.md`` and the manifest itself are not data.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools.course import ROOT  # noqa: E402

REQUIRED = ("path", "sha256", "bytes", "source", "license", "used_by")
NOT_DATA = {"README.md", "manifest.json"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def problems(data_dir: Path) -> list[str]:
    """Every disagreement between ``data_dir`` and ``data_dir/manifest.json``."""
    manifest_path = data_dir / "manifest.json"
    if not manifest_path.exists():
        return [f"{manifest_path} is missing"]
    try:
        entries = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        return [f"{manifest_path} must be JSON with a 'files' list ({exc})"]
    found = []
    listed = set()
    for i, entry in enumerate(entries):
        missing = [k for k in REQUIRED if k not in entry]
        if missing:
            found.append(f"manifest entry {i} lacks {', '.join(missing)}")
            continue
        listed.add(entry["path"])
        path = data_dir / entry["path"]
        if not path.is_file():
            found.append(f"{entry['path']}: listed in the manifest but not in data/")
            continue
        if path.stat().st_size != entry["bytes"]:
            found.append(f"{entry['path']}: {path.stat().st_size} bytes, manifest says {entry['bytes']}")
        if sha256(path) != entry["sha256"]:
            found.append(
                f"{entry['path']}: sha256 {sha256(path)} differs from the manifest's {entry['sha256']}"
            )
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(data_dir).as_posix()
        if rel not in listed and rel not in NOT_DATA:
            found.append(f"{rel}: in data/ but not in the manifest (add it with its source and licence)")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check data/ against data/manifest.json.")
    parser.add_argument("--hash", type=Path, help="print the manifest fields for this file and exit")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    args = parser.parse_args(argv)
    if args.hash:
        print(json.dumps({"sha256": sha256(args.hash), "bytes": args.hash.stat().st_size}))
        return 0
    found = problems(args.data_dir)
    for p in found:
        print(f"data: {p}")
    if not found:
        print("data manifest ok")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
