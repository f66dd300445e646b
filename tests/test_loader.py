"""The clean loader's invariants, on the tiny model."""
import warnings

import torch

from stages.lib.hardware import resolve_precision, use_gradient_checkpointing
from stages.lib.loader import choose_attn_implementation, encode, load_model, load_tokenizer

PROMPT = "Instruction: Name a colour.\nResponse:"


def test_no_chat_template_and_no_special_tokens_in_completion_prompts(tiny_base):
    tokenizer = load_tokenizer(tiny_base)
    assert tokenizer.chat_template is None
    plain = tokenizer.backend_tokenizer.encode(PROMPT, add_special_tokens=False).ids
    # the tiny tokenizer's post-processor adds BOS by default; neither path may add it
    assert encode(tokenizer, [PROMPT])[0] == plain
    assert tokenizer(PROMPT)["input_ids"] == plain
    assert not set(plain) & set(tokenizer.all_special_ids)


def test_pad_token_set_and_left_padding(tiny_base):
    tokenizer = load_tokenizer(tiny_base)
    assert tokenizer.pad_token is not None and tokenizer.padding_side == "left"
    batch = tokenizer([PROMPT, "Hi"], padding=True, return_tensors="pt")
    assert batch["attention_mask"][1, 0] == 0 and batch["attention_mask"][1, -1] == 1


def _logits(model, tokenizer):
    ids = torch.tensor(encode(tokenizer, [PROMPT]))
    with torch.no_grad():
        return model(input_ids=ids).logits


def _make_adapter(base_dir, out_dir):
    from peft import LoraConfig, get_peft_model

    model = load_model(base_dir, resolve_precision("float32"))
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    peft_model.save_pretrained(out_dir)


def test_adapter_leaves_a_separately_loaded_base_unchanged(tiny_base, tmp_path):
    tokenizer = load_tokenizer(tiny_base)
    precision = resolve_precision("float32")
    base = load_model(tiny_base, precision)
    before = _logits(base, tokenizer)
    _make_adapter(tiny_base, tmp_path / "adapter")
    adapted = load_model(tiny_base, precision, adapters=[tmp_path / "adapter"])
    assert not torch.allclose(_logits(adapted, tokenizer), before)  # the adapter does something
    assert torch.equal(_logits(base, tokenizer), before)  # ...and the base we hold is untouched
    reloaded = load_model(tiny_base, precision)
    assert torch.equal(_logits(reloaded, tokenizer), before)


def test_quantization_on_cpu_warns_and_falls_back_to_full_precision():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        precision = resolve_precision("auto", "8bit", cuda_available=False, cpu_bf16=False)
    assert any("8bit" in str(w.message) and "full precision" in str(w.message) for w in caught)
    assert precision.quantization == "none" and precision.requested_quantization == "8bit"
    assert precision.dtype == "float32"
    assert "full precision" in precision.to_dict()["notes"][0]


def test_eight_bit_means_eight_bit_on_cuda():
    from stages.lib.loader import quantization_config

    eight = quantization_config(resolve_precision("auto", "8bit", cuda_available=True, cuda_bf16=True))
    four = quantization_config(resolve_precision("auto", "4bit", cuda_available=True, cuda_bf16=True))
    assert eight.load_in_8bit and not eight.load_in_4bit
    assert four.load_in_4bit and not four.load_in_8bit and four.bnb_4bit_compute_dtype == torch.bfloat16


def test_bf16_only_where_it_outruns_fp32_on_the_cpu():
    from stages.lib.hardware import cpu_prefers_bf16

    # AMX: bf16 products 3.5x fp32 (Sapphire Rapids); AMD's AVX512-BF16: oneDNN's bf16 beats MKL's fp32 there
    assert cpu_prefers_bf16({"avx512_bf16", "amx_bf16"}, "GenuineIntel")
    assert cpu_prefers_bf16({"avx512_bf16"}, "AuthenticAMD")
    # Intel's AVX512-BF16 without AMX runs bf16 natively but slower than MKL's fp32; AVX2 has no bf16 at all
    assert not cpu_prefers_bf16({"avx512_bf16"}, "GenuineIntel")
    assert not cpu_prefers_bf16({"avx2"}, "AuthenticAMD")


def test_asking_for_bf16_where_fp32_is_faster_says_so():
    slower = resolve_precision("bfloat16", cuda_available=False, cpu_bf16=False, cpu_native_bf16=True)
    absent = resolve_precision("bfloat16", cuda_available=False, cpu_bf16=False, cpu_native_bf16=False)
    assert resolve_precision(cuda_available=False, cpu_bf16=False, cpu_native_bf16=True).dtype == "float32"
    assert slower.dtype == absent.dtype == "bfloat16"
    assert "slower than float32" in slower.notes[0] and "very slow" in absent.notes[0]


def test_dtype_follows_the_hardware():
    assert resolve_precision(cuda_available=False, cpu_bf16=False).dtype == "float32"
    assert resolve_precision(cuda_available=False, cpu_bf16=True).dtype == "bfloat16"
    assert resolve_precision(cuda_available=True, cuda_bf16=True).dtype == "bfloat16"
    assert resolve_precision(cuda_available=True, cuda_bf16=False).dtype == "float16"
    assert resolve_precision("float32", cuda_available=True, cuda_bf16=True).dtype == "float32"


def test_gradient_checkpointing_and_attention_follow_the_hardware():
    cpu = resolve_precision(cuda_available=False, cpu_bf16=False)
    qlora = resolve_precision("auto", "4bit", cuda_available=True, cuda_bf16=True)
    assert not use_gradient_checkpointing("auto", cpu)
    assert use_gradient_checkpointing("auto", qlora)
    assert use_gradient_checkpointing("on", cpu)
    assert choose_attn_implementation("auto", cpu, flash_attn_installed=True) == "sdpa"
    assert choose_attn_implementation("auto", qlora, flash_attn_installed=True) == "flash_attention_2"
    assert choose_attn_implementation("auto", qlora, flash_attn_installed=False) == "sdpa"
    assert choose_attn_implementation("eager", qlora) == "eager"


def test_missing_base_names_the_stage_to_run(tmp_path):
    import pytest

    from stages.lib.errors import UserError

    with pytest.raises(UserError, match="dvc repro prepare_base"):
        load_tokenizer(tmp_path / "nowhere")
