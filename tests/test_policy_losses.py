"""Tests of ``shared.policy_losses`` against ``trl`` 1.16.0's ``GRPOTrainer`` (offline, CPU, tiny model).

One ``GRPOTrainer`` is built per module from a 1-layer Llama with a 64-token vocabulary and a character-level
tokenizer made in place. The loss tests hand ``GRPOTrainer._compute_loss`` a fixed batch and, by
monkeypatching ``_get_per_token_logps_and_entropies``, fixed per-token log-probs, so trl and
``shared.grpo_loss`` see exactly the same numbers; one more test runs the real forward pass. The advantage
tests run trl's own ``_generate_and_score_completions`` (tiny generation on CPU) with a reward function
whose outputs are recorded.
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.policy_losses import (
    aggregate_loss,
    clipped_surrogate,
    group_advantages,
    grpo_loss,
    k3_kl,
    log_importance_weights,
)
from shared.utils import assert_close

os.environ.setdefault("HF_HUB_OFFLINE", "1")

B, P, T = 8, 3, 6  # completions (2 prompts x 4 generations), prompt length, completion length
G = 4
MAX_COMPLETION_LENGTH = 10


@pytest.fixture(scope="module")
def policy_trainer(tmp_path_factory):
    """A GRPOTrainer on a tiny random Llama and a char-level tokenizer, built once (about 0.1 s after imports)."""
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from trl import GRPOConfig, GRPOTrainer

    tmp = tmp_path_factory.mktemp("policy_grpo")
    chars = ["<pad>", "<eos>", "<unk>", *"0123456789+= abcdefghijklmnopqrstuvwxyz"]
    tok = Tokenizer(models.WordLevel(vocab={c: i for i, c in enumerate(chars)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")  # one token per character
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    tokenizer.save_pretrained(tmp / "tokenizer")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(config)
    dataset = Dataset.from_dict({"prompt": ["1+2=", "3+4="]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers' own deprecation notices, not ours
        args = GRPOConfig(
            output_dir=str(tmp / "out"),
            report_to="none",
            use_cpu=True,
            per_device_train_batch_size=B,
            num_generations=G,
            max_completion_length=MAX_COMPLETION_LENGTH,
            beta=0.0,  # beta > 0 would load a reference model by name; the tests set trainer.beta per case
            logging_strategy="no",
            save_strategy="no",
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=lambda completions, **kw: [0.0] * len(completions),
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
        )
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop; one micro-batch per update
    trainer.model.train()
    return trainer


def policy_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Fixed inputs for ``_compute_loss``: ids, ragged completion mask, advantages, old/ref log-probs."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([6, 3, 1, 5, 6, 2, 4, 6])
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()  # (B, T), trl's completion_mask is int
    logps = -torch.nn.functional.softplus(torch.randn(B, T, generator=g)) - 0.5  # (B, T) < 0
    rewards = torch.randint(0, 3, (B,), generator=g).float()
    return {
        "prompt_ids": torch.randint(3, 40, (B, P), generator=g),
        "prompt_mask": torch.ones(B, P, dtype=torch.long),
        "completion_ids": torch.randint(3, 40, (B, T), generator=g),
        "completion_mask": mask,
        "advantages": group_advantages(rewards, G),
        "old_per_token_logps": logps
        + 0.3 * torch.randn(B, T, generator=g),  # ratios far enough from 1 to clip
        "ref_per_token_logps": logps + 0.5 * torch.randn(B, T, generator=g),
        "num_items_in_batch": mask.sum().float(),
        "logps": logps,
    }


def trl_loss_and_grad(trainer, monkeypatch, inputs, logps):
    """trl's loss for ``inputs`` with the policy's per-token log-probs fixed to ``logps``; and d loss / d logps."""
    leaf = logps.clone().requires_grad_(True)
    monkeypatch.setattr(
        trainer,
        "_get_per_token_logps_and_entropies",
        lambda *a, **k: (leaf, torch.zeros_like(leaf), None),
    )
    loss = trainer._compute_loss(trainer.model, inputs)
    (grad,) = torch.autograd.grad(loss, leaf)
    return loss.detach(), grad


def shared_loss_and_grad(logps, **kwargs):
    leaf = logps.clone().requires_grad_(True)
    loss = grpo_loss(leaf, **kwargs)
    (grad,) = torch.autograd.grad(loss, leaf)
    return loss.detach(), grad


def shared_options(inputs, *, loss_type, level, beta, kl_correction):
    """The ``grpo_loss`` arguments, besides the log-probs, that match ``configure(...)`` and ``inputs``."""
    return {
        "advantages": inputs["advantages"],
        "mask": inputs["completion_mask"],
        "beta": beta,
        "epsilon_low": 0.2,
        "epsilon_high": 0.28,
        "loss_type": loss_type,
        "importance_sampling_level": level,
        "kl_importance_correction": kl_correction,
        "max_completion_length": MAX_COMPLETION_LENGTH,
        "num_items_in_batch": inputs["num_items_in_batch"],
    }


def configure(trainer, monkeypatch, *, loss_type, level, beta, kl_correction, eps_low=0.2, eps_high=0.28):
    monkeypatch.setattr(trainer, "loss_type", loss_type)
    monkeypatch.setattr(trainer, "importance_sampling_level", level)
    monkeypatch.setattr(trainer, "beta", beta)
    monkeypatch.setattr(trainer, "epsilon_low", eps_low)
    monkeypatch.setattr(trainer, "epsilon_high", eps_high)
    monkeypatch.setattr(trainer.args, "use_bias_correction_kl", kl_correction)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize(("beta", "kl_correction"), [(0.0, False), (0.04, False), (0.04, True)])
@pytest.mark.parametrize("off_policy", [True, False])
def test_loss_matches_trl(policy_trainer, monkeypatch, loss_type, level, beta, kl_correction, off_policy):
    trainer = policy_trainer
    configure(trainer, monkeypatch, loss_type=loss_type, level=level, beta=beta, kl_correction=kl_correction)
    inputs = policy_batch()
    logps = inputs.pop("logps")
    if not off_policy:
        del inputs["old_per_token_logps"]  # trl then uses per_token_logps.detach(): every ratio is 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_loss, ref_grad = trl_loss_and_grad(trainer, monkeypatch, inputs, logps)
    loss, grad = shared_loss_and_grad(
        logps,
        old_logps=inputs.get("old_per_token_logps"),
        ref_logps=inputs["ref_per_token_logps"],
        **shared_options(inputs, loss_type=loss_type, level=level, beta=beta, kl_correction=kl_correction),
    )
    assert_close(loss, ref_loss, atol=1e-6, rtol=1e-5, name=f"{loss_type}/{level} loss")
    assert_close(grad, ref_grad, atol=1e-7, rtol=1e-5, name=f"{loss_type}/{level} grad")
    if off_policy:  # the test batch really exercises clipping
        ratio = torch.exp(
            log_importance_weights(logps, inputs["old_per_token_logps"], inputs["completion_mask"])
        )
        assert ((ratio < 0.8) | (ratio > 1.28)).any()


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_nan_and_inf_at_padding_do_not_leak(policy_trainer, monkeypatch, loss_type, level):
    """-inf / NaN / +inf log-probs on padding give trl's loss and gradient on clean padding; trl's own is NaN."""
    trainer = policy_trainer
    configure(trainer, monkeypatch, loss_type=loss_type, level=level, beta=0.04, kl_correction=True)
    inputs = policy_batch(seed=2)
    logps = inputs.pop("logps")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_loss, ref_grad = trl_loss_and_grad(trainer, monkeypatch, inputs, logps)
    pad = inputs["completion_mask"] == 0
    assert pad.any()
    poisoned = {
        "logps": logps.masked_fill(pad, float("-inf")),
        "old_logps": inputs["old_per_token_logps"].masked_fill(pad, float("nan")),
        "ref_logps": inputs["ref_per_token_logps"].masked_fill(pad, float("inf")),
    }
    options = shared_options(inputs, loss_type=loss_type, level=level, beta=0.04, kl_correction=True)
    loss, grad = shared_loss_and_grad(poisoned.pop("logps"), **poisoned, **options)
    assert_close(loss, ref_loss, atol=1e-6, rtol=1e-5, name=f"{loss_type}/{level} loss, poisoned padding")
    assert_close(grad, ref_grad, atol=1e-7, rtol=1e-5, name=f"{loss_type}/{level} grad, poisoned padding")
    assert (grad[pad] == 0).all()
    if loss_type == "grpo" and level == "token":  # trl multiplies by the mask: NaN * 0 = NaN
        inputs["old_per_token_logps"] = poisoned["old_logps"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trl_poisoned, _ = trl_loss_and_grad(trainer, monkeypatch, inputs, logps)
        assert trl_poisoned.isnan()


@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_float64_matches_trl_to_float64_precision(policy_trainer, monkeypatch, loss_type, level):
    """Reading R7 trains in float64: there the loss and gradient agree with trl's to 1e-12, not 1e-6."""
    trainer = policy_trainer
    configure(trainer, monkeypatch, loss_type=loss_type, level=level, beta=0.04, kl_correction=True)
    inputs = {k: v.double() if v.is_floating_point() else v for k, v in policy_batch(seed=3).items()}
    logps = inputs.pop("logps")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_loss, ref_grad = trl_loss_and_grad(trainer, monkeypatch, inputs, logps)
    options = shared_options(inputs, loss_type=loss_type, level=level, beta=0.04, kl_correction=True)
    loss, grad = shared_loss_and_grad(
        logps, old_logps=inputs["old_per_token_logps"], ref_logps=inputs["ref_per_token_logps"], **options
    )
    assert loss.dtype == ref_loss.dtype == torch.float64
    assert_close(loss, ref_loss, atol=1e-12, rtol=1e-12, name=f"{loss_type}/{level} float64 loss")
    assert_close(grad, ref_grad, atol=1e-12, rtol=1e-12, name=f"{loss_type}/{level} float64 grad")


