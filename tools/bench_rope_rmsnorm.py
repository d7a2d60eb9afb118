"""Benchmark shared.kernels.rope and shared.kernels.rmsnorm against their peers on a GPU.

``run(device="cuda")`` returns one dict per (operation, implementation, pass) with ``op``, ``name``, ``shape``,
``pass`` (``"fwd"`` or ``"fwd+bwd"``), ``ms`` (median of ``triton.testing.do_bench``, L2 flushed between
runs), ``GB/s`` and ``ratio`` (``ms / ms of ours``, the first "ours" row of its op and pass: above 1, ours is
faster); a peer that is not installed is left out, one that fails gets ``ms = None`` and its ``error``.
``tools/bench.py`` (``make bench``) runs it with the attention benchmark; ``python -m tools.bench_rope_rmsnorm``
prints this table alone (``--json PATH`` also writes it). Needs CUDA; importable anywhere.

Workloads, bf16:

- RoPE: q ``(4, 32, 4096, 128)``, k ``(4, 8, 4096, 128)`` (GQA), laid out as ``transformers``' attention
  makes them (a ``(batch, seq, heads, head_dim)`` projection seen through ``.transpose(1, 2)``), cos/sin
  ``(batch, seq, head_dim)`` bf16 as ``LlamaRotaryEmbedding`` returns them. Peers: ``transformers``'
  ``apply_rotary_pos_emb`` (eager), ``torch.compile`` of it, Liger-Kernel's ``LigerRopeFunction``.
- M-RoPE (Qwen2-VL, ``mrope_section = [16, 24, 24]``): the same q, k and ``(3, batch, seq)`` ids. Peers start
  from the ids too: ``Qwen2VLRotaryEmbedding`` + ``apply_rotary_pos_emb`` (eager and ``torch.compile``),
  Liger's ``LigerQwen2VLMRopeFunction`` on the per-axis tables (computed in the timed function, as it needs).
- RMSNorm: x ``(16384, 4096)``, weight ``(4096,)``. Peers: ``LlamaRMSNorm`` (eager and ``torch.compile``),
  ``torch.nn.functional.rms_norm``, Liger's ``LigerRMSNormFunction`` (``casting_mode="llama"``).

GB/s counts the bytes every implementation must move, divided by the time: RoPE forward reads q, k and
writes q_rot, k_rot (the backward the same again for the gradients); RMSNorm forward reads x and writes y,
its backward reads x and dy and writes dx (tables, ids, weights and rstd are small and not counted).
"""

from __future__ import annotations

import argparse
import json

import torch

from tools.bench_timing import forward_backward, median_ms

__all__ = ["run"]

BF16 = torch.bfloat16
ROPE_SHAPE = (4, 32, 8, 4096, 128)  # batch, heads, kv_heads, seq, head_dim
MROPE_SECTION = [16, 24, 24]
RMS_SHAPE = (16384, 4096)
EPS = 1e-6


def _forward(fn):
    """The forward alone, without autograd's bookkeeping."""

    def step():
        with torch.no_grad():
            fn()

    return step


def _measure(op: str, shape: str, peers: list, grads: tuple, leaves: list, bytes_moved: dict) -> list[dict]:
    """Time every ``(name, fn)`` of ``peers`` (ours first) forward and forward+backward.

    ``grads``: the output gradients of the backward; ``leaves``: the tensors whose ``.grad`` is reset between
    runs; ``bytes_moved``: the bytes each pass must move, ``{"fwd": ..., "fwd+bwd": ...}``.
    """
    rows = []
    for pass_name in ("fwd", "fwd+bwd"):
        ours_ms = None
        for name, fn in peers:
            row = {"op": op, "name": name, "shape": shape, "pass": pass_name}
            try:
                if pass_name == "fwd":
                    ms = median_ms(_forward(fn))
                else:
                    ms = median_ms(forward_backward(fn, grads), grad_to_none=leaves)
                row.update({"ms": ms, "GB/s": bytes_moved[pass_name] / (ms * 1e-3) / 1e9})
            except Exception as error:  # a peer that breaks on this machine: keep the others
                row.update({"ms": None, "GB/s": None, "error": f"{type(error).__name__}: {error}"[:300]})
            if ours_ms is None and row["ms"] is not None and name.startswith("ours"):
                ours_ms = row["ms"]
            rows.append(row)
        for row in rows:
            if row["pass"] == pass_name:
                row["ratio"] = row["ms"] / ours_ms if row["ms"] and ours_ms else None
    return rows


