"""TRL's SFT and DPO trainers, lean on a CPU: the output layer scores only completion tokens, and DPO pairs may be
batched by length. Losses, the reference precompute and the logged metrics are TRL's own.

- The log-probability head is stages.lib.logprobs' (see there why), installed in place of TRL's on the policy
  and, when there is one, on the reference model. TRL installs its head inside ``__init__`` and, with
  ``precompute_ref_log_probs``, runs the reference pass there too, so ours goes in before that pass (in
  ``compute_ref_log_probs``) as well as after ``__init__``. For DPO it runs each pair as one row, the prompt
  once for both answers (stages.lib.shared_prompt): the same log-probabilities with fewer tokens through the model.
- ``train_sampling_strategy="group_by_length"``: transformers' length-grouped sampler reads a length column
  that TRL's DPO data path does not keep, so the lengths (prompt plus the longer completion, what the collator
  pads to) are taken from the tokenised pairs here.
- The reference pass (``precompute_ref_log_probs``) goes through the pairs in length order, so a batch pads
  little, and the log-probabilities are put back in the dataset's order: the training order is untouched.
- ``ReturnFreedMemory``: glibc's free memory goes back to the OS between steps (both trainers).
- ``keep_lora_inputs_in_compute_dtype``: under bf16/fp16 autocast, PEFT's cast of every adapted layer's input to
  the adapter's fp32 is undone by autocast at once; skipping it gives the same loss and gradients bit for bit
  and removes seven full-width fp32 temporaries per layer (a DPO step's forward peak: 3.0 -> 2.2 GB, BENCHMARKS.md).
"""
from __future__ import annotations

from transformers import TrainerCallback
from trl import DPOTrainer, SFTTrainer

from .logprobs import install_label_logprob_head, supports_label_logprob_head


def _install_on(model, outputs: tuple[str, ...], pairs_share_prompts: bool = False) -> None:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if supports_label_logprob_head(base):
        install_label_logprob_head(base, outputs, pairs_share_prompts)


class ReturnFreedMemory(TrainerCallback):
    """When training starts (after DPO's reference precompute), after each optimizer step and after each
    evaluation, hand the memory glibc's malloc holds free back to the OS.

    glibc keeps freed activations in its heap, and batches of other shapes add to it step after step; trimming
    once a step costs page faults for the next step's first touch only (fixing the mmap threshold instead,
    which frees every large tensor at once, halved the training rate; trimming after every micro-batch too
    cost 7-10% and lowered no peak: BENCHMARKS.md)."""

    def __init__(self):
        import ctypes
        import ctypes.util

        try:
            self.trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc
            self.trim = None

    def _trim(self, *args, **kwargs):
        if self.trim is not None:
            self.trim(0)

    on_train_begin = on_step_end = on_evaluate = _trim


def keep_lora_inputs_in_compute_dtype(model) -> None:
    """Tell PEFT's LoRA layers not to cast their input to the adapter weights' dtype (fp32 by PEFT's default).

    Only for a model that runs under mixed-precision autocast: there the adapter's product casts input and
    weight to the compute dtype anyway, so PEFT's fp32 copy of the input was converted straight back."""
    for module in model.modules():
        if hasattr(module, "cast_input_dtype_enabled"):
            module.cast_input_dtype_enabled = False


def _under_autocast(args) -> bool:
    return bool(args.bf16 or args.fp16)


class LeanSFTTrainer(SFTTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if _under_autocast(self.args):
            keep_lora_inputs_in_compute_dtype(self.model)
        _install_on(self.model, ("log_probs", "entropy", "is_top1"))  # what SFTTrainer's loss and logs read
        self.add_callback(ReturnFreedMemory())


class LeanDPOTrainer(DPOTrainer):
    share_prompts = True  # each pair's prompt through the model once, for both answers (stages.lib.shared_prompt)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if _under_autocast(self.args):
            keep_lora_inputs_in_compute_dtype(self.model)
        self._install_label_head()
        self.add_callback(ReturnFreedMemory())

    def _install_label_head(self) -> None:
        outputs = ("log_probs", "entropy", "mean_logits", "is_top1") + (("log_sum_sq_probs",) if self.use_weighting else ())
        for model in (self.model, self.ref_model):
            if model is not None:
                _install_on(model, outputs, self.share_prompts)

    def compute_ref_log_probs(self, model, inputs):
        self._install_label_head()  # TRL's precompute runs inside its __init__, before ours returns
        return super().compute_ref_log_probs(model, inputs)

    def _precompute_ref_logps(self, dataset, name, batch_size):
        # TRL reads the dataset in its order, padding each batch to its longest pair.
        order = sorted(range(len(dataset)), key=_padded_lengths(dataset).__getitem__)
        position = {index: rank for rank, index in enumerate(order)}
        scored = super()._precompute_ref_logps(dataset.select(order), name, batch_size)
        return scored.select([position[i] for i in range(len(dataset))]).flatten_indices()

    def _get_train_sampler(self, train_dataset=None):
        if self.args.train_sampling_strategy != "group_by_length":
            return super()._get_train_sampler(train_dataset)
        from transformers.trainer_pt_utils import LengthGroupedSampler

        dataset = self.train_dataset if train_dataset is None else train_dataset
        return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                    lengths=_padded_lengths(dataset))


def _padded_lengths(dataset) -> list[int]:
    """Per tokenised pair, what the collator pads it to: the prompt plus the longer completion."""
    return [len(p) + max(len(c), len(r)) for p, c, r in
            zip(list(dataset["prompt_ids"]), list(dataset["chosen_ids"]), list(dataset["rejected_ids"]))]
