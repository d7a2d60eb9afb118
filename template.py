# ---
# jupyter:
#   course:
#     cpu_seconds: 4
#     id: X0
#     papers:
#     - arxiv: '0000.00000'
#       title: Paper title
#     part: foundations
#     peak_memory_mb: 342
#     prerequisites: []
#     title: Reading title
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: course
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # X0 · Reading title
#
# [![Open In Colab](docs/img/colab-badge.svg)](https://colab.research.google.com/github/open-vlm-course/vlm-llm-course/blob/main/template.ipynb)
#
# **Paper:** Authors, *Title*, Venue Year. [arXiv:0000.00000](https://arxiv.org/abs/0000.00000) ·
# **Official code:** [owner/repo](https://github.com/owner/repo)
#
# **Prerequisites:** [F1 · The Transformer](docs/syllabus.md#f1) (link each reading this one builds on, relative to this notebook:
# its notebook when written, else its entry on `docs/syllabus.md`, as here; the contract check fails on a
# prerequisite of the metadata that is not linked, and on a link that does not resolve)
#
# **CPU run time:** 4 s on a 2-core CPU (measured by `make run`, which rewrites this number)
#
# **Peak memory:** 342 MB (the kernel's peak resident memory, measured by `make run`)
#
# > Template guide: `make new ID=X0 PART=foundations SLUG=short_name TITLE="..."` copies this file with the
# > metadata filled. Keep the eleven `##` sections below, in this order, with these exact titles: the
# > contract check (`tools/check_contract.py`) looks for them. Delete these guide quotes as you fill each in.

# %% [markdown]
# ## TL;DR
#
# > 3-5 lines in English: what the paper changes, how, and what it buys (with the paper's own number).

# %% [markdown]
# ## 中文速览
#
# > 与 TL;DR 相同内容的中文版（3-5 行）。

# %% [markdown]
# ## Setup
#
# > One cell installs the course helper on Colab only (tagged `nbval-skip`, so CI skips it); the next
# > imports, seeds and picks the device. Every reading runs on a CPU.

# %% tags=["nbval-skip"]
# Colab only: install the course helper package with its pinned versions. CI skips this cell.
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q",
         "vlm-llm-course[notebooks] @ git+https://github.com/open-vlm-course/vlm-llm-course@main"],
        check=True,
    )

# %%
import torch

from shared.utils import assert_close, error_bound, pick_device, seed_everything

seed_everything(0)
device = pick_device()  # every reading runs on CPU; a GPU only makes it faster
print("torch", torch.__version__)

# %% [markdown]
# ## The problem
#
# > What was broken before this paper, in the paper's own terms and numbers (cite the table or figure).
# > No invented motivation figures.

# %% [markdown]
# ## Derivations
#
# > The key equations, step by step in LaTeX, each step small enough to check by hand. State
# > assumptions; say why, not only what. A derivation sits beside the code that implements it: this section
# > and the Walkthrough may interleave (markdown derivation, then the code cell that implements or checks
# > it numerically), and every code cell follows a markdown cell. Say where each equation is checked.
#
# $$\text{softmax}(x)_i = \frac{e^{x_i}}{\sum_j e^{x_j}} = \frac{e^{x_i - m}}{\sum_j e^{x_j - m}}
# \quad\text{for any } m \text{ (multiply top and bottom by } e^{-m}\text{)} \tag{1}$$
#
# With $m = \max_j x_j$ every exponent is $\le 0$, so nothing overflows.

# %% [markdown]
# ## Walkthrough
#
# > A from-scratch implementation, one idea per cell. Before each code cell, a markdown cell saying what
# > it does and which equation it implements. Tensor shapes in comments; print a tiny concrete example at
# > each step, and explain special tokens, offsets and book-keeping variables where they appear.

# %%
def softmax(x: torch.Tensor) -> torch.Tensor:
    """Numerically stable softmax over the last dim (eq. 1). x: (..., n) -> (..., n)."""
    z = x - x.max(dim=-1, keepdim=True).values  # (..., n): subtracting the max changes nothing (eq. 1)
    e = z.exp()  # (..., n)
    return e / e.sum(dim=-1, keepdim=True)  # (..., n)