def test_dapo_global_normaliser_matches_trl(policy_trainer, monkeypatch):
    """DAPO divides by the token count of the whole (generation) batch, not of this micro-batch."""
    trainer = policy_trainer
    configure(trainer, monkeypatch, loss_type="dapo", level="token", beta=0.0, kl_correction=False)
    inputs = policy_batch(seed=1)
    logps = inputs.pop("logps")
    inputs["num_items_in_batch"] = (
        inputs["num_items_in_batch"] + 17.0
    )  # other micro-batches hold 17 more tokens
    ref_loss, _ = trl_loss_and_grad(trainer, monkeypatch, inputs, logps)
    common = {"old_logps": inputs["old_per_token_logps"], "epsilon_low": 0.2, "epsilon_high": 0.28}
    loss = grpo_loss(
        logps, inputs["advantages"], inputs["completion_mask"], loss_type="dapo",
        num_items_in_batch=inputs["num_items_in_batch"], **common,
    )  # fmt: skip
    assert_close(loss, ref_loss, atol=1e-6, name="dapo global")
    bnpo = grpo_loss(logps, inputs["advantages"], inputs["completion_mask"], loss_type="bnpo", **common)
    assert_close(loss * inputs["num_items_in_batch"], bnpo * inputs["completion_mask"].sum(), atol=1e-5)


