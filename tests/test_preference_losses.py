"""Tests of ``shared.preference_losses`` against ``trl`` 1.16.0's ``DPOTrainer`` (offline, CPU, tiny models).

One ``DPOTrainer`` is built per module from two 1-layer Llamas (policy and reference, 32-token vocabulary) and a
character-level tokenizer made in place. The tests hand ``DPOTrainer._compute_loss`` a padded batch of
chosen/rejected responses and compare its loss with ``shared`` applied to per-sequence log-probs computed here
independently (a plain forward, ``log_softmax`` and a gather over the completion tokens).
"""

from __future__ import annotations

import math
import os
import warnings

import pytest
import torch
import torch.nn.functional as F

from shared.preference_losses import (
    MPO_WEIGHTS,
    RunningRewardMean,
    bco_batch_reward_mean,
    bco_pair_loss,
    dpo_sigmoid_loss,
    mpo_loss,
    sft_loss,
)
from shared.utils import assert_close

os.environ.setdefault("HF_HUB_OFFLINE", "1")

B, L, V = 3, 9, 32  # pairs, padded length (prompt + completion), vocabulary


@pytest.fixture(scope="module")
def dpo_trainer(tmp_path_factory):
    """A DPOTrainer (policy + explicit reference model) on tiny random Llamas, built once."""
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from trl import DPOConfig, DPOTrainer

    tmp = tmp_path_factory.mktemp("pref_dpo")
    chars = ["<pad>", "<eos>", "<unk>", *"0123456789+= abcdefg"]
    tok = Tokenizer(models.WordLevel(vocab={c: i for i, c in enumerate(chars)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    config = LlamaConfig(
        vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=32, pad_token_id=0, eos_token_id=1, bos_token_id=None,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    torch.manual_seed(1)
    ref_model = LlamaForCausalLM(config)
    dataset = Dataset.from_dict({"prompt": ["1+2="], "chosen": ["3"], "rejected": ["4"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = DPOConfig(
            output_dir=str(tmp / "out"), report_to="none", use_cpu=True, per_device_train_batch_size=B,
            loss_type=["sigmoid", "bco_pair", "sft"], loss_weights=[0.8, 0.2, 1.0], beta=0.1,
            logging_strategy="no", save_strategy="no",
        )  # fmt: skip
        trainer = DPOTrainer(
            model=model, ref_model=ref_model, args=args, train_dataset=dataset, processing_class=tokenizer
        )
    trainer.model.train()
    return trainer


def pair_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """``[chosen; rejected]`` rows: a prompt, a ragged completion, right padding (trl's layout)."""
    g = torch.Generator().manual_seed(seed)
    prompt_len = torch.tensor([2, 3, 2, 2, 3, 2])  # chosen rows then rejected rows (same prompts)
    comp_len = torch.tensor([4, 2, 6, 1, 5, 3])  # ragged completions
    pos = torch.arange(L)[None, :]
    attn = (pos < (prompt_len + comp_len)[:, None]).long()  # (2B, L)
    comp = ((pos >= prompt_len[:, None]) & (attn == 1)).long()  # (2B, L): 1 on completion tokens
    ids = torch.randint(3, V, (2 * B, L), generator=g) * attn  # padding id 0
    return {"input_ids": ids, "attention_mask": attn, "completion_mask": comp}


def sequence_logps(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs (2B,) and completion lengths (2B,), from logits (not trl's fused head)."""
    with torch.no_grad():
        logits = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits  # (2B, L, V)
    logp = F.log_softmax(logits[:, :-1].double(), dim=-1)  # (2B, L-1, V): position t predicts token t+1
    tok = logp.gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)  # (2B, L-1)
    m = batch["completion_mask"][:, 1:].double()  # (2B, L-1)
    return (tok * m).sum(-1), m.sum(-1)


def trl_loss(trainer, batch, loss_type, loss_weights):
    trainer.loss_types, trainer.loss_weights = list(loss_type), list(loss_weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers' own deprecation notice, not ours
        return trainer._compute_loss(trainer.model, dict(batch), return_outputs=False)


@pytest.mark.parametrize("seed", [0, 1])
def test_mpo_matches_trl_dpo_trainer(dpo_trainer, seed):
    batch = pair_batch(seed)
    pol, lengths = sequence_logps(dpo_trainer.model, batch)
    ref, _ = sequence_logps(dpo_trainer.ref_model, batch)
    pc, pr = pol.chunk(2)
    rc, rr = ref.chunk(2)
    n_c = lengths.chunk(2)[0]
    cases = {
        "sigmoid": (dpo_sigmoid_loss(pc, pr, rc, rr, beta=0.1).mean(), ["sigmoid"], [1.0]),
        "bco_pair": (bco_pair_loss(pc, pr, rc, rr, beta=0.1).mean(), ["bco_pair"], [1.0]),
        "sft": (sft_loss(pc, n_c), ["sft"], [1.0]),
        "mpo": (mpo_loss(pc, pr, rc, rr, n_c, beta=0.1), ["sigmoid", "bco_pair", "sft"], [0.8, 0.2, 1.0]),
    }
    for name, (ours, types, weights) in cases.items():
        theirs = trl_loss(dpo_trainer, batch, types, weights)
        assert_close(ours.float(), theirs.detach(), atol=2e-6, rtol=1e-5, name=name)


def test_beta_is_used(dpo_trainer):
    batch = pair_batch(3)
    pol, lengths = sequence_logps(dpo_trainer.model, batch)
    ref, _ = sequence_logps(dpo_trainer.ref_model, batch)
    pc, pr = pol.chunk(2)
    rc, rr = ref.chunk(2)
    dpo_trainer.beta = 2.5
    try:
        theirs = trl_loss(dpo_trainer, batch, ["sigmoid", "bco_pair"], [0.8, 0.2])
    finally:
        dpo_trainer.beta = 0.1
    ours = mpo_loss(pc, pr, rc, rr, lengths.chunk(2)[0], beta=2.5, weights=(0.8, 0.2, 0.0))
    assert_close(ours.float(), theirs.detach(), atol=2e-6, rtol=1e-5, name="beta=2.5")


def test_closed_forms():
    """Brute-force values: policy = reference gives DPO ln 2 and BCO 2 ln 2; the shift enters as r - delta."""
    z = torch.zeros(4, dtype=torch.float64)
    assert_close(dpo_sigmoid_loss(z, z, z, z), torch.full((4,), math.log(2), dtype=torch.float64))
    assert_close(bco_pair_loss(z, z, z, z), torch.full((4,), 2 * math.log(2), dtype=torch.float64))
    pc, pr, rc, rr = (torch.tensor([v], dtype=torch.float64) for v in (-1.0, -3.0, -2.0, -2.5))
    rc_, rr_ = 0.5 * (pc - rc), 0.5 * (pr - rr)  # beta = 0.5
    want = -math.log(1 / (1 + math.exp(-(rc_.item() - 0.2)))) - math.log(1 / (1 + math.exp(rr_.item() - 0.2)))
    assert abs(bco_pair_loss(pc, pr, rc, rr, beta=0.5, delta=0.2).item() - want) < 1e-12
    assert abs(bco_batch_reward_mean(pc, pr, rc, rr, beta=0.5) - (rc_ + rr_).item() / 2) < 1e-12
    run = RunningRewardMean()
    # the shift is the average of the batch means so far
    assert [run.update(m) for m in (1.0, 3.0, -1.0)] == [1.0, 2.0, 1.0]
    lp, n = torch.tensor([-6.0, -2.0]), torch.tensor([3, 1])
    assert abs(sft_loss(lp, n).item() - 2.0) < 1e-7  # per token: 8 / 4
    assert abs(sft_loss(lp, n, normalize="sequence").item() - 2.0) < 1e-7  # (2 + 2) / 2
    assert abs(sft_loss(torch.tensor([-6.0, -1.0]), n).item() - 7 / 4) < 1e-7
    assert abs(sft_loss(torch.tensor([-6.0, -1.0]), n, normalize="sequence").item() - 1.5) < 1e-7


def test_bad_inputs():
    x = torch.zeros(3)
    with pytest.raises(TypeError, match="policy_chosen_logps"):
        dpo_sigmoid_loss([0.0], x, x, x)
    with pytest.raises(ValueError, match="ref_rejected_logps"):
        dpo_sigmoid_loss(x, x, x, torch.zeros(4))
    with pytest.raises(ValueError, match="dimensions"):
        dpo_sigmoid_loss(torch.zeros(3, 1), x, x, x)
    with pytest.raises(TypeError, match="floating"):
        bco_pair_loss(x, torch.zeros(3, dtype=torch.long), x, x)
    with pytest.raises(TypeError, match="dtype"):
        bco_pair_loss(x, x.double(), x, x)
    with pytest.raises(ValueError, match="finite"):
        dpo_sigmoid_loss(x, x, torch.tensor([0.0, float("nan"), 0.0]), x)
    with pytest.raises(ValueError, match="beta"):
        dpo_sigmoid_loss(x, x, x, x, beta=0.0)
    with pytest.raises(TypeError, match="beta"):
        dpo_sigmoid_loss(x, x, x, x, beta="0.1")
    with pytest.raises(ValueError, match="delta"):
        bco_pair_loss(x, x, x, x, delta=torch.zeros(2))
    with pytest.raises(ValueError, match="delta"):
        bco_pair_loss(x, x, x, x, delta=float("inf"))
    with pytest.raises(ValueError, match="chosen_lengths"):
        sft_loss(x, torch.tensor([1, -1, 2]))
    with pytest.raises(ValueError, match="chosen_lengths"):
        sft_loss(x, torch.zeros(3))
    with pytest.raises(ValueError, match="chosen_lengths"):
        sft_loss(x, torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="chosen_lengths"):
        sft_loss(x, torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="normalize"):
        sft_loss(x, torch.ones(3), normalize="batch")
    with pytest.raises(ValueError, match="sequence"):
        sft_loss(x, torch.tensor([1, 0, 2]), normalize="sequence")
    with pytest.raises(TypeError, match="weights"):
        mpo_loss(x, x, x, x, torch.ones(3), weights=(0.8, 0.2))
    with pytest.raises(ValueError, match="w_q"):
        mpo_loss(x, x, x, x, torch.ones(3), weights=(0.8, -0.2, 1.0))
    with pytest.raises(ValueError, match="batch_mean"):
        RunningRewardMean().update(float("nan"))


def test_mpo_weights_are_internvls():
    # OpenGVLab/InternVL@2410d1d, internvl_chat_gpt_oss/internvl/train/internvl_chat_mpo.py lines 906-907:
    # loss_type = ['sigmoid', 'bco_pair', 'sft'], loss_weights = [0.8, 0.2, 1.0] (the trl checks above pass these
    # literals to trl, so a wrong default in shared fails there too)
    assert MPO_WEIGHTS == (0.8, 0.2, 1.0)
