# ---
# jupyter:
#   course:
#     cpu_seconds: 8
#     id: X0
#     papers:
#     - arxiv: '0000.00000'
#       title: Paper title
#     part: foundations
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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/open-vlm-course/vlm-llm-course/blob/main/template.ipynb)
#
# **Paper:** Authors, *Title*, Venue Year. [arXiv:0000.00000](https://arxiv.org/abs/0000.00000) ·
# **Official code:** [owner/repo](https://github.com/owner/repo)
#
# **Prerequisites:** [F1 · The Transformer](../foundations/F1_transformer.ipynb) (links to the readings this one builds on)
#
# **CPU run time:** 8 s on a 2-core CPU (measured by `make run`, which rewrites this number)
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
         "vlm-llm-course[notebooks] @ git+https://github.com/open-vlm-course/vlm-llm-course"],
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
# > assumptions. Say which equations are checked numerically later, e.g. "(eq. 3, checked in §7)".
#
# $$\text{softmax}(x)_i = \frac{e^{x_i}}{\sum_j e^{x_j}}$$

# %% [markdown]
# ## Walkthrough
#
# > A from-scratch implementation, one idea per cell. Before each code cell, a markdown cell saying what
# > it does and which equation it implements. Tensor shapes in comments.

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

# %%
x = torch.randn(4, 7)
err = assert_close(softmax(x), torch.softmax(x, dim=-1), atol=1e-6, name="softmax")
print(f"max abs error vs torch.softmax {error_bound(err)}")  # a bound: the same on every CPU

# %% [markdown]
# ## Reproduction
#
# > A small experiment that reproduces a claim, figure or table of the paper at toy scale, with a plot,
# > and one sentence comparing the result with the paper's own number or trend. A training loop shows a
# > `tqdm.auto` progress bar in a cell tagged `nbval-ignore-output`; the next cell prints rounded results.

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