def test_loss_with_real_forward(policy_trainer, monkeypatch):
    """No monkeypatch: trl's fused LM head vs log-probs gathered from the model's plain logits."""
    trainer = policy_trainer
    configure(trainer, monkeypatch, loss_type="grpo", level="token", beta=0.04, kl_correction=True)
    inputs = policy_batch(seed=2)
    inputs.pop("logps")
    ref_loss = trainer._compute_loss(trainer.model, inputs).detach()
    input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)  # (B, P + T)
    attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    with torch.no_grad():
        logits = trainer.model(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, P + T, V)
    logps = logits[:, P - 1 : -1].log_softmax(-1).gather(-1, inputs["completion_ids"][..., None]).squeeze(-1)
    loss = grpo_loss(
        logps, inputs["advantages"], inputs["completion_mask"],
        old_logps=inputs["old_per_token_logps"], ref_logps=inputs["ref_per_token_logps"], beta=0.04,
        epsilon_low=0.2, epsilon_high=0.28, kl_importance_correction=True,
    )  # fmt: skip
    assert_close(loss, ref_loss, atol=1e-5, rtol=1e-4, name="grpo loss, real forward")


@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none"])
def test_group_advantages_match_trl(policy_trainer, monkeypatch, scale_rewards):
    """trl's own reward -> advantage code path (it generates completions with the tiny model first)."""
    trainer = policy_trainer
    recorded: list[list[float]] = []
    g = torch.Generator().manual_seed(3)

    def reward(completions, **kwargs):
        r = torch.randint(0, 4, (len(completions),), generator=g).float().tolist()
        recorded.append(r)
        return r

    monkeypatch.setattr(trainer, "reward_funcs", [reward])
    monkeypatch.setattr(trainer, "scale_rewards", scale_rewards)
    monkeypatch.setattr(trainer, "beta", 0.0)
    prompts = [{"prompt": "1+2="}] * G + [{"prompt": "3+4="}] * G
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = trainer._generate_and_score_completions(prompts)
    rewards = torch.tensor(recorded[-1])
    ours = group_advantages(rewards, G, scale_rewards=scale_rewards)
    assert_close(ours, out["advantages"], atol=1e-6, name=f"advantages ({scale_rewards})")


