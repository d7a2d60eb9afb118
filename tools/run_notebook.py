"""Execute a reading top to bottom, store its outputs, record its run time, rewrite its mirror.

    python tools/run_notebook.py notebooks/foundations/F2_positional_encodings.ipynb   (or the .py mirror)

What it does, in order:
1. Reads the notebook; when its ``.py`` mirror was edited since, takes the cells from the mirror, so a
   reading can be written as its py:percent mirror (outputs are recomputed anyway).
2. Executes every cell in a fresh kernel in the notebook's folder, with ``HF_HUB_OFFLINE=1``.
3. Writes the wall-clock run time into the metadata (``course.cpu_seconds``) and into the title block's
   ``**CPU run time:** N s`` line, and the kernel's peak resident memory (``course.peak_memory_mb``) into
   the ``**Peak memory:** N MB`` line, so both say what was measured.
4. Writes the ``.ipynb`` with its outputs and regenerates the ``.py`` mirror and the README catalogue.

``make run NB=...`` calls this. Measure on an idle machine: the number is what readers are promised.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from jupytext.combine import combine_inputs_with_outputs
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools import catalogue  # noqa: E402
from tools.course import MEMORY_LINE, MIRROR_FORMAT, RUNTIME_LINE, mirror_of, mirror_text  # noqa: E402

PAIRING = {"formats": "ipynb,py:percent", "notebook_metadata_filter": "course"}


def load_pair(path: Path) -> tuple[Path, nbformat.NotebookNode]:
    """The ``.ipynb`` path of the pair and the notebook to run.

    When the ``.py`` mirror says something the notebook does not (it was edited), its cells win; cell ids
    and metadata of unchanged cells are kept from the notebook, so a re-run gives a small diff.
    """
    nb_path = path.with_suffix(".ipynb")
    py_path = mirror_of(nb_path)
    if not nb_path.exists() and not py_path.exists():
        raise SystemExit(f"neither {nb_path} nor {py_path} exists")
    nb = nbformat.read(nb_path, as_version=4) if nb_path.exists() else None
    if py_path.exists():
        text = py_path.read_text(encoding="utf-8")
        if nb is None:
            nb = jupytext.reads(text, fmt=MIRROR_FORMAT)
        elif text != mirror_text(nb):
            nb = combine_inputs_with_outputs(jupytext.reads(text, fmt=MIRROR_FORMAT), nb, fmt=MIRROR_FORMAT)
    nb.metadata["jupytext"] = dict(PAIRING)
    return nb_path, nb


def set_runtime(nb: nbformat.NotebookNode, seconds: float) -> None:
    """Record ``seconds`` (rounded up to a whole second) in the metadata and the title block."""
    rounded = max(1, int(seconds + 0.999))
    nb.metadata.setdefault("course", {})["cpu_seconds"] = rounded
    first = nb.cells[0]
    if first.cell_type == "markdown":
        first.source = RUNTIME_LINE.sub(f"**CPU run time:** {rounded} s", first.source)


def set_memory(nb: nbformat.NotebookNode, megabytes: float) -> None:
    """Record the peak memory (rounded up to a whole MB) in the metadata and the title block.

    The title block gets a ``**Peak memory:** N MB`` line; when it has none yet, one is added after the
    run-time line.
    """
    rounded = max(1, int(megabytes + 0.999))
    nb.metadata.setdefault("course", {})["peak_memory_mb"] = rounded
    first = nb.cells[0]
    if first.cell_type != "markdown":
        return
    line = f"**Peak memory:** {rounded} MB"
    if MEMORY_LINE.search(first.source):
        first.source = MEMORY_LINE.sub(line, first.source)
    else:
        lines = first.source.splitlines()
        at = next((i for i, text in enumerate(lines) if RUNTIME_LINE.search(text)), len(lines) - 1)
        first.source = "\n".join([*lines[: at + 1], "", line, *lines[at + 1 :]])


# Run in the kernel after the last cell: its peak resident set size (Linux reports KiB) in MB.
PEAK_MEMORY_PROBE = (
    "import json, resource; print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))"
)


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int = 900) -> tuple[float, float]:
    """Run every cell in a fresh ``python3`` kernel; return (wall-clock seconds, peak memory in MB).

    The peak memory is the kernel process's maximum resident set size, read by one extra cell that is
    run after the notebook's own cells and then removed.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    probe = nbformat.v4.new_code_cell(PEAK_MEMORY_PROBE)
    nb.cells.append(probe)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(cwd)}},
        record_timing=False,
        store_widget_state=False,
    )
    start = time.perf_counter()
    try:
        client.execute()
    finally:
        nb.cells.remove(probe)
    seconds = time.perf_counter() - start
    streams = [o for o in probe.outputs if o.get("output_type") == "stream" and o.get("name") == "stdout"]
    kib = json.loads(streams[-1]["text"].strip().splitlines()[-1])
    return seconds, kib * 1024 / 1e6


def write_pair(nb_path: Path, nb: nbformat.NotebookNode) -> None:
    """Write the notebook and its py:percent mirror (the mirror is always generated, never hand-kept)."""
    nbformat.write(nb, nb_path)
    mirror_of(nb_path).write_text(mirror_text(nb), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("paths", nargs="+", type=Path, help="notebooks (.ipynb) or their mirrors (.py)")
    parser.add_argument(
        "--keep-time", action="store_true", help="execute but keep the recorded run time and memory"
    )
    args = parser.parse_args(argv)
    for path in args.paths:
        nb_path, nb = load_pair(path.resolve())
        seconds, megabytes = execute(nb, nb_path.parent)
        if not args.keep_time:
            set_runtime(nb, seconds)
            set_memory(nb, megabytes)
        write_pair(nb_path, nb)
        print(f"{nb_path.name}: executed in {seconds:.1f} s, peak memory {megabytes:.0f} MB")
    catalogue.main([])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
