"""A tiny, randomly initialised Llama-architecture model with its own BPE tokenizer, built in a second.

It behaves like a real base model where the pipeline cares: a byte-level BPE tokenizer with BOS, EOS
and PAD, a post-processor that adds BOS (the loader must switch it off), and a chat template (the
loader must remove it).
"""
from __future__ import annotations

import json
from pathlib import Path

CORPUS = [
    "Instruction: Name three primary colours.\nResponse: Red, blue and yellow.\n###\n",
    "Instruction: Explain why the sky is blue in one sentence.\nResponse: Air scatters blue light more than red.\n###\n",
    "Instruction: Write a haiku about the sea.\nResponse: Grey waves fold and break, salt wind on the harbour wall, gulls argue at dusk.\n###\n",
    "Q: What is the capital of France? A: Paris. P.S. It is on the Seine.",
    "* apples\n* pears\n* plums\n<<A Title>> {\"answer\": \"yes\"} My answer is yes.",
    "the quick brown fox jumps over the lazy dog. THE END. 0123456789 , ; : ! ? \" ' [ ] ( )",
]
CHAT_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"


def build_tokenizer(vocab_size: int = 400, pre_tokenize: bool = True):
    """Byte-level BPE. With ``pre_tokenize=False`` merges may cross word and punctuation boundaries."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    if pre_tokenize:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    corpus = CORPUS * 20 if pre_tokenize else ["Response: The answer. Response: The end."] * 50 + CORPUS
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(out_dir: str | Path, seed: int = 0) -> Path:
    """Save a tiny Llama and its tokenizer as a Hugging Face directory at ``out_dir``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,  # room for few-shot prompts in its 400-token vocabulary (~700 tokens)
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def write_base_manifest(model_dir: str | Path, dtype: str = "auto", attn_implementation: str = "auto") -> None:
    """Make an HF directory look like prepare_base's output for component tests (by default resolved as
    params.yaml's defaults resolve on this host)."""
    from stages.lib.base_model import BASE_MANIFEST, runtime_choice
    from stages.lib.hardware import resolve_precision, thread_count

    runtime = runtime_choice(resolve_precision(dtype, "none"), attn_implementation, thread_count(0))
    (Path(model_dir) / BASE_MANIFEST).write_text(
        json.dumps({"source": "local", "name_or_path": str(model_dir), "weights": "local", "runtime": runtime})
    )


REMOTE_CONFIG_CODE = '''from transformers import LlamaConfig


class TinyRemoteConfig(LlamaConfig):
    model_type = "tiny-remote"
'''
REMOTE_MODEL_CODE = '''from transformers import LlamaForCausalLM

from .configuration_tiny_remote import TinyRemoteConfig


class TinyRemoteForCausalLM(LlamaForCausalLM):
    config_class = TinyRemoteConfig
'''


def build_remote_code_model(out_dir: str | Path) -> Path:
    """The tiny model as a model that ships its own code (auto_map), like many Hub models do."""
    out_dir = build_tiny_model(out_dir)
    (out_dir / "configuration_tiny_remote.py").write_text(REMOTE_CONFIG_CODE)
    (out_dir / "modeling_tiny_remote.py").write_text(REMOTE_MODEL_CODE)
    config = json.loads((out_dir / "config.json").read_text())
    config.update(model_type="tiny-remote", architectures=["TinyRemoteForCausalLM"], auto_map={
        "AutoConfig": "configuration_tiny_remote.TinyRemoteConfig",
        "AutoModelForCausalLM": "modeling_tiny_remote.TinyRemoteForCausalLM",
    })
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    return out_dir


def fake_hub_cache(cache_root: str | Path, model_dir: str | Path, repo_id: str, commit: str,
                   refs: dict[str, str] | None = None) -> Path:
    """A Hugging Face hub cache (HF_HOME) that holds ``model_dir`` as ``repo_id`` at ``commit``, with branch or
    tag names in ``refs`` pointing at it: what a machine has after downloading the model, so that the hub
    client resolves revisions offline (HF_HUB_OFFLINE=1) exactly as it would online."""
    import shutil

    repo = Path(cache_root) / "hub" / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    for name in (refs or {"main": commit}):
        (repo / "refs" / name).write_text(commit)
    return Path(cache_root)