def test_group_advantages_formula():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 5.0, 5.0, 5.0, 5.0])
    adv = group_advantages(rewards, 4, eps=0.0 + 1e-12)
    std = torch.tensor([1.0, 0.0, 0.0, 1.0]).std()  # unbiased, as trl's nanstd
    assert_close(adv[:4], (torch.tensor([1.0, 0.0, 0.0, 1.0]) - 0.5) / std, atol=1e-6)
    assert_close(adv[4:], torch.zeros(4), atol=0.0)  # a group with equal rewards carries no signal
    none = group_advantages(rewards, 4, scale_rewards="none")
    assert_close(none, torch.tensor([0.5, -0.5, -0.5, 0.5, 0.0, 0.0, 0.0, 0.0]), atol=0.0)
    for scale in ("group", "batch", "none"):  # advantages sum to zero within every group
        adv = group_advantages(torch.randn(12), 3, scale_rewards=scale)
        assert_close(adv.view(4, 3).sum(1), torch.zeros(4), atol=1e-5)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-30.0, 0.0), min_size=6, max_size=6),
    st.lists(st.floats(-30.0, 0.0), min_size=6, max_size=6),
)
def test_k3_kl_non_negative(logp, ref):
    logp_t, ref_t = torch.tensor([logp], dtype=torch.float64), torch.tensor([ref], dtype=torch.float64)
    kl = k3_kl(logp_t, ref_t)
    assert (kl >= 0).all()
    assert (kl[logp_t == ref_t] == 0).all()  # zero exactly where the two policies agree


def test_k3_kl_is_unbiased():
    """Averaged over tokens sampled from pi_theta, k3 equals the exact KL(pi_theta || pi_ref)."""
    pi = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    ref = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    exact = (pi * (pi / ref).log()).sum()
    expectation = (pi * k3_kl(pi.log()[None], ref.log()[None])[0]).sum()  # E_{o ~ pi}[k3(o)], exactly
    assert_close(expectation, exact, atol=1e-12)


