"""TRL's SFT and DPO trainers, lean on a CPU: the output layer scores only completion tokens, and DPO pairs may be
batched by length. Losses, the reference precompute and the logged metrics are TRL's own.

- The log-probability head is stages.lib.logprobs' (see there why), installed in place of TRL's on the policy
  and, when there is one, on the reference model. TRL installs its head inside ``__init__`` and, with
  ``precompute_ref_log_probs``, runs the reference pass there too, so ours goes in before that pass (in
  ``compute_ref_log_probs``) as well as after ``__init__``.
- ``train_sampling_strategy="group_by_length"``: transformers' length-grouped sampler reads a length column
  that TRL's DPO data path does not keep, so the lengths (prompt plus the longer completion, what the collator
  pads to) are taken from the tokenised pairs here.
- ``ReturnFreedMemory``: glibc's free memory goes back to the OS between steps (both trainers).
"""
from __future__ import annotations

from transformers import TrainerCallback
from trl import DPOTrainer, SFTTrainer

from .logprobs import install_label_logprob_head, supports_label_logprob_head


def _install_on(model, outputs: tuple[str, ...]) -> None:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if supports_label_logprob_head(base):
        install_label_logprob_head(base, outputs)


class ReturnFreedMemory(TrainerCallback):
    """When training starts (after DPO's reference precompute), after each optimizer step and after each
    evaluation, hand the memory glibc's malloc holds free back to the OS.

    glibc keeps freed activations in its heap, and batches of other shapes add to it step after step; trimming
    once a step costs page faults for the next step's first touch only (fixing the mmap threshold instead,
    which frees every large tensor at once, halved the training rate: BENCHMARKS.md)."""

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


class LeanSFTTrainer(SFTTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _install_on(self.model, ("log_probs", "entropy", "is_top1"))  # what SFTTrainer's loss and logs read
        self.add_callback(ReturnFreedMemory())


class LeanDPOTrainer(DPOTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._install_label_head()
        self.add_callback(ReturnFreedMemory())

    def _install_label_head(self) -> None:
        outputs = ("log_probs", "entropy", "mean_logits", "is_top1") + (("log_sum_sq_probs",) if self.use_weighting else ())
        for model in (self.model, self.ref_model):
            if model is not None:
                _install_on(model, outputs)

    def compute_ref_log_probs(self, model, inputs):
        self._install_label_head()  # TRL's precompute runs inside its __init__, before ours returns
        return super().compute_ref_log_probs(model, inputs)

    def _get_train_sampler(self, train_dataset=None):
        if self.args.train_sampling_strategy != "group_by_length":
            return super()._get_train_sampler(train_dataset)
        from transformers.trainer_pt_utils import LengthGroupedSampler

        dataset = self.train_dataset if train_dataset is None else train_dataset
        lengths = [len(p) + max(len(c), len(r)) for p, c, r in
                   zip(list(dataset["prompt_ids"]), list(dataset["chosen_ids"]), list(dataset["rejected_ids"]))]
        return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                    lengths=lengths)