# %% [markdown]
# ## Check against a reference
#
# > Assert that the from-scratch code equals an independent reference (a `transformers` class from a tiny
# > random config, `trl`, an exact brute-force computation, or the course's `shared` module), with an
# > explicit tolerance. Print the measured error as a bound (`error_bound`), the same on every CPU.
# > Each assert compares two independent computations: never a function with its own copy, never an
# > arithmetic identity; break the code on purpose once to see the check fail. Cover the paths a user
# > hits (padding, batch > 1, video as well as images); where the library has the whole model, run a
# > tiny-config end-to-end forward with the reading's own pieces.
# >
# > **Version notes.** Where the reference and the paper differ, or two versions of the reference
# > differ, say which is right with evidence (the upstream issue, PR or commit, or the code lines), and
# > exactly when the difference fires.

# %%
x = torch.randn(4, 7)
err = assert_close(softmax(x), torch.softmax(x, dim=-1), atol=1e-6, name="softmax")
print(f"max abs error vs torch.softmax {error_bound(err)}")  # a bound: the same on every CPU

# %% [markdown]
# ## Reproduction
#
# > A small experiment that reproduces a claim, figure or table of the paper at toy scale, with a plot
# > and a results table, and one sentence comparing the result with the paper's own number or trend.
# > State the claim and the paper's number first. Compare methods at a matched budget (the same samples,
# > steps and compute), over at least 8 seeds, with the spread shown (std and min-max); ablate each
# > component the reading introduces; report what the toy shows, including where a trick does not help
# > at this scale, and why. A training loop shows a `tqdm.auto` progress bar in a cell tagged
# > `nbval-ignore-output`; the next cell prints rounded results.
#
# Toy claim: eq. (1) keeps softmax finite where the textbook formula overflows. Both methods see the same
# 8 seeds and the same 1,000 rows of 16 logits each (a matched budget).

# %%
SEEDS = range(8)
nan_rate = {"naive": [], "stable (eq. 1)": []}
for seed in SEEDS:
    g = torch.Generator().manual_seed(seed)
    x = 50 * torch.randn(1000, 16, generator=g)  # (rows, logits): e^x overflows float32 past x ~ 88.7
    naive = x.exp() / x.exp().sum(dim=-1, keepdim=True)  # (rows, logits)
    nan_rate["naive"].append(naive.isnan().any(dim=-1).double().mean().item())
    nan_rate["stable (eq. 1)"].append(softmax(x).isnan().any(dim=-1).double().mean().item())

print(f"{'method':<16} {'rows with NaN, mean ± std':>26} {'min-max':>14}   (8 seeds)")
for name, rates in nan_rate.items():
    r = torch.tensor(rates, dtype=torch.float64)
    print(f"{name:<16} {r.mean():>18.3f} ± {r.std():.3f} {r.min():>8.3f}-{r.max():.3f}")

# %% [markdown]
# ### What a healthy run prints
#
# > The values a reader should see, and an assert that this run is within them: a DPO loss starts at
# > ln 2, a PPO clip fraction stays near 0.1, an accuracy ends above some value. Readers compare their
# > own runs with this cell.
#
# The stable softmax never produces a NaN; the naive one fails on about 46% of the rows (0.43-0.49 over the 8 seeds).

# %%
print("healthy: stable NaN rate = 0.000; naive NaN rate between 0.3 and 0.6")
assert max(nan_rate["stable (eq. 1)"]) == 0.0
assert 0.3 < sum(nan_rate["naive"]) / len(SEEDS) < 0.6

# %% [markdown]
# ## Misconceptions
#
# > Common wrong claims (the seed errors listed in the syllabus, classic interview traps), each stated and
# > corrected with the paper's evidence (section, table or figure).
#
# - **Claim:** ... **Correction:** ... (paper, §x).

# %% [markdown]
# ## Exercises
#
# > 2-4 questions. Where one has a checkable answer, a cell that checks the reader's answer.

# %% [markdown]
# ## References
#
# > The paper, the official code, and the reference implementation used in the check (package, module,
# > version).