def test_sequence_ratio_is_geometric_mean():
    logps, old = torch.log(torch.tensor([[0.2, 0.5, 0.9]])), torch.log(torch.tensor([[0.1, 0.5, 0.3]]))
    mask = torch.tensor([[1, 1, 0]])
    s = log_importance_weights(logps, old, mask, level="sequence").exp()
    assert_close(s, torch.tensor([[(2.0 * 1.0) ** 0.5]]), atol=1e-6)


def test_clipped_surrogate_clip_higher():
    log_w = torch.log(torch.tensor([[1.25, 1.25, 0.7, 0.7]]))
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    loss = clipped_surrogate(log_w, adv, epsilon_low=0.2, epsilon_high=0.28)
    # A > 0: min(1.25, clip 1.25) = 1.25 (not clipped at 1.2, thanks to clip-higher); A < 0: -min(-1.25,-1.25);
    # r = 0.7 < 0.8: A > 0 keeps 0.7 (pessimistic), A < 0 takes -0.8.
    assert_close(loss, torch.tensor([[-1.25, 1.25, -0.7, 0.8]]), atol=1e-6)


def test_grpo_on_policy_gradient_is_policy_gradient():
    """On-policy (ratio 1, no clipping active) the GRPO gradient is -A_i / (|o_i| * batch) per token."""
    logps = torch.full((2, 3), -1.0, requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    adv = torch.tensor([1.0, -2.0])
    grpo_loss(logps, adv, mask).backward()
    expected = torch.tensor([[-1 / 3, -1 / 3, -1 / 3], [2.0, 0.0, 0.0]]) / 2  # -A_i / |o_i| / batch
    assert_close(logps.grad, expected, atol=1e-6)


def test_bad_inputs():
    logps, mask, adv = torch.zeros(4, 3), torch.ones(4, 3), torch.zeros(4)
    with pytest.raises(ValueError, match="num_generations"):
        group_advantages(torch.zeros(4), 1)
    with pytest.raises(ValueError, match="multiple"):
        group_advantages(torch.zeros(5), 2)
    with pytest.raises(ValueError, match="scale_rewards"):
        group_advantages(torch.zeros(4), 2, scale_rewards="global")
    with pytest.raises(ValueError, match="floating"):
        group_advantages(torch.zeros(4, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="finite"):
        group_advantages(torch.tensor([0.0, float("nan")]), 2)
    with pytest.raises(ValueError, match="shape"):
        k3_kl(logps, torch.zeros(4, 2))
    with pytest.raises(ValueError, match="dimensions"):
        k3_kl(torch.zeros(4), torch.zeros(4))
    with pytest.raises(ValueError, match="0 and 1"):
        log_importance_weights(logps, logps, 2 * mask)
    with pytest.raises(ValueError, match="level"):
        log_importance_weights(logps, logps, mask, level="batch")
    with pytest.raises(ValueError, match="advantages"):
        clipped_surrogate(logps, torch.zeros(3))
    with pytest.raises(ValueError, match="epsilon_low"):
        clipped_surrogate(logps, adv, epsilon_low=1.0)
    with pytest.raises(ValueError, match="epsilon_high"):
        clipped_surrogate(logps, adv, epsilon_high=-0.1)
    with pytest.raises(ValueError, match="loss_type"):
        aggregate_loss(logps, mask, loss_type="ppo")
    with pytest.raises(ValueError, match="max_completion_length"):
        aggregate_loss(logps, mask, loss_type="dr_grpo")
    with pytest.raises(ValueError, match="max_completion_length"):
        aggregate_loss(logps, mask, loss_type="dr_grpo", max_completion_length=2)
    with pytest.raises(ValueError, match="num_items_in_batch"):
        aggregate_loss(logps, mask, loss_type="dapo", num_items_in_batch=5)
    with pytest.raises(ValueError, match="ref_logps"):
        grpo_loss(logps, adv, mask, beta=0.1)
    with pytest.raises(ValueError, match="beta"):
        grpo_loss(logps, adv, mask, beta=-0.1)
    with pytest.raises(ValueError, match="mask"):
        grpo_loss(logps, adv, torch.ones(4, 2))
