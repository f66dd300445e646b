"""DPO: the two variants differ only in their starting point; the adapter's manifest names it."""
import json

import pytest
import torch
import yaml
from conftest import ROOT

from stages.lib.dpo_setup import dpo_setup
from stages.lib.hardware import resolve_precision
from stages.lib.logprobs import install_label_logprob_head, label_log_probs
from stages.lib.params import load_params
from stages.lib.paths import DPO_ADAPTER, SFT_ADAPTER, metrics_path


def test_sft_dpo_and_dpo_only_differ_only_in_the_starting_point():
    params = load_params(ROOT / "params.yaml")
    precision = resolve_precision("float32")
    from_sft = dpo_setup(params.train_dpo.model_copy(update={"init": "sft"}), precision, "/tmp/out")
    from_base = dpo_setup(params.train_dpo.model_copy(update={"init": "base"}), precision, "/tmp/out")
    assert from_sft.config_kwargs == from_base.config_kwargs
    assert from_sft.lora == from_base.lora
    assert from_sft.start_adapters == [SFT_ADAPTER] and from_base.start_adapters == []

    from trl import DPOConfig

    a, b = DPOConfig(**from_sft.config_kwargs).to_dict(), DPOConfig(**from_base.config_kwargs).to_dict()
    assert a == b


def test_dpo_dependency_follows_init():
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train_dpo"]
    assert "models/${train_dpo.init}" in stage["deps"] and SFT_ADAPTER.as_posix() not in stage["deps"]


@pytest.mark.slow
def test_adapter_manifest_names_its_init(tiny_pipeline):
    manifest = json.loads((tiny_pipeline / DPO_ADAPTER / "manifest.json").read_text())
    assert manifest["init"] == "sft" and manifest["start_adapters"] == [SFT_ADAPTER.as_posix()]
    metrics = json.loads((tiny_pipeline / metrics_path("train_dpo")).read_text())
    assert metrics["init"] == "sft" and "rewards_margins_last" in metrics and "loss_last" in metrics


# --- the log-probability head and the lean trainer ---------------------------------------------------------------

ALL_OUTPUTS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_label_log_probs_match_a_full_log_softmax(dtype, tolerance):
    """Values, statistics and gradients against the plain computation, in chunks smaller than the batch."""
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(37, 16, generator=gen).to(dtype).requires_grad_()
    weight = torch.randn(300, 16, generator=gen).to(dtype).requires_grad_()
    targets = torch.randint(0, 300, (37,), generator=gen)
    upstream = torch.randn(37, generator=gen)
    log_probs, entropy, log_sum_sq, mean_logits, is_top1 = label_log_probs(hidden, weight, targets, ALL_OUTPUTS, rows=8)
    (log_probs * upstream).sum().backward()
    ours = hidden.grad.float(), weight.grad.float()
    hidden.grad = weight.grad = None

    logits = (hidden @ weight.t()).float()
    full = logits.log_softmax(-1)
    reference = full.gather(1, targets[:, None]).squeeze(1)
    (reference * upstream).sum().backward()
    probs = full.exp()
    assert (log_probs - reference).abs().max() < tolerance
    assert (entropy - -(probs * full).sum(-1)).abs().max() < tolerance * 10
    assert (log_sum_sq - (probs * probs).sum(-1).log()).abs().max() < tolerance
    assert (mean_logits - logits.mean(-1)).abs().max() < tolerance
    assert torch.equal(is_top1, logits.argmax(-1) == targets)
    assert (ours[0] - hidden.grad.float()).abs().max() < tolerance * 3
    assert (ours[1] - weight.grad.float()).abs().max() < tolerance * 10


