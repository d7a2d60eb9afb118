"""Every public function and class of ``shared`` refuses bad input with a clear error, never a wrong answer.

Each case is one call and the error it must raise: ``TypeError`` (``shared.utils.InputTypeError``, which is
also a ``ValueError``) for a wrong type, plain ``ValueError`` for a wrong value, with a message naming the
argument. The comment after a case marks what the call did before the check was added (measured against
the previous ``shared``): ``# was silent`` (it returned: a wrong answer, a NaN, or a meaningless result such
as an empty loss) or ``# was torch`` (an error from inside torch or Python that did not name the argument).
The valid space (unusual but legal inputs) is in ``test_bad_input_valid_space.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import attention as A
from shared import mrope as M
from shared import norms as N
from shared import policy_losses as P
from shared import preference_losses as PF
from shared import returns as RT
from shared import rope as R
from shared import tiling as TL
from shared import utils as U
from shared.vision import smart_resize

NAN, INF = float("nan"), float("inf")
T = TypeError  # wrong type: shared.utils.InputTypeError
V = ValueError  # wrong value


def _with(t: torch.Tensor, index: tuple, value: float) -> torch.Tensor:
    out = t.clone()
    out[index] = value
    return out


# ---------------------------------------------------------------- fixtures shared by the cases (small, fixed)
ONE, ZERO = torch.ones(2), torch.zeros(2)
META = torch.ones(2, device="meta")
INV8 = R.rope_inv_freq(8)
COS, SIN = R.rope_cos_sin(torch.arange(5), INV8)  # (5, 8)
X = torch.randn(1, 2, 5, 8, generator=torch.Generator().manual_seed(0))  # (batch, heads, seq, head_dim)
Q = torch.randn(1, 2, 3, 4, generator=torch.Generator().manual_seed(1))
CAUSAL = A.causal_mask(3)
VIDEO4 = torch.tensor([[M.VIDEO] * 4])  # one video block of 2 x (2x4 -> 1x2) tokens
GRID_V = torch.tensor([[2, 2, 4]])
LP = torch.randn(2, 3, generator=torch.Generator().manual_seed(2))  # per-token log-probs (batch, T)
MASK = torch.tensor([[1, 1, 0], [1, 0, 0]])
ADV = torch.tensor([1.0, -1.0])
ATT = A.Attention(8, 2)

# fmt: off
CASES = [
    # ---------------------------------------------------------------- shared.utils
    ("seed float", lambda: U.seed_everything(1.0), T, "seed must be an int"),
    ("seed negative", lambda: U.seed_everything(-1), V, "seed must be an int >= 0"),
    ("pick_device int", lambda: U.pick_device(0), T, "prefer must be None or a str"),  # was torch
    ("pick_device cuda:x", lambda: U.pick_device("cuda:x"), V, "prefer must be"),  # was torch
    ("assert_close atol nan", lambda: U.assert_close(ONE, ZERO, atol=NAN), V, "atol and rtol"),  # was silent
    ("assert_close rtol nan", lambda: U.assert_close(ONE, ZERO, rtol=NAN), V, "atol and rtol"),  # was silent
    ("assert_close atol inf", lambda: U.assert_close(ONE, ZERO, atol=INF), V, "finite"),  # was silent
    ("assert_close atol str", lambda: U.assert_close(ONE, ZERO, atol="0"), T, "atol must be a number"),  # was torch
    ("assert_close atol bool", lambda: U.assert_close(ONE, ZERO, atol=True), T, "atol must be a number"),  # was silent
    ("assert_close list", lambda: U.assert_close([1.0], ONE), T, "two torch.Tensors"),
    ("assert_close meta", lambda: U.assert_close(META, ONE), V, "actual is on the meta device"),  # was torch
    ("assert_close complex", lambda: U.assert_close(ONE * 1j, ONE * 1j), T, "complex"),  # was silent
    ("assert_close name", lambda: U.assert_close(ONE, ONE, name=3), T, "name must be a str"),  # was silent
    ("error_bound nan", lambda: U.error_bound(NAN), V, "err must be a finite number"),
    ("error_bound bool", lambda: U.error_bound(True), T, "err must be a number"),  # was silent
    ("error_bound floor nan", lambda: U.error_bound(1e-3, NAN), V, "floor must be a finite number > 0"),
    ("error_bound floor inf", lambda: U.error_bound(1e-3, INF), V, "floor"),  # was silent ("< inf")
    ("error_bound str", lambda: U.error_bound("1e-3"), T, "err must be a number"),
    ("check_tensor meta", lambda: U.check_tensor("w", META), V, "w is on the meta device"),
    ("check_tensor empty", lambda: U.check_tensor("w", torch.zeros(0, 2), nonempty=True), V, "w must not be empty"),
    ("check_tensor nan", lambda: U.check_tensor("w", _with(ONE, (1,), NAN), finite=True), V, "w must be finite"),
    ("check_tensor inf where mask", lambda: U.check_tensor("w", _with(ONE, (1,), INF), finite=torch.tensor([False, True])), V, "finite .* where the mask is 1"),
    ("check_int bool", lambda: U.check_int("n", True), T, "n must be an int"),
    ("check_int np.bool_", lambda: U.check_int("n", np.bool_(True)), T, "n must be an int"),
    ("check_number bool", lambda: U.check_number("s", False), T, "s must be a number"),
    ("check_number nan", lambda: U.check_number("s", NAN), V, "s must be a finite number"),
    ("check_number bounds", lambda: U.check_number("s", 1.0, ge=0, lt=1), V, "s must be a finite number >= 0 and < 1"),
    ("check_bool int", lambda: U.check_bool("flag", 1), T, "flag must be a bool"),
    ("check_choice unknown", lambda: U.check_choice("kind", "b", ("a")), V, "kind must be one of"),
    ("check_choice None", lambda: U.check_choice("kind", None, ("a")), T, "kind must be one of"),
    ("check_same_device", lambda: U.check_same_device(a=ONE, b=META), V, "a, b must be on one device"),
    ("module on meta", lambda: U.check_module_input(torch.nn.Linear(2, 2, device="meta"), ONE), V, "meta"),
    # ---------------------------------------------------------------- shared.vision
    ("smart_resize float", lambda: smart_resize(100.0, 100), T, "height must be an int"),
    ("smart_resize zero", lambda: smart_resize(0, 100), V, "height must be an int >= 1"),
    ("smart_resize bool factor", lambda: smart_resize(100, 100, factor=True), T, "factor must be an int"),
    ("smart_resize min > max", lambda: smart_resize(100, 100, min_pixels=10**6, max_pixels=10**5), V, "min_pixels"),
    # ---------------------------------------------------------------- shared.tiling
    ("tile_grids min > max", lambda: TL.tile_grids(5, 4), V, "min_tiles"),
    ("tile_grids zero", lambda: TL.tile_grids(0, 4), V, "min_tiles must be an int >= 1"),
    ("closest grid float", lambda: TL.closest_ratio_grid(100.5, 100), T, "height must be an int"),
    ("closest grid zero width", lambda: TL.closest_ratio_grid(100, 0), V, "width must be an int >= 1"),
    ("closest grid tile", lambda: TL.closest_ratio_grid(100, 100, tile_size=0), V, "tile_size"),
    ("best fit no grids", lambda: TL.best_fit_grid(100, 100, tile_size=384, grids=[]), V, "grids must be a non-empty"),
    ("best fit bad pair", lambda: TL.best_fit_grid(100, 100, tile_size=384, grids=[(1, 2, 3)]), V, "grids\\[0\\]"),
    ("best fit zero cols", lambda: TL.best_fit_grid(100, 100, tile_size=384, grids=[(0, 2)]), V, "grids\\[0\\]\\[0\\]"),
    ("split_tiles 2d", lambda: TL.split_tiles(torch.zeros(4, 4), 2), V, "image must be"),
    ("split_tiles ragged", lambda: TL.split_tiles(torch.zeros(3, 5, 4), 2), V, "multiples of tile_size"),
    ("pixel_shuffle 3d", lambda: TL.pixel_shuffle(torch.zeros(4, 4, 2)), V, "x must have 4 dimensions"),
    ("pixel_shuffle int", lambda: TL.pixel_shuffle(torch.zeros(1, 4, 4, 2, dtype=torch.long)), T, "floating-point"),
    ("pixel_shuffle scale", lambda: TL.pixel_shuffle(torch.zeros(1, 4, 4, 2), 0.3), V, "1/k"),
    ("pixel_shuffle scale > 1", lambda: TL.pixel_shuffle(torch.zeros(1, 4, 4, 2), 2.0), V, "scale_factor"),
    ("pixel_shuffle odd grid", lambda: TL.pixel_shuffle(torch.zeros(1, 5, 4, 2)), V, "divisible"),
    ("unfold_merge factor", lambda: TL.unfold_merge(torch.zeros(1, 4, 4, 2), 0), V, "factor must be an int >= 1"),
    ("unfold_merge empty", lambda: TL.unfold_merge(torch.zeros(1, 0, 4, 2)), V, "x must not be empty"),
    # ---------------------------------------------------------------- shared.returns and PPO's value loss
    ("gae dones 2", lambda: RT.gae(ONE, ONE, torch.tensor([0, 2]), torch.tensor(0.0)), V, "dones must hold 0/1"),
    ("gae values shape", lambda: RT.gae(ONE, torch.ones(3), ZERO, torch.tensor(0.0)), V, "values must have the shape"),
    ("gae last_values shape", lambda: RT.gae(ONE, ONE, ZERO, ONE), V, "last_values must have shape"),
    ("gae lam > 1", lambda: RT.gae(ONE, ONE, ZERO, torch.tensor(0.0), lam=1.5), V, "lam"),
    ("gae rewards nan", lambda: RT.gae(_with(ONE, (0,), NAN), ONE, ZERO, torch.tensor(0.0)), V, "rewards must be finite"),
    ("gae int rewards", lambda: RT.gae(ONE.long(), ONE, ZERO, torch.tensor(0.0)), T, "rewards must be a floating-point"),
    ("gae dtype mix", lambda: RT.gae(ONE, ONE.double(), ZERO, torch.tensor(0.0)), T, "use one dtype"),
    ("td gamma nan", lambda: RT.td_errors(ONE, ONE, ZERO, torch.tensor(0.0), gamma=NAN), V, "gamma"),
    ("returns 3d", lambda: RT.discounted_returns(torch.ones(1, 1, 2), torch.zeros(1, 1, 2)), V, "rewards must have 1 or 2"),
    ("returns dones meta", lambda: RT.discounted_returns(ONE, META), V, "dones is on the meta device"),
    ("value loss shape", lambda: P.clipped_value_loss(ONE, torch.ones(3), ONE), V, "old_values must have the shape"),
    ("value loss clip 0", lambda: P.clipped_value_loss(ONE, ONE, ONE, clip_range=0.0), V, "clip_range"),
    ("value loss form", lambda: P.clipped_value_loss(ONE, ONE, ONE, clip_range=0.2, form="min"), V, "form"),
    ("surrogate 1d adv shape", lambda: P.clipped_surrogate(ONE, torch.ones(2, 1)), V, "1-D log_weights"),
    # ---------------------------------------------------------------- shared.preference_losses
    ("rewards beta 0", lambda: PF.implicit_rewards(ONE, ONE, ONE, ONE, beta=0.0), V, "beta"),
    ("dpo shape", lambda: PF.dpo_sigmoid_loss(ONE, torch.ones(3), ONE, ONE), V, "policy_rejected_logps must have the shape"),
    ("dpo nan", lambda: PF.dpo_sigmoid_loss(ONE, ONE, _with(ONE, (0,), NAN), ONE), V, "ref_chosen_logps"),
    ("dpo int", lambda: PF.dpo_sigmoid_loss(ONE.long(), ONE.long(), ONE.long(), ONE.long()), T, "policy_chosen_logps"),
    ("dpo dtype mix", lambda: PF.dpo_sigmoid_loss(ONE, ONE.double(), ONE, ONE), T, "use one dtype"),
    ("dpo meta", lambda: PF.dpo_sigmoid_loss(ONE, ONE, ONE, META), V, "meta"),
    ("bco delta shape", lambda: PF.bco_pair_loss(ONE, ONE, ONE, ONE, delta=ONE), V, "delta must be one number"),
    ("bco delta nan", lambda: PF.bco_pair_loss(ONE, ONE, ONE, ONE, delta=NAN), V, "delta"),
    ("bco mean 2d", lambda: PF.bco_batch_reward_mean(ONE[None], ONE, ONE, ONE), V, "policy_chosen_logps"),
    ("running mean nan", lambda: PF.RunningRewardMean().update(NAN), V, "batch_mean"),
    ("sft negative length", lambda: PF.sft_loss(ONE, torch.tensor([2, -1])), V, "chosen_lengths must hold token counts"),
    ("sft bool length", lambda: PF.sft_loss(ONE, torch.tensor([True, True])), T, "chosen_lengths"),
    ("sft zero tokens", lambda: PF.sft_loss(ONE, torch.zeros(2)), V, "sums to 0"),
    ("sft normalize", lambda: PF.sft_loss(ONE, ONE, normalize="batch"), V, "normalize"),
    ("mpo weights two", lambda: PF.mpo_loss(ONE, ONE, ONE, ONE, ONE, weights=(0.8, 0.2)), T, "weights must be a tuple"),
    ("mpo weight negative", lambda: PF.mpo_loss(ONE, ONE, ONE, ONE, ONE, weights=(0.8, -0.2, 1.0)), V, "weights\\[1\\]"),
    # ---------------------------------------------------------------- shared.rope: scalars and options
    ("rope head_dim odd", lambda: R.rope_inv_freq(7), V, "even int"),
    ("rope head_dim float", lambda: R.rope_inv_freq(8.0), T, "even int"),
    ("rope base nan", lambda: R.rope_inv_freq(8, NAN), V, "base must be a finite number > 1"),
    ("rope base inf", lambda: R.rope_inv_freq(8, INF), V, "base"),
    ("rope base 1", lambda: R.rope_inv_freq(8, 1.0), V, "base"),
    ("linear factor 0", lambda: R.linear_inv_freq(8, factor=0.0), V, "factor"),
    ("linear factor inf", lambda: R.linear_inv_freq(8, factor=INF), V, "factor"),
    ("ntk factor str", lambda: R.ntk_inv_freq(8, factor="2"), T, "factor"),
    ("dynamic seq_len 0", lambda: R.dynamic_ntk_inv_freq(8, factor=2.0, original_max_position_embeddings=16, seq_len=0), V, "seq_len must be an int >= 1"),
    ("yarn beta nan", lambda: R.yarn_inv_freq(8, factor=2.0, original_max_position_embeddings=16, beta_fast=NAN), V, "beta_fast"),
    ("yarn truncate int", lambda: R.yarn_inv_freq(8, factor=2.0, original_max_position_embeddings=16, truncate=1), T, "truncate must be a bool"),
    ("yarn truncate str", lambda: R.yarn_inv_freq(8, factor=2.0, original_max_position_embeddings=16, truncate="False"), T, "truncate must be a bool"),
    # a negative mscale made the factor 0 (ZeroDivisionError) or negative (sign-flipped cos/sin)
    ("yarn mscale_all_dim < 0", lambda: R.yarn_attention_factor(4.0, mscale=1.0, mscale_all_dim=-10 / math.log(4)), V, "mscale_all_dim"),  # was torch
    ("yarn mscale < 0", lambda: R.yarn_attention_factor(4.0, mscale=-20.0, mscale_all_dim=1.0), V, "mscale"),  # was silent
    ("rope_init kind unknown", lambda: R.rope_init("ntk-by-parts", 8), V, "kind must be one of"),
    ("rope_init kind not str", lambda: R.rope_init(None, 8), T, "kind must be one of"),
    ("rope_init unused factor nan", lambda: R.rope_init("default", 8, factor=NAN), V, "factor"),  # was silent
    ("rope_init unused seq_len", lambda: R.rope_init("linear", 8, factor=2.0, seq_len=-3), V, "seq_len"),  # was silent
    ("rope_init attention_factor 0", lambda: R.rope_init("yarn", 8, factor=2.0, original_max_position_embeddings=16, attention_factor=0.0), V, "attention_factor"),
    ("rope_init yarn no L", lambda: R.rope_init("yarn", 8, factor=2.0), V, "original_max_position_embeddings"),
    ("sinusoidal 0 positions", lambda: R.sinusoidal_encoding(0, 8), V, "num_positions"),
    ("sinusoidal odd dim", lambda: R.sinusoidal_encoding(4, 5), V, "dim must be an even int"),
    # ---------------------------------------------------------------- shared.rope: tables and rotation
    ("cos_sin bool positions", lambda: R.rope_cos_sin(torch.tensor([True, False]), INV8), T, "positions must be integer or real"),  # was silent
    ("cos_sin nan position", lambda: R.rope_cos_sin(torch.tensor([0.0, NAN]), INV8), V, "positions must be finite"),  # was silent
    ("cos_sin inf position", lambda: R.rope_cos_sin(torch.tensor([0.0, INF]), INV8), V, "positions must be finite"),  # was silent
    ("cos_sin empty positions", lambda: R.rope_cos_sin(torch.arange(0), INV8), V, "positions must not be empty"),  # was silent
    ("cos_sin nan inv_freq", lambda: R.rope_cos_sin(torch.arange(3), _with(INV8, (1,), NAN)), V, "inv_freq must be finite"),  # was silent
    ("cos_sin empty inv_freq", lambda: R.rope_cos_sin(torch.arange(3), INV8[:0]), V, "inv_freq must not be empty"),  # was silent
    ("cos_sin int inv_freq", lambda: R.rope_cos_sin(torch.arange(3), torch.ones(4, dtype=torch.long)), T, "inv_freq must be a floating-point"),
    ("cos_sin scale 0", lambda: R.rope_cos_sin(torch.arange(3), INV8, scale=0.0), V, "scale must be a finite number > 0"),  # was silent
    ("cos_sin scale -1", lambda: R.rope_cos_sin(torch.arange(3), INV8, scale=-1.0), V, "scale"),  # was silent
    ("cos_sin scale nan", lambda: R.rope_cos_sin(torch.arange(3), INV8, scale=NAN), V, "scale"),
    ("cos_sin layout", lambda: R.rope_cos_sin(torch.arange(3), INV8, layout="neox"), V, "layout must be one of"),
    ("cos_sin meta", lambda: R.rope_cos_sin(torch.arange(3, device="meta"), INV8), V, "positions is on the meta device"),  # was torch
    ("rotate_half odd", lambda: R.rotate_half(torch.arange(3.0)), V, "even int"),  # was silent
    ("rotate_half list", lambda: R.rotate_half([1.0, 2.0]), T, "x must be a torch.Tensor"),  # was torch
    ("rotate_half scalar", lambda: R.rotate_half(torch.tensor(1.0)), V, "at least one dimension"),  # was torch
    ("apply_rope one position for five", lambda: R.apply_rope(X, COS[:1], SIN[:1]), V, "hold 1 position"),  # was silent
    ("apply_rope 1D cos for five", lambda: R.apply_rope(X, COS[0], SIN[0]), V, "hold 1 position"),  # was silent
    ("apply_rope (1,1,d) for five", lambda: R.apply_rope(X, COS[:1, None], SIN[:1, None]), V, "hold 1 position"),  # was silent
    ("apply_rope cos grows x", lambda: R.apply_rope(X, COS.expand(3, 1, 5, 8), SIN.expand(3, 1, 5, 8)), V, "do not broadcast to x"),  # was silent: a (3, 2, 5, 8) result
    ("apply_rope wrong seq", lambda: R.apply_rope(X, COS[:4], SIN[:4]), V, "do not broadcast"),
    ("apply_rope nan cos", lambda: R.apply_rope(X, _with(COS, (0, 0), NAN), SIN), V, "cos must be finite"),  # was silent
    ("apply_rope cos/sin shapes", lambda: R.apply_rope(X, COS, SIN[:1]), V, "same shape"),
    ("apply_rope int x", lambda: R.apply_rope(X.long(), COS, SIN), T, "x must be a floating-point"),
    ("apply_rope empty x", lambda: R.apply_rope(X[:0], COS, SIN), V, "x must not be empty"),  # was silent
    ("apply_rope meta x", lambda: R.apply_rope(X.to("meta"), COS, SIN), V, "meta"),  # was torch
    ("apply_rope cos on meta", lambda: R.apply_rope(X, COS.to("meta"), SIN), V, "cos is on the meta device"),  # was torch
    # ---------------------------------------------------------------- shared.mrope
    ("token types float id", lambda: M.mm_token_types(torch.tensor([[1, 2]]), 1.5, 2), T, "image_token_id must be an int"),  # was silent
    ("token types bool id", lambda: M.mm_token_types(torch.tensor([[1, 2]]), 1, True), T, "video_token_id"),
    ("token types empty", lambda: M.mm_token_types(torch.zeros(1, 0, dtype=torch.long), 1, 2), V, "input_ids must not be empty"),  # was silent
    ("position ids type 3", lambda: M.mrope_position_ids(torch.tensor([[0, 3]])), V, "token_types must hold only"),
    ("position ids type -1", lambda: M.mrope_position_ids(torch.tensor([[0, -1]])), V, "token_types must hold only"),
    ("position ids float types", lambda: M.mrope_position_ids(torch.zeros(1, 3)), T, "token_types must be an integer"),
    ("position ids empty batch", lambda: M.mrope_position_ids(torch.zeros(0, 3, dtype=torch.long)), V, "token_types must not be empty"),  # was silent
    ("position ids zero length", lambda: M.mrope_position_ids(torch.zeros(2, 0, dtype=torch.long)), V, "must not be empty"),
    ("position ids all padding", lambda: M.mrope_position_ids(torch.zeros(1, 2, dtype=torch.long), attention_mask=torch.zeros(1, 2)), V, "no unmasked token"),
    ("position ids mask 2", lambda: M.mrope_position_ids(torch.zeros(1, 2, dtype=torch.long), attention_mask=torch.tensor([[1, 2]])), V, "0/1"),
    ("position ids mask nan", lambda: M.mrope_position_ids(torch.zeros(1, 2, dtype=torch.long), attention_mask=torch.tensor([[1.0, NAN]])), V, "0/1"),
    ("position ids mask shape", lambda: M.mrope_position_ids(torch.zeros(1, 2, dtype=torch.long), attention_mask=torch.ones(1, 3)), V, "attention_mask shape"),
    ("grid zero", lambda: M.mrope_position_ids(VIDEO4, video_grid_thw=torch.tensor([[0, 2, 4]])), V, "must be positive"),
    ("grid not divisible", lambda: M.mrope_position_ids(VIDEO4, video_grid_thw=torch.tensor([[1, 3, 4]])), V, "divisible by spatial_merge_size"),
    ("grid float", lambda: M.mrope_position_ids(VIDEO4, video_grid_thw=GRID_V.float()), T, "video_grid_thw must be an integer"),
    ("grid shape", lambda: M.mrope_position_ids(VIDEO4, video_grid_thw=torch.tensor([[2, 4]])), V, r"\(n, 3\)"),
    ("grid too few tokens", lambda: M.mrope_position_ids(VIDEO4[:, :3], video_grid_thw=GRID_V), V, "shorter than"),
    ("grid unused", lambda: M.mrope_position_ids(torch.zeros(1, 2, dtype=torch.long), image_grid_thw=torch.tensor([[1, 2, 2]])), V, "image_grid_thw rows but 0"),
    ("merge 0", lambda: M.mrope_position_ids(VIDEO4, video_grid_thw=GRID_V, spatial_merge_size=0), V, "spatial_merge_size"),
    ("merge float", lambda: M.mrope_position_ids(VIDEO4, video_grid_thw=GRID_V, spatial_merge_size=2.0), T, "spatial_merge_size"),
    ("tokens/s inf", lambda: M.mrope_position_ids(VIDEO4, video_grid_thw=GRID_V, tokens_per_second=INF), V, "tokens_per_second"),  # was silent: ids -2**63
    ("tokens/s 0", lambda: M.mrope_position_ids(VIDEO4, video_grid_thw=GRID_V, tokens_per_second=0), V, "tokens_per_second"),
    ("tokens/s -2", lambda: M.mrope_position_ids(VIDEO4, video_grid_thw=GRID_V, tokens_per_second=-2), V, "tokens_per_second"),
    ("tokens/s str", lambda: M.mrope_position_ids(VIDEO4, video_grid_thw=GRID_V, tokens_per_second="2"), T, "tokens_per_second"),
    ("tokens/s overflow", lambda: M.mrope_position_ids(VIDEO4, video_grid_thw=GRID_V, tokens_per_second=1e30), V, "overflow"),  # was silent: ids -2**63
    ("seconds without tokens/s", lambda: M.mrope_position_ids(VIDEO4, video_grid_thw=GRID_V, second_per_grid_ts=[1.0]), V, "needs tokens_per_second"),
    ("seconds str", lambda: M.mrope_position_ids(VIDEO4, video_grid_thw=GRID_V, tokens_per_second=2, second_per_grid_ts=["a"]), T, "second_per_grid_ts"),  # was torch
    ("seconds bool tensor", lambda: M.mrope_position_ids(VIDEO4, video_grid_thw=GRID_V, tokens_per_second=2, second_per_grid_ts=torch.tensor([True])), T, "second_per_grid_ts"),  # was silent
    ("seconds scalar", lambda: M.mrope_position_ids(VIDEO4, video_grid_thw=GRID_V, tokens_per_second=2, second_per_grid_ts=0.5), T, "second_per_grid_ts"),  # was silent
    ("seconds nan", lambda: M.mrope_position_ids(VIDEO4, video_grid_thw=GRID_V, tokens_per_second=2, second_per_grid_ts=torch.tensor([NAN])), V, "second_per_grid_ts"),
    ("seconds negative", lambda: M.mrope_position_ids(VIDEO4, video_grid_thw=GRID_V, tokens_per_second=2, second_per_grid_ts=[-1.0]), V, "second_per_grid_ts"),
    ("seconds count", lambda: M.mrope_position_ids(VIDEO4, video_grid_thw=GRID_V, tokens_per_second=2, second_per_grid_ts=[1.0, 2.0]), V, "2 entries for 1 videos"),
    ("grid on meta", lambda: M.mrope_position_ids(VIDEO4, video_grid_thw=GRID_V.to("meta")), V, "meta"),  # was torch
    ("section tensor", lambda: M.mrope_axis_of_frequency(torch.tensor([2, 1, 1])), T, "mrope_section must be a list"),
    ("section 2 entries", lambda: M.mrope_axis_of_frequency([2, 2]), V, "mrope_section must be a list of 3"),
    ("section float", lambda: M.mrope_axis_of_frequency([2.0, 1, 1]), T, "mrope_section entries"),
    ("section negative", lambda: M.mrope_axis_of_frequency([3, -1, 2]), V, "mrope_section entries"),
    ("section zeros", lambda: M.mrope_axis_of_frequency([0, 0, 0]), V, "all zeros"),
    ("section layout", lambda: M.mrope_axis_of_frequency([2, 1, 1], "chunked"), V, "layout must be one of"),
    ("section interleaved", lambda: M.mrope_axis_of_frequency([0, 4, 0], "interleaved"), V, "interleaved layout"),
    ("mrope cos bool ids", lambda: M.mrope_cos_sin(torch.ones(3, 1, 2, dtype=torch.bool), INV8, [2, 1, 1]), T, "position_ids must be an integer"),  # was silent
    ("mrope cos float ids", lambda: M.mrope_cos_sin(torch.full((3, 1, 2), 0.5), INV8, [2, 1, 1]), T, "position_ids must be an integer"),  # was silent
    ("mrope cos 2 axes", lambda: M.mrope_cos_sin(torch.zeros(2, 1, 2, dtype=torch.long), INV8, [2, 1, 1]), V, r"\(3, ..., seq\)"),
    ("mrope cos section sum", lambda: M.mrope_cos_sin(torch.zeros(3, 1, 2, dtype=torch.long), INV8, [2, 2, 2]), V, "sums to 6"),
    ("mrope cos empty", lambda: M.mrope_cos_sin(torch.zeros(3, 1, 0, dtype=torch.long), INV8, [2, 1, 1]), V, "must not be empty"),  # was silent
    ("mrope cos scale 0", lambda: M.mrope_cos_sin(torch.zeros(3, 1, 2, dtype=torch.long), INV8, [2, 1, 1], scale=0.0), V, "scale"),  # was silent
    ("vision ids None", lambda: M.vision_position_ids(None), T, "grid_thw must be a torch.Tensor"),
    ("vision ids empty", lambda: M.vision_position_ids(torch.zeros(0, 3, dtype=torch.long)), V, "grid_thw must not be empty"),
    ("vision ids odd grid", lambda: M.vision_position_ids(torch.tensor([[1, 3, 4]])), V, "divisible"),
    ("vision ids zero grid", lambda: M.vision_position_ids(torch.tensor([[1, 0, 4]])), V, "positive"),
    ("vision cos head_dim 6", lambda: M.vision_rope_cos_sin(torch.zeros(2, 2, dtype=torch.long), 6), V, "multiple of 4"),
    ("vision cos head_dim float", lambda: M.vision_rope_cos_sin(torch.zeros(2, 2, dtype=torch.long), 8.0), T, "head_dim"),
    ("vision cos float ids", lambda: M.vision_rope_cos_sin(torch.zeros(2, 2), 8), T, "position_ids must be an integer"),
    ("vision cos bool ids", lambda: M.vision_rope_cos_sin(torch.zeros(2, 2, dtype=torch.bool), 8), T, "position_ids must be an integer"),
    ("vision cos empty", lambda: M.vision_rope_cos_sin(torch.zeros(0, 2, dtype=torch.long), 8), V, "must not be empty"),  # was silent
    # ---------------------------------------------------------------- shared.attention
    ("repeat_kv 0", lambda: A.repeat_kv(Q, 0), V, "n_rep must be an int >= 1"),
    ("repeat_kv float", lambda: A.repeat_kv(Q, 2.0), T, "n_rep must be an int"),
    ("sdpa nan in v at a masked key", lambda: A.scaled_dot_product_attention(Q, Q, _with(Q, (0, 0, 2, 0), NAN), CAUSAL), V, "v must be finite"),  # was silent: NaN rows
    ("sdpa inf in q", lambda: A.scaled_dot_product_attention(_with(Q, (0, 0, 0, 0), INF), Q, Q), V, "q must be finite"),  # was silent
    ("check_qkv k and v differ", lambda: A.check_qkv(Q, Q[:, :1], Q), V, "k and v must have the same"),
    ("check_qkv heads", lambda: A.check_qkv(Q[:, :1].expand(1, 3, 3, 4), Q, Q), V, "multiple of k/v's heads"),
    ("sdpa +inf additive mask", lambda: A.scaled_dot_product_attention(Q, Q, Q, _with(torch.zeros(3, 3), (0, 1), INF)), V, r"NaN or \+inf"),  # was silent
    ("sdpa nan additive mask", lambda: A.scaled_dot_product_attention(Q, Q, Q, _with(torch.zeros(3, 3), (0, 1), NAN)), V, r"NaN or \+inf"),  # was silent
    ("sdpa mask broadcast", lambda: A.scaled_dot_product_attention(Q, Q, Q, torch.ones(1, 3, 3, 3, dtype=torch.bool)), V, "does not broadcast"),
    ("sdpa mask 3D", lambda: A.scaled_dot_product_attention(Q, Q, Q, torch.ones(1, 3, 3, dtype=torch.bool)), V, "2 or 4 dimensions"),
    ("sdpa mask kv_len", lambda: A.scaled_dot_product_attention(Q, Q, Q, torch.ones(3, 4, dtype=torch.bool)), V, "does not broadcast"),
    ("sdpa int mask", lambda: A.scaled_dot_product_attention(Q, Q, Q, torch.ones(3, 3, dtype=torch.long)), T, "mask must be bool"),
    ("sdpa head_dim 0", lambda: A.scaled_dot_product_attention(Q[..., :0], Q[..., :0], Q), V, "q must not be empty"),  # was torch: ZeroDivisionError
    ("sdpa kv_len 0", lambda: A.scaled_dot_product_attention(Q, Q[:, :, :0], Q[:, :, :0]), V, "k must not be empty"),  # was silent: output 0
    ("sdpa empty batch", lambda: A.scaled_dot_product_attention(Q[:0], Q[:0], Q[:0]), V, "must not be empty"),  # was silent
    ("sdpa dtypes", lambda: A.scaled_dot_product_attention(Q, Q.double(), Q), T, "share a dtype"),
    ("sdpa heads", lambda: A.scaled_dot_product_attention(torch.zeros(1, 3, 3, 4), Q, Q), V, "multiple of"),
    ("sdpa scale 0", lambda: A.scaled_dot_product_attention(Q, Q, Q, scale=0.0), V, "scale"),
    ("sdpa scale nan", lambda: A.scaled_dot_product_attention(Q, Q, Q, scale=NAN), V, "scale"),
    ("sdpa scale bool", lambda: A.scaled_dot_product_attention(Q, Q, Q, scale=True), T, "scale"),
    ("sdpa return_weights str", lambda: A.scaled_dot_product_attention(Q, Q, Q, return_weights="no"), T, "return_weights must be a bool"),  # was silent
    ("sdpa meta", lambda: A.scaled_dot_product_attention(Q.to("meta"), Q.to("meta"), Q.to("meta")), V, "meta"),  # was silent
    ("sdpa mask on meta", lambda: A.scaled_dot_product_attention(Q, Q, Q, CAUSAL.to("meta")), V, "meta"),  # was torch
    ("causal q_len 0", lambda: A.causal_mask(0), V, "q_len must be an int >= 1"),
    ("causal q_len float", lambda: A.causal_mask(3.0), T, "q_len must be an int"),
    ("causal offset bool", lambda: A.causal_mask(3, offset=True), T, "offset must be an int"),
    ("causal kv_len 0", lambda: A.causal_mask(3, 0), V, "kv_len"),
    ("sliding window 0", lambda: A.sliding_window_mask(3, window=0), V, "window must be an int >= 1"),
    ("sliding window float", lambda: A.sliding_window_mask(3, window=2.5), T, "window"),
    ("block diagonal float", lambda: A.block_diagonal_mask(torch.tensor([0.0, 2.0])), T, "cu_seqlens must be an integer"),
    ("block diagonal start", lambda: A.block_diagonal_mask(torch.tensor([1, 2])), V, "start with 0"),
    ("block diagonal decreasing", lambda: A.block_diagonal_mask(torch.tensor([0, 3, 2])), V, "non-decreasing"),
    ("block diagonal empty total", lambda: A.block_diagonal_mask(torch.tensor([0, 0])), V, "no tokens"),
    ("with_padding float padding", lambda: A.with_padding(CAUSAL, torch.ones(1, 3)), T, "padding_mask must be bool"),
    ("with_padding 2", lambda: A.with_padding(CAUSAL, torch.tensor([[1, 2, 1]])), V, "0 .padding. or 1"),
    ("with_padding empty batch", lambda: A.with_padding(CAUSAL, torch.ones(0, 3, dtype=torch.bool)), V, "padding_mask must not be empty"),  # was silent
    ("with_padding float mask", lambda: A.with_padding(CAUSAL.float(), torch.ones(1, 3, dtype=torch.bool)), T, "mask must be a bool"),
    ("with_padding kv_len", lambda: A.with_padding(CAUSAL, torch.ones(1, 4, dtype=torch.bool)), V, "to match padding_mask"),
    ("bool_to_additive float", lambda: A.bool_to_additive(torch.zeros(2, 2)), T, "mask must be a bool"),
    ("bool_to_additive int dtype", lambda: A.bool_to_additive(CAUSAL, torch.int64), T, "dtype"),
    ("bool_to_additive str dtype", lambda: A.bool_to_additive(CAUSAL, "float32"), T, "dtype"),
    ("additive_to_bool +inf", lambda: A.additive_to_bool(torch.tensor([0.0, INF])), V, r"\+inf"),  # was silent: +inf read as attend
    ("additive_to_bool nan", lambda: A.additive_to_bool(torch.tensor([0.0, NAN])), V, "NaN"),  # was silent
    ("additive_to_bool bool", lambda: A.additive_to_bool(CAUSAL), T, "floating-point"),
    ("Attention hidden 0", lambda: A.Attention(0, 2), V, "hidden"),
    ("Attention heads float", lambda: A.Attention(8, 2.0), T, "n_heads must be an int"),
    ("Attention kv heads", lambda: A.Attention(8, 4, 3), V, "multiple of n_kv_heads"),
    ("Attention hidden % heads", lambda: A.Attention(10, 4), V, "divisible by n_heads"),
    ("Attention qkv_bias str", lambda: A.Attention(8, 2, qkv_bias="no"), T, "qkv_bias must be a bool"),  # was silent: biases added
    ("Attention out_bias int", lambda: A.Attention(8, 2, out_bias=1), T, "out_bias must be a bool"),  # was silent
    ("Attention float64 x", lambda: ATT(torch.zeros(1, 3, 8, dtype=torch.float64)), T, "x is torch.float64 but Attention's weights are torch.float32"),  # was torch
    ("Attention x on meta", lambda: ATT(torch.zeros(1, 3, 8, device="meta")), V, "meta"),  # was silent
    ("Attention weights on meta", lambda: A.Attention(8, 2).to("meta")(torch.zeros(1, 3, 8)), V, "weights are on the meta device"),  # was silent
    ("Attention empty batch", lambda: ATT(torch.zeros(0, 3, 8)), V, "x must not be empty"),  # was silent
    ("Attention empty seq", lambda: ATT(torch.zeros(1, 0, 8)), V, "x must not be empty"),  # was silent
    ("Attention nan x", lambda: ATT(_with(torch.zeros(1, 3, 8), (0, 1, 2), NAN)), V, "x must be finite"),  # was silent
    ("Attention hidden", lambda: ATT(torch.zeros(1, 3, 6)), V, "hidden=8"),
    ("Attention cos only", lambda: ATT(torch.zeros(1, 3, 8), cos=COS[:3, :4]), V, "both cos and sin"),
    ("Attention cos wrong seq", lambda: ATT(torch.zeros(1, 3, 8), cos=COS[:1, :4], sin=SIN[:1, :4]), V, "hold 1 position"),  # was silent
    ("Attention sin list", lambda: ATT(torch.zeros(1, 3, 8), cos=COS[:3, :4], sin=[0.0]), T, "sin must be a torch.Tensor"),
    ("Attention return_weights int", lambda: ATT(torch.zeros(1, 3, 8), return_weights=1), T, "return_weights must be a bool"),  # was silent
    # ---------------------------------------------------------------- shared.norms
    ("rms_norm eps nan", lambda: N.rms_norm(X, eps=NAN), V, "eps must be a finite number >= 0"),
    ("rms_norm eps -1", lambda: N.rms_norm(X, eps=-1.0), V, "eps"),
    ("rms_norm eps inf", lambda: N.rms_norm(X, eps=INF), V, "eps"),
    ("rms_norm eps str", lambda: N.rms_norm(X, eps="1e-6"), T, "eps must be a number"),
    ("rms_norm eps 0 on a zero row", lambda: N.rms_norm(torch.zeros(1, 4), eps=0.0), V, "eps=0 with a row of zero variance"),  # was silent: NaN
    ("layer_norm eps 0 on a constant row", lambda: N.layer_norm(torch.ones(1, 4), eps=0.0), V, "eps=0"),  # was silent: NaN
    ("rms_norm dim 0", lambda: N.rms_norm(torch.zeros(2, 0)), V, "x must not be empty"),  # was silent
    ("rms_norm empty batch", lambda: N.rms_norm(torch.zeros(0, 4)), V, "x must not be empty"),  # was silent
    ("rms_norm nan x", lambda: N.rms_norm(_with(X, (0, 0, 0, 0), NAN)), V, "x must be finite"),  # was silent
    ("rms_norm int x", lambda: N.rms_norm(torch.ones(2, 4, dtype=torch.long)), T, "floating-point"),
    ("rms_norm weight shape", lambda: N.rms_norm(X, torch.ones(4)), V, r"weight must have shape \(8,\)"),
    ("rms_norm weight nan", lambda: N.rms_norm(X, _with(torch.ones(8), (0,), NAN)), V, "weight must be finite"),  # was silent
    ("rms_norm weight on meta", lambda: N.rms_norm(X, torch.ones(8, device="meta")), V, "weight is on the meta device"),  # was torch
    ("layer_norm bias shape", lambda: N.layer_norm(X, None, torch.zeros(3)), V, "bias must have shape"),
    ("layer_norm bias inf", lambda: N.layer_norm(X, None, _with(torch.zeros(8), (0,), INF)), V, "bias must be finite"),  # was silent
    ("layer_norm scalar", lambda: N.layer_norm(torch.tensor(1.0)), V, "at least 1 dimension"),
    ("RMSNorm dim 0", lambda: N.RMSNorm(0), V, "dim must be an int >= 1"),
    ("RMSNorm dim float", lambda: N.RMSNorm(4.0), T, "dim must be an int"),
    ("RMSNorm eps nan", lambda: N.RMSNorm(4, eps=NAN), V, "eps"),
    ("LayerNorm bias str", lambda: N.LayerNorm(4, bias="no"), T, "bias must be a bool"),  # was silent: bias created
    ("RMSNorm x dim", lambda: N.RMSNorm(4)(torch.ones(2, 3)), V, "the norm's dim 4"),
    ("RMSNorm x on meta", lambda: N.RMSNorm(4)(torch.ones(2, 4, device="meta")), V, "meta"),  # was torch
    ("LayerNorm weights on meta", lambda: N.LayerNorm(4).to("meta")(torch.ones(2, 4)), V, "meta"),  # was torch
    # ---------------------------------------------------------------- shared.policy_losses
    ("advantages nan reward", lambda: P.group_advantages(torch.tensor([1.0, NAN]), 2), V, "rewards must be finite"),
    ("advantages inf reward", lambda: P.group_advantages(torch.tensor([1.0, -INF]), 2), V, "rewards must be finite"),
    ("advantages empty", lambda: P.group_advantages(torch.zeros(0), 2), V, "rewards must not be empty"),  # was silent
    ("advantages int rewards", lambda: P.group_advantages(torch.tensor([0, 1]), 2), T, "rewards must be a floating-point"),
    ("advantages G 1", lambda: P.group_advantages(torch.zeros(4), 1), V, "num_generations"),
    ("advantages G float", lambda: P.group_advantages(torch.zeros(4), 2.0), T, "num_generations"),
    ("advantages G divides", lambda: P.group_advantages(torch.zeros(5), 2), V, "not a multiple"),
    ("advantages eps inf", lambda: P.group_advantages(torch.tensor([0.0, 1.0]), 2, eps=INF), V, "eps must be a finite"),  # was silent: all 0
    ("advantages eps nan", lambda: P.group_advantages(torch.tensor([0.0, 1.0]), 2, eps=NAN), V, "eps"),
    ("advantages eps -1", lambda: P.group_advantages(torch.tensor([0.0, 1.0]), 2, eps=-1.0), V, "eps"),
    ("advantages eps 0 equal rewards", lambda: P.group_advantages(torch.tensor([1.0, 1.0, 0.0, 1.0]), 2, eps=0.0), V, "eps=0 with a group"),  # was silent: NaN
    ("advantages eps 0 batch", lambda: P.group_advantages(torch.ones(4), 2, scale_rewards="batch", eps=0.0), V, "eps=0"),  # was silent: NaN
    ("advantages scale unknown", lambda: P.group_advantages(torch.zeros(4), 2, scale_rewards="std"), V, "scale_rewards must be one of"),
    ("advantages scale bool", lambda: P.group_advantages(torch.zeros(4), 2, scale_rewards=False), T, "scale_rewards"),
    ("k3 shapes", lambda: P.k3_kl(LP, LP[:, :2]), V, "ref_logps must have shape"),
    ("k3 int", lambda: P.k3_kl(LP, LP.long()), T, "ref_logps must be a floating-point"),
    ("k3 empty", lambda: P.k3_kl(LP[:0], LP[:0]), V, "logps must not be empty"),  # was silent
    ("k3 meta", lambda: P.k3_kl(LP, LP.to("meta")), V, "ref_logps is on the meta device"),  # was torch
    ("ratios nan on a real token", lambda: P.log_importance_weights(_with(LP, (0, 1), NAN), LP, MASK), V, "logps must be finite .* where the mask is 1"),  # was silent
    ("ratios -inf old on a real token", lambda: P.log_importance_weights(LP, _with(LP, (1, 0), -INF), MASK), V, "old_logps must be finite"),  # was silent
    ("ratios level", lambda: P.log_importance_weights(LP, LP, MASK, level="seq"), V, "level must be one of"),
    ("ratios mask 0.5", lambda: P.log_importance_weights(LP, LP, MASK * 0.5), V, "only 0 and 1"),
    ("ratios mask complex", lambda: P.log_importance_weights(LP, LP, MASK * 1j), T, "mask must be bool"),
    ("ratios mask shape", lambda: P.log_importance_weights(LP, LP, MASK[:, :2]), V, "mask must have shape"),
    ("ratios mask on meta", lambda: P.log_importance_weights(LP, LP, MASK.to("meta")), V, "mask is on the meta device"),  # was torch
    ("clip eps_low 1", lambda: P.clipped_surrogate(LP, ADV, epsilon_low=1.0), V, "epsilon_low"),
    ("clip eps_low -0.1", lambda: P.clipped_surrogate(LP, ADV, epsilon_low=-0.1), V, "epsilon_low"),
    ("clip eps_high inf", lambda: P.clipped_surrogate(LP, ADV, epsilon_high=INF), V, "epsilon_high"),  # was silent: no clip
    ("clip eps_high nan", lambda: P.clipped_surrogate(LP, ADV, epsilon_high=NAN), V, "epsilon_high"),
    ("clip eps_high str", lambda: P.clipped_surrogate(LP, ADV, epsilon_high="0.28"), T, "epsilon_high"),
    ("clip nan advantage", lambda: P.clipped_surrogate(LP, _with(ADV, (0,), NAN)), V, "advantages must be finite"),  # was silent
    ("clip advantages shape", lambda: P.clipped_surrogate(LP, torch.ones(3)), V, "advantages must have shape"),
    ("clip advantages 3D", lambda: P.clipped_surrogate(LP, torch.ones(2, 3, 1)), V, "1 or 2 dimensions"),
    ("clip empty", lambda: P.clipped_surrogate(LP[:0], ADV[:0]), V, "log_weights must not be empty"),  # was silent
    ("aggregate nan on a real token", lambda: P.aggregate_loss(_with(LP, (0, 0), NAN), MASK), V, "per_token_loss must be finite .* where the mask is 1"),  # was silent
    ("aggregate empty batch", lambda: P.aggregate_loss(LP[:0], MASK[:0]), V, "must not be empty"),  # was silent: NaN (grpo) or 0
    ("aggregate zero length", lambda: P.aggregate_loss(LP[:, :0], MASK[:, :0]), V, "must not be empty"),  # was silent: NaN
    ("aggregate loss_type", lambda: P.aggregate_loss(LP, MASK, loss_type="mean"), V, "loss_type must be one of"),
    ("aggregate loss_type None", lambda: P.aggregate_loss(LP, MASK, loss_type=None), T, "loss_type"),
    ("aggregate dr_grpo no length", lambda: P.aggregate_loss(LP, MASK, loss_type="dr_grpo"), V, "needs max_completion_length"),
    ("aggregate dr_grpo short", lambda: P.aggregate_loss(LP, MASK, loss_type="dr_grpo", max_completion_length=2), V, "must be >= completion_len"),
    ("aggregate length float", lambda: P.aggregate_loss(LP, MASK, loss_type="dr_grpo", max_completion_length=4.0), T, "max_completion_length must be an int"),
    ("aggregate length 0 unused", lambda: P.aggregate_loss(LP, MASK, max_completion_length=0), V, "max_completion_length"),  # was silent
    ("aggregate num_items inf", lambda: P.aggregate_loss(LP, MASK, loss_type="dapo", num_items_in_batch=INF), V, "num_items_in_batch"),  # was silent: loss 0
    ("aggregate num_items nan", lambda: P.aggregate_loss(LP, MASK, loss_type="dapo", num_items_in_batch=NAN), V, "num_items_in_batch"),
    ("aggregate num_items 2 values", lambda: P.aggregate_loss(LP, MASK, loss_type="dapo", num_items_in_batch=torch.tensor([3.0, 4.0])), V, "one real number"),  # was torch
    ("aggregate num_items too few", lambda: P.aggregate_loss(LP, MASK, loss_type="dapo", num_items_in_batch=2), V, "must be >= the tokens"),
    ("aggregate num_items str", lambda: P.aggregate_loss(LP, MASK, loss_type="dapo", num_items_in_batch="3"), T, "num_items_in_batch"),
    ("aggregate loss shape", lambda: P.aggregate_loss(LP[:, :2], MASK), V, "per_token_loss must have shape"),
    ("grpo beta inf", lambda: P.grpo_loss(LP, ADV, MASK, ref_logps=LP, beta=INF), V, "beta must be a finite number >= 0"),  # was silent: NaN
    ("grpo beta -0.1", lambda: P.grpo_loss(LP, ADV, MASK, ref_logps=LP, beta=-0.1), V, "beta"),
    ("grpo beta bool", lambda: P.grpo_loss(LP, ADV, MASK, ref_logps=LP, beta=True), T, "beta"),
    ("grpo no ref", lambda: P.grpo_loss(LP, ADV, MASK, beta=0.1), V, "ref_logps is required"),
    ("grpo ref shape unused", lambda: P.grpo_loss(LP, ADV, MASK, ref_logps=LP[:, :1]), V, "ref_logps must have shape"),  # was silent
    ("grpo ref nan on a real token", lambda: P.grpo_loss(LP, ADV, MASK, ref_logps=_with(LP, (0, 0), NAN), beta=0.1), V, "ref_logps must be finite"),  # was silent: NaN
    ("grpo logps inf on a real token", lambda: P.grpo_loss(_with(LP, (1, 0), -INF), ADV, MASK), V, "logps must be finite"),  # was silent: NaN
    ("grpo kl flag str", lambda: P.grpo_loss(LP, ADV, MASK, ref_logps=LP + 1, beta=0.1, kl_importance_correction="no"), T, "kl_importance_correction must be a bool"),  # was silent: applied
    ("grpo kl flag int", lambda: P.grpo_loss(LP, ADV, MASK, kl_importance_correction=0), T, "kl_importance_correction"),  # was silent
    ("grpo level", lambda: P.grpo_loss(LP, ADV, MASK, importance_sampling_level="tokens"), V, "level must be one of"),
    ("grpo loss_type", lambda: P.grpo_loss(LP, ADV, MASK, loss_type="ppo"), V, "loss_type must be one of"),
    ("grpo eps_high nan", lambda: P.grpo_loss(LP, ADV, MASK, epsilon_high=NAN), V, "epsilon_high"),
    ("grpo advantages shape", lambda: P.grpo_loss(LP, torch.ones(3), MASK), V, "advantages must have shape"),
    ("grpo old on meta", lambda: P.grpo_loss(LP, ADV, MASK, old_logps=LP.to("meta")), V, "old_logps is on the meta device"),  # was torch
]
# fmt: on


@pytest.mark.parametrize(("call", "error", "match"), [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_bad_input_is_refused_clearly(call, error, match):
    with pytest.raises(error, match=match) as info:
        call()
    # exactly the kind promised: a wrong type is an InputTypeError, a wrong value a plain ValueError
    assert type(info.value) is (U.InputTypeError if error is T else ValueError)


def test_input_type_error_is_both_type_and_value_error():
    assert issubclass(U.InputTypeError, TypeError) and issubclass(U.InputTypeError, ValueError)


@pytest.mark.parametrize(
    ("alias", "module"),
    [("U", U), ("R", R), ("M", M), ("A", A), ("N", N), ("P", P), ("TL", TL), ("PF", PF), ("RT", RT)],
)
def test_every_public_callable_has_a_bad_input_case(alias, module):
    """A new public function or class of ``shared`` must come with at least one case above."""
    source = Path(__file__).read_text()
    public = [name for name in module.__all__ if callable(getattr(module, name)) and name != "InputTypeError"]
    missing = [name for name in public if f"{alias}.{name}(" not in source]
    assert not missing, f"no bad-input case calls {alias}.{missing}"


def test_case_names_are_unique():
    names = [c[0] for c in CASES]
    assert len(names) == len(set(names))


# ---------------------------------------------------------------- devices: any single device is accepted


def test_check_same_device_accepts_any_single_device():
    assert U.check_same_device(a=ONE, b=ZERO, c=None) == torch.device("cpu")
    assert U.check_same_device(a=META, b=META) == torch.device("meta")
    assert U.check_same_device() is None
    with pytest.raises(ValueError, match="a on cpu, b on meta"):
        U.check_same_device(a=ONE, b=META)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
def test_mixed_devices_are_refused_on_gpu():
    gpu = torch.device("cuda")
    with pytest.raises(ValueError, match="one device"):
        A.scaled_dot_product_attention(Q.to(gpu), Q, Q)
    with pytest.raises(ValueError, match="one device"):
        R.apply_rope(X.to(gpu), COS, SIN)
    with pytest.raises(ValueError, match="one device"):
        R.rope_cos_sin(torch.arange(3, device=gpu), INV8)
    with pytest.raises(ValueError, match="one device"):
        M.mrope_position_ids(VIDEO4.to(gpu), video_grid_thw=GRID_V)
    with pytest.raises(ValueError, match="one device"):
        P.grpo_loss(LP.to(gpu), ADV, MASK)
    with pytest.raises(ValueError, match="weights are on cpu"):
        ATT(torch.zeros(1, 3, 8, device=gpu))
    with pytest.raises(ValueError, match="one device"):
        N.rms_norm(X.to(gpu), torch.ones(8))


@needs_cuda
def test_one_gpu_device_gives_the_cpu_answer():
    gpu = torch.device("cuda")
    ids, deltas = M.mrope_position_ids(VIDEO4.to(gpu), video_grid_thw=GRID_V.to(gpu))
    ids_cpu, deltas_cpu = M.mrope_position_ids(VIDEO4, video_grid_thw=GRID_V)
    assert (
        ids.device.type == "cuda"
        and torch.equal(ids.cpu(), ids_cpu)
        and torch.equal(deltas.cpu(), deltas_cpu)
    )
    loss = P.grpo_loss(LP.to(gpu), ADV.to(gpu), MASK.to(gpu))
    U.assert_close(loss, P.grpo_loss(LP, ADV, MASK), atol=1e-6)
    vision_ids = M.vision_position_ids(torch.tensor([[1, 2, 4]]))
    for ours, ref in zip(
        M.vision_rope_cos_sin(vision_ids.to(gpu), 8), M.vision_rope_cos_sin(vision_ids, 8), strict=True
    ):
        assert ours.device.type == "cuda"
        U.assert_close(ours, ref, atol=1e-6)
    for ours, ref in zip(
        M.mrope_cos_sin(ids, INV8.to(gpu), [2, 1, 1]), M.mrope_cos_sin(ids_cpu, INV8, [2, 1, 1]), strict=True
    ):
        U.assert_close(ours, ref, atol=1e-6)
    U.assert_close(
        A.scaled_dot_product_attention(Q.to(gpu), Q.to(gpu), Q.to(gpu), CAUSAL.to(gpu)),
        A.scaled_dot_product_attention(Q, Q, Q, CAUSAL),
        atol=1e-5,
    )
    U.assert_close(R.apply_rope(X.to(gpu), COS.to(gpu), SIN.to(gpu)), R.apply_rope(X, COS, SIN), atol=1e-6)


# ---------------------------------------------------------------- the boundary, property-based: refuse or be right


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.sampled_from([1, 2, 3, 5]), min_size=0, max_size=3))
def test_apply_rope_tables_either_refused_or_one_row_per_position(shape):
    """Any cos/sin shape (head_dim last) against x (1, 2, 3, 8): a ValueError, or x's shape and one table row
    per position, the rows of positions 0, 1, 2 (never one position's angles spread over all three)."""
    x = X[:, :, :3]
    rows = shape[-1] if shape else 1  # the tables' dim -2 holds positions 0 .. rows-1
    cos, sin = (t[:rows].expand(*shape[:-1], rows, 8) for t in (COS, SIN))
    try:
        out = R.apply_rope(x, cos, sin)
    except ValueError:  # never a RuntimeError from inside torch
        return
    assert out.shape == x.shape
    assert torch.equal(out, R.apply_rope(x, COS[:3], SIN[:3])) or (len(shape) >= 2 and shape[-1] == 1)


@settings(max_examples=30, deadline=None)
@given(
    shape=st.lists(st.sampled_from([1, 2, 3, 4]), min_size=2, max_size=4),
    kind=st.sampled_from(["bool", "float"]),
    seed=st.integers(0, 2**16),
)
def test_sdpa_mask_either_refused_or_equal_to_torch(shape, kind, seed):
    """Any mask shape: a ValueError, or torch's answer for that mask (no silent broadcast into other heads)."""
    q, k, v = (torch.randn(2, 2, 3, 4, generator=torch.Generator().manual_seed(seed + i)) for i in range(3))
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(shape, generator=g) < 0.7 if kind == "bool" else torch.randn(shape, generator=g)
    if kind == "bool":
        mask[..., -1] = True  # every row keeps a key: torch gives NaN on fully blocked rows, shared gives 0
    try:
        ours = A.scaled_dot_product_attention(q, k, v, mask)
    except (
        ValueError
    ):  # refused: a 3D mask (batch would land on the heads axis) or one torch cannot fit either
        try:
            fits = torch.broadcast_shapes(mask.shape, q.shape[:-1] + (3,)) == (2, 2, 3, 3)
        except RuntimeError:
            fits = False
        assert mask.ndim == 3 or not fits
        return
    assert mask.ndim != 3
    U.assert_close(ours, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-6)
