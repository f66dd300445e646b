"""The output layer's input, made contiguous while a model generates."""
from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def contiguous_head_input(model):
    """Hands the output layer a contiguous input while the model generates (slot decoder or Hugging Face).

    A prefill pass keeps only each row's last position (``logits_to_keep``), a strided [rows, 1, hidden] slice.
    torch.matmul folds such an input into one matrix product only when the weight requires a gradient; with
    a frozen weight (as a merged adapter leaves the model) it runs a batched product instead, copying the
    weight once per row: 8.3 GB and 35 s for 157 prompts on the default model, against 6.5 s without the copy
    (BENCHMARKS.md). Copying the slice costs rows x hidden values."""
    head = model.get_output_embeddings()
    if head is None:
        yield
        return
    # A model that passes the input by keyword (no positional args) is left as it is.
    handle = head.register_forward_pre_hook(lambda module, args: (args[0].contiguous(), *args[1:]) if args else None)
    try:
        yield
    finally:
        handle.remove()