def test_label_head_gives_what_trls_head_gives(tiny_hf_dir):
    """The same FusedCausalLMOutput fields and gradients as TRL's head, on a real (tiny) model, with prompt and
    padding positions unlabelled; without fused_lm_head the forward is the model's own."""
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    trl_model = AutoModelForCausalLM.from_pretrained(tiny_hf_dir, dtype=torch.float32)
    ours = AutoModelForCausalLM.from_pretrained(tiny_hf_dir, dtype=torch.float32)
    outputs = ("log_probs", "entropy", "mean_logits", "is_top1")
    add_fused_lm_head(trl_model, outputs=outputs)
    install_label_logprob_head(ours, outputs)
    install_label_logprob_head(ours, outputs)  # idempotent
    gen = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, trl_model.config.vocab_size, (3, 12), generator=gen)
    labels = input_ids.clone()
    labels[:, :5] = -100  # the prompt
    labels[1, 9:] = -100  # padding
    got = {}
    for name, model in (("trl", trl_model), ("ours", ours)):
        out = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels, fused_lm_head=True)
        out.log_probs.sum().backward()
        got[name] = out, model.model.layers[0].mlp.down_proj.weight.grad.clone()
    (trl_out, trl_grad), (our_out, our_grad) = got["trl"], got["ours"]
    for field in ("log_probs", "entropy", "mean_logits"):
        assert torch.allclose(getattr(our_out, field), getattr(trl_out, field), atol=1e-5), field
    assert torch.equal(our_out.is_top1, trl_out.is_top1) and torch.equal(our_out.label_mask, trl_out.label_mask)
    assert torch.allclose(our_out.loss, trl_out.loss, atol=1e-6)
    assert torch.allclose(our_grad, trl_grad, atol=1e-5)
    plain = ours(input_ids=input_ids)
    assert plain.logits.shape == (3, 12, ours.config.vocab_size)