def _liger(module: str, name: str):
    """A Liger-Kernel autograd Function, or None when Liger is not installed."""
    try:
        return getattr(__import__(f"liger_kernel.ops.{module}", fromlist=[name]), name)
    except ImportError:
        return None


def _rope_inputs(device: str):
    batch, heads, kv_heads, seq, head_dim = ROPE_SHAPE
    # (batch, seq, heads, head_dim) leaves seen as (batch, heads, seq, head_dim), as q_proj(x).view().transpose().
    q_leaf = torch.randn(batch, seq, heads, head_dim, device=device, dtype=BF16, requires_grad=True)
    k_leaf = torch.randn(batch, seq, kv_heads, head_dim, device=device, dtype=BF16, requires_grad=True)
    q, k = q_leaf.transpose(1, 2), k_leaf.transpose(1, 2)
    grads = (torch.randn_like(q), torch.randn_like(k))
    fwd = 2 * (q.numel() + k.numel()) * q.element_size()  # read q, k; write q_rot, k_rot
    bytes_moved = {"fwd": fwd, "fwd+bwd": 2 * fwd}  # the backward: read dq_rot, dk_rot; write dq, dk
    shape = f"q {tuple(q.shape)}, k {tuple(k.shape)} bf16"
    return q, k, [q_leaf, k_leaf], grads, bytes_moved, shape


def _bench_rope(device: str) -> list[dict]:
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    from shared.kernels.rope import rope_qk, rope_qk_from_positions
    from shared.rope import rope_cos_sin, rope_inv_freq

    q, k, leaves, grads, bytes_moved, shape = _rope_inputs(device)
    batch, seq, head_dim = q.shape[0], q.shape[2], q.shape[3]
    inv_freq = rope_inv_freq(head_dim, 500000.0).to(device)
    positions = torch.arange(seq, device=device).expand(batch, seq)
    cos, sin = (t.to(BF16) for t in rope_cos_sin(positions, inv_freq))  # as LlamaRotaryEmbedding(x bf16)
    compiled = torch.compile(apply_rotary_pos_emb)
    peers = [
        ("ours: rope_qk (tables)", lambda: rope_qk(q, k, cos, sin)),
        (
            "ours: rope_qk_from_positions (angles in kernel)",
            lambda: rope_qk_from_positions(q, k, positions, inv_freq),
        ),
        ("eager: transformers apply_rotary_pos_emb", lambda: apply_rotary_pos_emb(q, k, cos, sin)),
        ("torch.compile(apply_rotary_pos_emb)", lambda: compiled(q, k, cos, sin)),
    ]
    liger = _liger("rope", "LigerRopeFunction")
    if liger is not None:  # last: it rotates q, k in place when their memory is (batch, seq, heads, head_dim)
        peers.append(("liger: LigerRopeFunction", lambda: liger.apply(q, k, cos, sin)))
    return _measure("rope", shape, peers, grads, leaves, bytes_moved)


def _bench_mrope(device: str) -> list[dict]:
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLTextConfig
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLRotaryEmbedding, apply_rotary_pos_emb

    from shared.kernels.rope import mrope_qk
    from shared.rope import rope_inv_freq

    q, k, leaves, grads, bytes_moved, shape = _rope_inputs(device)
    batch, heads, seq, head_dim = q.shape
    theta = 1e6
    ids = torch.randint(0, seq, (3, batch, seq), device=device)
    inv_freq = rope_inv_freq(head_dim, theta).to(device)
    config = Qwen2VLTextConfig(
        hidden_size=heads * head_dim,
        num_attention_heads=heads,
        num_key_value_heads=k.shape[1],
        rope_parameters={"rope_type": "default", "rope_theta": theta, "mrope_section": MROPE_SECTION},
    )
    rotary = Qwen2VLRotaryEmbedding(config).to(device)

    def transformers_mrope(q, k, ids):
        cos, sin = rotary(q, ids)  # (batch, seq, head_dim) in q's dtype, sections picked
        return apply_rotary_pos_emb(q, k, cos, sin)

    compiled = torch.compile(transformers_mrope)
    peers = [
        (
            "ours: mrope_qk (angles in kernel)",
            lambda: mrope_qk(q, k, ids, inv_freq, mrope_section=MROPE_SECTION),
        ),
        ("eager: Qwen2VLRotaryEmbedding + apply_rotary_pos_emb", lambda: transformers_mrope(q, k, ids)),
        ("torch.compile(the same)", lambda: compiled(q, k, ids)),
    ]
    liger = _liger("qwen2vl_mrope", "LigerQwen2VLMRopeFunction")
    if liger is not None:

        def liger_mrope():
            freqs = ids[..., None].float() * inv_freq  # (3, batch, seq, head_dim/2): every axis's angles
            emb = torch.cat((freqs, freqs), dim=-1)
            return liger.apply(q, k, emb.cos().to(BF16), emb.sin().to(BF16), MROPE_SECTION)

        peers.append(("liger: per-axis tables + LigerQwen2VLMRopeFunction", liger_mrope))
    return _measure("mrope", shape + f", ids (3, {batch}, {seq})", peers, grads, leaves, bytes_moved)


