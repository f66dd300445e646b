"""Where a DPO step's memory goes: one step on the longest batch of pairs, taken apart.

    python -m benchmarks.dpo_memory [--pairs 8] [--dtype float32] [--head trl|ours] [--reference step|precomputed]

Needs what benchmarks.dpo needs. Loads the model as train_dpo does, builds the trainer on the --pairs longest
preference pairs (one batch), then runs one training step by hand and reads the process's resident memory
(VmRSS) and its peak since the last reset (VmHWM, reset through /proc/self/clear_refs) around each part:

- the runtime and the model, before the trainer;
- the activations the policy's forward keeps for the backward pass (tallied by saved-tensor hooks);
- the forward's and the backward's own peaks above what was resident before them;
- what stays resident after the step (memory the allocator keeps, not live tensors).

and the output layer alone (TRL's tiled head or stages.lib.logprobs') on the same number of tokens, forward
and backward, outside the model.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from benchmarks.dpo import PAIRS, reset_peak_rss, restore_peft_input_cast
from benchmarks.host import benchmark_precision, describe, host_kind


def rss_mb() -> tuple[float, float]:
    """(current, peak since reset) resident memory of this process, MB."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def head_alone(head: str, n_tokens: int, weight: torch.Tensor, hidden_size: int) -> dict:
    """Peak memory of the output layer by itself: forward and backward on ``n_tokens`` labelled tokens."""
    from trl.kernels import ChunkedLogProbFunction
    from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE

    from stages.lib.logprobs import label_log_probs

    hidden = torch.randn(n_tokens, hidden_size, dtype=weight.dtype, requires_grad=True)
    targets = torch.randint(0, weight.shape[0], (n_tokens,))
    outputs = ("log_probs", "entropy", "mean_logits", "is_top1")
    before, _ = rss_mb()
    reset_peak_rss()
    if head == "trl":
        out = ChunkedLogProbFunction.apply(hidden, weight, None, targets, 1.0, _CHUNKED_LOGPROB_CHUNK_SIZE,
                                           None, 1.0, outputs)
    else:
        out = label_log_probs(hidden, weight, targets, outputs)
    _, forward_peak = rss_mb()
    reset_peak_rss()
    out[0].sum().backward()
    _, backward_peak = rss_mb()
    return {"tokens": n_tokens, "forward_peak_above_mb": round(forward_peak - before, 1),
            "backward_peak_above_mb": round(backward_peak - before, 1)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=8, help="the longest N pairs form the batch (train_dpo: 8)")
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--head", choices=("trl", "ours"), default="trl")
    parser.add_argument("--reference", choices=("step", "precomputed"), default="step")
    parser.add_argument("--lora-input-cast", choices=("on", "off"), default="on",
                        help="off: PEFT does not cast each adapted layer's input to the adapter's fp32 (autocast does)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from dataclasses import replace

    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from stages.lib.dpo_setup import dpo_setup
    from stages.lib.trainers import LeanDPOTrainer
    from stages.lib.loader import apply_adapters, load_base_model, load_tokenizer
    from stages.lib.params import load_params
    from stages.lib.paths import BASE_MODEL
    from stages.lib.records import PreferencePair, read_jsonl
    from stages.lib.training import ScratchDir

    params = load_params()
    precision = benchmark_precision(params.model)
    if args.dtype:
        precision = replace(precision, dtype=args.dtype)
    tokenizer = load_tokenizer(BASE_MODEL)
    pairs = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in read_jsonl(PAIRS, PreferencePair)]
    length = lambda p: len(tokenizer(p["prompt"] + max(p["chosen"], p["rejected"], key=len))["input_ids"])  # noqa: E731
    pairs = sorted(pairs, key=length, reverse=True)[: args.pairs]
    figures: dict = {"host": host_kind(), "head": args.head, "reference": args.reference, "pairs": len(pairs)}
    with ScratchDir() as scratch:
        setup = dpo_setup(params.train_dpo, precision, scratch)
        model = apply_adapters(load_base_model(BASE_MODEL, precision), setup.start_adapters, merge_all=True)
        figures["after_model_load_mb"], figures["model_load_peak_mb"] = (round(x, 1) for x in rss_mb())
        kwargs = setup.config_kwargs | {"precompute_ref_log_probs": args.reference == "precomputed",
                                        "per_device_train_batch_size": len(pairs), "disable_tqdm": True,
                                        "train_sampling_strategy": "random"}  # one batch: order is moot
        trainer_class = LeanDPOTrainer if args.head == "ours" else DPOTrainer
        trainer = trainer_class(model=model, ref_model=None, args=DPOConfig(**kwargs),
                                train_dataset=Dataset.from_list(pairs), processing_class=tokenizer,
                                peft_config=setup.lora)
        batch = next(iter(trainer.get_train_dataloader()))
        figures["batch_rows_x_positions"] = list(batch["input_ids"].shape)
        figures["labelled_tokens"] = int(batch["completion_mask"][:, 1:].sum())
        trainer.model.train()
        # LeanDPOTrainer turns PEFT's cast off under autocast; TRL's keeps it
        restore_peft_input_cast(trainer.model, enabled=args.lora_input_cast == "on")
        figures["lora_input_cast"] = args.lora_input_cast
        weights = {p.untyped_storage().data_ptr() for p in trainer.model.parameters()}
        saved: dict[int, int] = {}  # storage -> bytes: each activation once, the weights not at all
        saved_by_dtype: dict[str, dict[int, int]] = {}

        def pack(t):
            storage = t.untyped_storage()
            if storage.data_ptr() not in weights:
                saved[storage.data_ptr()] = storage.nbytes()
                saved_by_dtype.setdefault(str(t.dtype), {})[storage.data_ptr()] = storage.nbytes()
            return t

        before, _ = rss_mb()
        figures["before_step_mb"] = round(before, 1)
        reset_peak_rss()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), trainer.accelerator.autocast():
            loss = trainer.compute_loss(trainer.model, batch)
        after_forward, forward_peak = rss_mb()
        reset_peak_rss()
        loss.backward()
        after_backward, backward_peak = rss_mb()
        figures["loss"] = float(loss)
        figures["lora_grad_norm"] = float(torch.linalg.vector_norm(torch.stack(
            [p.grad.float().norm() for p in trainer.model.parameters() if p.grad is not None])))
        trainer.model.zero_grad(set_to_none=True)
        del loss
        figures |= {
            "saved_for_backward_mb": round(sum(saved.values()) / 2**20, 1),
            "saved_for_backward_by_dtype_mb": {k: round(sum(v.values()) / 2**20, 1) for k, v in saved_by_dtype.items()},
            "forward_peak_above_mb": round(forward_peak - before, 1),
            "after_forward_above_mb": round(after_forward - before, 1),
            "backward_peak_above_mb": round(backward_peak - before, 1),
            "after_step_above_mb": round(rss_mb()[0] - before, 1),
        }
        head = model.get_output_embeddings().weight.detach()
        figures["head_alone"] = head_alone(args.head, figures["labelled_tokens"] if args.head == "ours"
                                           else batch["input_ids"].numel() - batch["input_ids"].shape[0],
                                           head, head.shape[1])
    print(f"host: {describe(figures['host'])}", file=sys.stderr)
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