@pytest.mark.slow
def test_lean_trainer_precomputes_the_reference_as_trl_does_and_groups_pairs_by_length(tiny_base, tmp_path):
    """Reference log-probabilities, computed once before training with the adapter off, equal TRL's own
    precompute; batches are drawn from pairs of similar length."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from stages.lib.loader import load_base_model, load_tokenizer
    from stages.lib.trainers import LeanDPOTrainer

    precision = resolve_precision("float32")
    tokenizer = load_tokenizer(tiny_base)
    words = ["red", "blue and yellow", "the quick brown fox jumps over the lazy dog " * 3, "yes", "Paris. " * 6]
    pairs = [{"prompt": f"Instruction: say {i}.\nResponse:", "chosen": " " + words[i % 5],
              "rejected": " " + words[(i + 2) % 5] * (1 + i % 3)} for i in range(16)]
    params = load_params(ROOT / "params.yaml")
    setup = dpo_setup(params.train_dpo.model_copy(update={"init": "base", "batch_size": 4}), precision,
                      str(tmp_path))
    trainers = {}
    for name, trainer_class, sampler in (("trl", DPOTrainer, "random"), ("ours", LeanDPOTrainer, "group_by_length")):
        config = DPOConfig(**(setup.config_kwargs | {"precompute_ref_log_probs": True,
                                                     "train_sampling_strategy": sampler}))
        trainer = trainer_class(model=load_base_model(tiny_base, precision), ref_model=None, args=config,
                                train_dataset=Dataset.from_list(pairs), processing_class=tokenizer,
                                peft_config=setup.lora)
        trainers[name] = trainer
    ref = {name: torch.tensor(list(t.train_dataset["ref_chosen_logps"]) + list(t.train_dataset["ref_rejected_logps"]))
           for name, t in trainers.items()}
    assert torch.allclose(ref["ours"], ref["trl"], atol=1e-4)
    trainer = trainers["ours"]
    data = trainer.train_dataset
    lengths = [len(p) + max(len(c), len(r)) for p, c, r in
               zip(list(data["prompt_ids"]), list(data["chosen_ids"]), list(data["rejected_ids"]))]
    order = list(trainer._get_train_sampler())
    batches = [sorted(lengths[i] for i in order[k : k + 4]) for k in range(0, len(order), 4)]
    spread = sum(b[-1] - b[0] for b in batches)
    shuffled = [sorted(lengths[i] for i in range(k, k + 4)) for k in range(0, 16, 4)]
    assert sorted(order) == list(range(16)) and spread < sum(b[-1] - b[0] for b in shuffled)
    trainer.train()  # the cached reference feeds the loss
    assert trainer.state.global_step == 4


def _stacked_pairs(vocab: int, prompts: list[int], chosen: list[int], rejected: list[int], seed: int = 0):
    """TRL's own stacked DPO batch (its collator, labels as its loss makes them) for random pairs of the given
    prompt and answer lengths: [chosen rows; rejected rows], right-padded, prompt and padding unlabelled."""
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    gen = torch.Generator().manual_seed(seed)
    tokens = lambda n: torch.randint(3, vocab, (n,), generator=gen).tolist()  # noqa: E731
    examples = [{"prompt_ids": tokens(p), "chosen_ids": tokens(c), "rejected_ids": tokens(r)}
                for p, c, r in zip(prompts, chosen, rejected)]
    batch = DataCollatorForPreference(pad_token_id=0)(examples)
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    return batch["input_ids"], batch["attention_mask"], labels


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_pairs_packed_with_one_prompt_give_the_stacked_batchs_log_probs_and_gradients(tiny_hf_dir, dtype, tolerance):
    """Each pair as one row (prompt once, rejected answer masked from the chosen one) gives the log-probabilities
    and gradients of TRL's stacked batch, for answers longer and shorter than their partner (one truncated to
    nothing) and prompts of several lengths, through torch's attention (fp32) and the training's fp32 attention
    (bf16); a batch whose rows do not pair up is run as it is."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from stages.lib.shared_prompt import pack_pairs
    from stages.lib.training_attention import FP32_ATTENTION, train_attention_in_fp32

    base = AutoModelForCausalLM.from_pretrained(tiny_hf_dir, dtype=dtype, attn_implementation="sdpa")
    assert train_attention_in_fp32(base, "auto") == (dtype == torch.bfloat16)
    assert base.config._attn_implementation == (FP32_ATTENTION if dtype == torch.bfloat16 else "sdpa")
    # under PEFT, as the trainer runs it (PEFT hands on inputs_embeds=None and the like)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    input_ids, attention_mask, labels = _stacked_pairs(model.config.vocab_size, [5, 9, 3], [4, 1, 7], [6, 3, 0])
    packed = pack_pairs(input_ids, attention_mask, labels)
    assert packed.input_ids.shape == (3, 15)  # 3 x 15 positions instead of 6 x 12
    got, shapes = {}, []
    base.model.register_forward_pre_hook(lambda _, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)),
                                         with_kwargs=True)
    for share in (False, True):
        install_label_logprob_head(base, ("log_probs", "entropy"), pairs_share_prompts=share)
        model.zero_grad()
        out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True)
        (out.log_probs * torch.linspace(0.5, 2, out.log_probs.shape[1])).sum().backward()
        got[share] = out, base.model.layers[0].self_attn.q_proj.lora_A["default"].weight.grad.clone()
    assert shapes == [(6, 12), (3, 15)]  # the model ran the stacked rows, then the packed ones
    (stacked, stacked_grad), (packed_out, packed_grad) = got[False], got[True]
    assert torch.equal(stacked.label_mask, packed_out.label_mask)
    assert torch.allclose(packed_out.log_probs, stacked.log_probs, atol=tolerance)
    assert torch.allclose(packed_out.entropy, stacked.entropy, atol=tolerance * 10)
    assert torch.allclose(packed_grad.float(), stacked_grad.float(), atol=tolerance, rtol=tolerance)
    assert stacked_grad.abs().sum() > 0

    other_prompt = input_ids.clone()
    other_prompt[4, 0] = other_prompt[1, 0] + 1  # pair 1's rejected row no longer starts with its prompt
    assert pack_pairs(other_prompt, attention_mask, labels) is None
    assert pack_pairs(input_ids[:5], attention_mask[:5], labels[:5]) is None  # an odd number of rows
    assert pack_pairs(input_ids, attention_mask.flip(1), labels) is None  # left padding