def _bench_rmsnorm(device: str) -> list[dict]:
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from shared.kernels.rmsnorm import rms_norm

    rows, dim = RMS_SHAPE
    x = torch.randn(rows, dim, device=device, dtype=BF16, requires_grad=True)
    weight = torch.randn(dim, device=device, dtype=BF16, requires_grad=True)
    llama = LlamaRMSNorm(dim, eps=EPS).to(device=device, dtype=BF16)
    with torch.no_grad():
        llama.weight.copy_(weight)
    compiled = torch.compile(llama)
    peers = [
        ("ours: rms_norm", lambda: rms_norm(x, weight, eps=EPS)),
        ("eager: transformers LlamaRMSNorm", lambda: llama(x)),
        ("torch.compile(LlamaRMSNorm)", lambda: compiled(x)),
        ("torch.nn.functional.rms_norm", lambda: torch.nn.functional.rms_norm(x, (dim,), weight, EPS)),
    ]
    liger = _liger("rms_norm", "LigerRMSNormFunction")
    if liger is not None:  # offset 0, Llama casting, not in place (dy stays intact across runs)
        peers.append(
            ("liger: LigerRMSNormFunction", lambda: liger.apply(x, weight, EPS, 0.0, "llama", False))
        )
    grads = (torch.randn(rows, dim, device=device, dtype=BF16),)
    size = x.numel() * x.element_size()
    bytes_moved = {"fwd": 2 * size, "fwd+bwd": 5 * size}  # fwd: x in, y out; bwd: x, dy in, dx out
    leaves = [x, weight, llama.weight]
    return _measure("rmsnorm", f"x {RMS_SHAPE} bf16", peers, grads, leaves, bytes_moved)


def run(device: str = "cuda") -> list[dict]:
    """Benchmark RoPE, M-RoPE and RMSNorm (ours and peers), forward and forward+backward; see the module."""
    from shared.kernels import backend

    if not (torch.cuda.is_available() and str(device).startswith("cuda")):
        raise RuntimeError(f"the benchmark needs a CUDA device, got {device!r} (CUDA available: "
                           f"{torch.cuda.is_available()})")  # fmt: skip
    if backend(torch.empty(1, device=device)) != "triton":
        raise RuntimeError("shared.kernels would not run its Triton kernels here (TRITON_INTERPRET set?)")
    torch.manual_seed(0)
    rows = []
    for bench in (_bench_rope, _bench_mrope, _bench_rmsnorm):
        rows += bench(device)
        torch.cuda.empty_cache()
    return rows


def _table(rows: list[dict]) -> str:
    lines = [f"{'op':8} {'pass':8} {'ms':>9} {'GB/s':>7} {'x ours':>7}  name"]
    for r in rows:
        ms = f"{r['ms']:.4f}" if r["ms"] else "-"
        gb_s = f"{r['GB/s']:.0f}" if r["GB/s"] else "-"
        ratio = f"{r['ratio']:.2f}" if r.get("ratio") else "-"
        error = f"  [{r['error']}]" if "error" in r else ""
        lines.append(f"{r['op']:8} {r['pass']:8} {ms:>9} {gb_s:>7} {ratio:>7}  {r['name']}{error}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    rows = run(args.device)
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(args.device)}")
    print(_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
