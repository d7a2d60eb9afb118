"""`make bench`: every Triton kernel of ``shared.kernels`` against the peers a reader would otherwise use.

Runs on a machine with an NVIDIA GPU, in one process, on the shapes of issue 7 (bf16): RoPE / M-RoPE and
RMSNorm (``tools/bench_rope_rmsnorm.py``, achieved GB/s against the device's copy bandwidth) and attention
(``tools/bench_attention.py``, TFLOP/s), forward and forward+backward, kernel time only
(``triton.testing.do_bench``, median of repeats). Prints one table and writes it, with the date, device and
versions, to ``bench/results.json`` (or ``--out``).

    make bench                      # in .venv (needs a CUDA build of torch; `pip install -e '.[bench]'` adds Liger)
    make bench BENCH_PY=python3     # with an interpreter that already has CUDA torch and Triton
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def copy_bandwidth(device: str = "cuda", n_bytes: int = 1 << 30) -> float:
    """Device-to-device copy in GB/s, counting bytes read plus bytes written (the kernels' yardstick)."""
    import torch

    from tools.bench_timing import median_ms

    src = torch.empty(n_bytes // 2, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src))
    return 2 * n_bytes / (ms * 1e-3) / 1e9


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def print_table(rows: list[dict]) -> None:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    widths = {k: max(len(k), *(len(_fmt(r.get(k, ""))) for r in rows)) for k in keys}
    print("  ".join(k.ljust(widths[k]) for k in keys))
    for row in rows:
        print("  ".join(_fmt(row.get(k, "")).ljust(widths[k]) for k in keys))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--only", choices=("rope_rmsnorm", "attention"), help="run one group")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print(
            "make bench needs an NVIDIA GPU and a CUDA build of torch; none is visible here.", file=sys.stderr
        )
        return 2
    import triton

    from tools import bench_attention, bench_rope_rmsnorm

    copy = copy_bandwidth()
    print(f"{torch.cuda.get_device_name()}: device copy {copy / 1e3:.2f} TB/s (read + write)")
    rows: list[dict] = []
    groups = {"rope_rmsnorm": bench_rope_rmsnorm, "attention": bench_attention}
    for name, module in groups.items():
        if args.only and name != args.only:
            continue
        try:
            group = module.run()
        except Exception:  # one broken group must not hide the other's table
            group = [{"name": name, "error": traceback.format_exc(limit=3)}]
        for row in group:
            if isinstance(row.get("GB/s"), float):
                row["% copy"] = round(100 * row["GB/s"] / copy, 1)
        rows += group
    print_table(rows)
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(),
        "copy_GBps": copy,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
