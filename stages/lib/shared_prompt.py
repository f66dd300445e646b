"""A preference pair's two answers share their prompt: run the prompt through the model once.

TRL's DPOTrainer stacks a batch of n pairs as 2n rows, prompt + chosen for each pair and then prompt + rejected,
each padded to the longest row, so every prompt is computed twice and the shorter answer of a pair carries
padding. ``pack_pairs`` turns the pair into one row, ``prompt | chosen | rejected``: the rejected tokens keep the
positions they had in their own row (numbered on from the end of the prompt) and an attention mask lets them
see the prompt and the earlier rejected tokens only, never the chosen ones. Every token therefore attends to
exactly what it attended to in the stacked batch, and its hidden state, log-probability and gradient are the
same (up to float rounding); the gradients the prompt receives from both answers meet in its one copy.

On the default preference data the prompts are 27% of the stacked batch's real tokens; the train_dpo stage
ran 1.19-1.26x faster with a 0.45 GB lower peak in fp32 (BENCHMARKS.md, Intel fp32 host).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

ATTENTION_WITH_BOOLEAN_MASKS = ("sdpa", "cpu_fp32_sdpa")  # take a custom [batch, 1, query, key] boolean mask as-is
_PREFIX, _CHOSEN, _REJECTED, _PADDING = 0, 1, 2, 3


@dataclass
class PackedPairs:
    input_ids: torch.Tensor  # [pairs, length]: prompt, chosen answer, rejected answer, padding
    position_ids: torch.Tensor  # [pairs, length]
    attention_mask: torch.Tensor  # [pairs, 1, length, length], True where a query may attend to a key
    source: torch.Tensor  # [2 * pairs, stacked length]: for each stacked position, its index in the packed rows, flattened

    def gather(self, hidden: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
        """From the packed model's hidden states [pairs, length, d], those of the stacked batch's positions where
        the boolean ``selected`` [2 * pairs, up to the stacked length] is True, in the order
        ``stacked_hidden[selected]`` would give them."""
        return hidden.reshape(-1, hidden.shape[-1])[self.source[:, : selected.shape[1]][selected]]


def _real_lengths(attention_mask: torch.Tensor) -> list[int] | None:
    """Tokens per row, or None unless each row is its tokens followed by padding (TRL pads on the right)."""
    lengths = attention_mask.sum(1)
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    if not torch.equal(attention_mask.bool(), positions[None, :] < lengths[:, None]):
        return None
    return lengths.tolist()


def _first_label(labels_row: torch.Tensor, length: int) -> int:
    labelled = (labels_row[:length] != -100).nonzero()
    return int(labelled[0]) if len(labelled) else length


def pack_pairs(input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> PackedPairs | None:
    """One row per pair from TRL's stacked batch ([chosen rows; rejected rows], right-padded, prompt unlabelled).
    None when the batch is not laid out so, or a pair's rows do not begin with the same unlabelled tokens: the
    caller then runs the stacked batch as it is."""
    if input_ids.shape[0] % 2 or attention_mask is None or attention_mask.dim() != 2:
        return None
    lengths = _real_lengths(attention_mask)
    if lengths is None:
        return None
    n = input_ids.shape[0] // 2
    rows = []
    for i in range(n):
        chosen_len, rejected_len = lengths[i], lengths[n + i]
        shared = min(_first_label(labels[i], chosen_len), _first_label(labels[n + i], rejected_len))
        if shared == 0 or not torch.equal(input_ids[i, :shared], input_ids[n + i, :shared]):
            return None
        rows.append((chosen_len, rejected_len, shared))
    width = max(c + r - s for c, r, s in rows)
    device = input_ids.device
    packed_ids = torch.zeros(n, width, dtype=input_ids.dtype, device=device)
    positions = torch.arange(width, device=device).repeat(n, 1)
    segment = torch.full((n, width), _PADDING, device=device)
    source = torch.zeros(input_ids.shape, dtype=torch.long, device=device)
    stacked = torch.arange(input_ids.shape[1], device=device)
    for i, (chosen_len, rejected_len, shared) in enumerate(rows):
        rejected_end = chosen_len + rejected_len - shared
        packed_ids[i, :chosen_len] = input_ids[i, :chosen_len]
        packed_ids[i, chosen_len:rejected_end] = input_ids[n + i, shared:rejected_len]
        positions[i, chosen_len:rejected_end] = torch.arange(shared, rejected_len, device=device)
        segment[i, :shared], segment[i, shared:chosen_len], segment[i, chosen_len:rejected_end] = (
            _PREFIX, _CHOSEN, _REJECTED)
        source[i] = i * width + stacked.clamp(max=chosen_len - 1)
        source[n + i] = i * width + torch.where(stacked < shared, stacked, stacked - shared + chosen_len).clamp(
            max=rejected_end - 1)
    causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
    # A query sees earlier keys of the shared prompt or of its own part; padding sees padding only (never an
    # empty row, which would give NaN), and nothing real sees padding, which comes after every real token.
    same_part = (segment[:, None, :] == _PREFIX) | (segment[:, None, :] == segment[:, :, None])
    mask = (causal[None] & same_part)[:, None]
    return PackedPairs(packed_ids, positions, mask, source)
