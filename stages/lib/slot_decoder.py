"""The slot decoder: continuous batching for many samples of many prompts, fast on a CPU.

``batch_size`` rows decode together, and a row that finishes (end of sequence, a stop string, or the token
limit) frees its slot at once for the next prompt, instead of idling until the slowest row of a fixed batch
reaches max_new_tokens. Prompts admitted together are prefilled together, several to a forward pass, each
once, and its key/value states copied into its ``samples_per_prompt`` slots. The KV cache is preallocated
(one buffer per layer, each row left-aligned at its own length), so a step writes one column per row instead
of concatenating the whole cache, and in bf16 on a CPU a step's attention (stages/lib/decode_attention.py)
reads the whole buffer in two batched products instead of torch's fused kernel. Prompts are admitted in token
order and a prefix shared by neighbouring prompts (few-shot examples) is computed once and reused.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from .decode_attention import DecodeAttention
from .generation import GenerationSettings, Sample
from .output_head import contiguous_head_input
from .sampling import choose_tokens, row_seed
from .stopping import StopChecker


def supports_slot_decoding(model) -> bool:
    """Plain decoder-only models whose every layer caches full attention (Llama, Qwen2, Mistral without a
    window, ...). Others go through ``generate_with_hf``."""
    from transformers.cache_utils import get_layer_types_and_kwargs

    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    try:
        layer_types, _ = get_layer_types_and_kwargs(config.get_text_config(decoder=True))
    except Exception:  # an architecture this version cannot describe: take the safe path
        return False
    return bool(layer_types) and all(t == "full_attention" for t in layer_types)


def _slot_cache_classes():
    from transformers.cache_utils import Cache, DynamicLayer

    class SlotLayer(DynamicLayer):
        """One layer's keys and values for every slot: [slots, kv_heads, capacity, head_dim], each row
        left-aligned, so a token's column is its position. ``update`` writes one new column per row and hands
        attention the columns up to the longest row, or the whole buffer for ``decode_attention`` (whose
        products would copy a slice of it)."""

        def __init__(self, owner):
            super().__init__()
            self.owner = owner
            self.key_buf = self.value_buf = None

        def allocate(self, like: torch.Tensor, slots: int, capacity: int) -> None:
            shape = (slots, like.shape[1], capacity, like.shape[3])
            self.key_buf = torch.zeros(shape, dtype=like.dtype, device=like.device)
            self.value_buf = torch.zeros(shape, dtype=like.dtype, device=like.device)
            self.dtype, self.device, self.is_initialized = like.dtype, like.device, True

        def update(self, key_states, value_states, *args, **kwargs):
            o = self.owner
            if key_states.shape[-2] != 1:
                raise RuntimeError("the slot cache takes one new token per row; prefill goes through DynamicCache")
            # Row b's new key goes to column positions[b]: one index_copy_ into the flattened buffer
            # (o.flat_index, shared by all layers) instead of an advanced-index assignment.
            dim = key_states.shape[-1]
            self.key_buf.view(-1, dim).index_copy_(0, o.flat_index, key_states.reshape(-1, dim))
            self.value_buf.view(-1, dim).index_copy_(0, o.flat_index, value_states.reshape(-1, dim))
            self.keys, self.values = self.key_buf[:, :, : o.columns], self.value_buf[:, :, : o.columns]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.owner.columns - 1  # columns before the new token, as the mask builder expects

        def select_rows(self, index: torch.Tensor) -> None:
            self.key_buf, self.value_buf = self.key_buf[index], self.value_buf[index]

    class SlotCache(Cache):
        def __init__(self, n_layers: int, whole_buffer: bool):
            self.flat_index = None
            self.whole_buffer = whole_buffer
            self.columns = 1  # the columns attention reads this step
            super().__init__(layers=[SlotLayer(self) for _ in range(n_layers)])

        def prepare_step(self, positions: torch.Tensor) -> None:
            """Where each row's next token goes: rows are slots, ``positions`` their current lengths."""
            buf = self.layers[0].key_buf
            slots, heads, capacity, _ = buf.shape
            rows = torch.arange(slots, device=buf.device).unsqueeze(1) * heads
            heads = torch.arange(heads, device=buf.device).unsqueeze(0)
            self.flat_index = ((rows + heads) * capacity + positions.to(buf.device).unsqueeze(1)).reshape(-1)
            self.columns = capacity if self.whole_buffer else int(positions.max()) + 1

    return SlotCache


@dataclass
class _Row:
    prompt_index: int
    sample_index: int
    prompt_len: int
    generator: torch.Generator | None
    ids: list[int] = field(default_factory=list)


class SlotDecoder:
    """``generate`` for one call: construct, then ``run``."""

    def __init__(self, model, tokenizer, prompts, encoded, settings: GenerationSettings, stop_strings,
                 samples_per_prompt: int, sample_offset: int = 0):
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        self.prompts, self.encoded = prompts, encoded
        self.samples_per_prompt, self.sample_offset = samples_per_prompt, sample_offset
        self.device = model.device
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (self.eos or 0)
        self.stops = StopChecker(tokenizer, stop_strings)
        self.n_slots = max(samples_per_prompt, settings.batch_size // samples_per_prompt * samples_per_prompt)
        self.capacity = max(len(e) for e in encoded) + settings.max_new_tokens + 1
        # Prompts are admitted in token order, so prompts sharing a prefix (few-shot examples) come together
        # and the prefix's keys and values, computed once, serve them all (see _prefill).
        order = sorted(range(len(prompts)), key=lambda i: (encoded[i], i))
        self.pending = order[::-1]  # popped from the end
        self.branch_points = _shared_prefix_lengths([encoded[i] for i in order], order)
        self.prefixes: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.prefill_tokens = 0  # prompt tokens actually run through the model
        self.results: list[list[Sample | None]] = [[None] * samples_per_prompt for _ in prompts]
        self.remaining = [samples_per_prompt] * len(prompts)
        self.cache = None
        self.slots: list[_Row | None] = [None] * self.n_slots
        self.lengths = torch.zeros(self.n_slots, dtype=torch.long)  # tokens cached per slot
        self.last = torch.full((self.n_slots,), self.pad, dtype=torch.long)  # token to feed next
        self.history = torch.zeros((self.n_slots, self.capacity), dtype=torch.long)  # ids seen, for the penalty
        self.generated_tokens = 0
        sig = _forward_parameters(model)
        self.logits_to_keep = "logits_to_keep" in sig

    def run(self, desc: str) -> list[list[Sample]]:
        self.bar = tqdm(total=len(self.prompts), desc=desc, unit="prompt")
        self.start = time.perf_counter()
        with torch.inference_mode(), DecodeAttention(self.model) as attention, contiguous_head_input(self.model):
            self.whole_buffer = attention.active
            self._admit()
            while any(self.slots):
                self._step()
                self._admit()
                self._shrink()
        self.bar.close()
        return [list(samples) for samples in self.results]

    # admission: prefill prompts into free slots ---------------------------------------------------------

    def _admit(self) -> None:
        free = [s for s, row in enumerate(self.slots) if row is None]
        n_new = min(len(free) // self.samples_per_prompt, len(self.pending))
        admitted = [self.pending.pop() for _ in range(n_new)]
        new_slots, logits = [], []
        for prompt_index, (layers, last_logits) in zip(admitted, self._prefill(admitted)):
            if self.cache is None:
                self.cache = _slot_cache_classes()(len(layers), self.whole_buffer)
                for layer, (keys, _) in zip(self.cache.layers, layers):
                    layer.allocate(keys.unsqueeze(0), self.n_slots, self.capacity)
            n = len(self.encoded[prompt_index])
            for sample_index in range(self.samples_per_prompt):
                slot = free.pop(0)
                for layer, (keys, values) in zip(self.cache.layers, layers):
                    layer.key_buf[slot, :, :n] = keys
                    layer.value_buf[slot, :, :n] = values
                generator = None
                if self.settings.temperature > 0:
                    generator = torch.Generator().manual_seed(
                        row_seed(self.settings.seed, self.prompts[prompt_index], self.sample_offset + sample_index))
                self.slots[slot] = _Row(prompt_index, sample_index, n, generator)
                self.lengths[slot] = n
                self.history[slot] = self.encoded[prompt_index][0]
                self.history[slot, :n] = torch.tensor(self.encoded[prompt_index])
                new_slots.append(slot)
                logits.append(last_logits)
        if new_slots:
            self._accept(new_slots, torch.stack(logits))

    def _prefill(self, prompt_indices: list[int]):
        """Keys and values of each whole prompt ([kv_heads, length, head_dim] per layer) and the logits after it,
        in the order given.

        Prompts run together, several to a forward pass (``_prefill_chunk``), each from the end of its longest
        stored prefix. A prompt that would share a long prefix with the one before it, not yet stored, waits for
        a later pass (``_groups``), so few-shot examples still run once. Each prompt's branch points (the
        prefixes it shares with its neighbours in token order) are stored for the prompts still to come, and a
        stored prefix is dropped once the next prompt does not start with it."""
        results = {}
        for group in self._groups(prompt_indices):
            for chunk in self._chunks(group):
                results.update(zip(chunk, self._prefill_chunk(chunk)))
            for prompt_index in group:
                tokens, (layers, _) = self.encoded[prompt_index], results[prompt_index]
                for length in self.branch_points.get(prompt_index, ()):
                    if length > self._stored_prefix(tokens)[0]:
                        self.prefixes[tuple(tokens[:length])] = [(k[:, :length].clone(), v[:, :length].clone())
                                                                 for k, v in layers]
            # Prompts starting with a given prefix are contiguous in token order, and prompts are prefilled in
            # that order: a prefix the next prompt does not start with will not be needed again.
            following = prompt_indices[prompt_indices.index(group[-1]) + 1:] or self.pending[-1:]
            upcoming = self.encoded[following[0]] if following else []
            for prefix in [p for p in self.prefixes if tuple(upcoming[: len(p)]) != p]:
                del self.prefixes[prefix]
        return [results[i] for i in prompt_indices]

    def _groups(self, prompt_indices: list[int]):
        """Consecutive runs of prompts to prefill together. A prompt starts a new run when it shares at least
        ``_SPLIT_SHARED`` more tokens with the prompt before it than the store already holds for it: run after
        that prompt, it reuses the shared part instead of computing it again. Yielded lazily, since each run's
        prefixes are stored before the next is formed."""
        group = []
        for prompt_index in prompt_indices:
            if group:
                tokens, before = self.encoded[prompt_index], self.encoded[group[-1]]
                shared = min(_common_length(tokens, before), len(tokens) - 1)
                if shared - self._stored_prefix(tokens)[0] >= _SPLIT_SHARED:
                    yield group
                    group = []
            group.append(prompt_index)
        if group:
            yield group

    def _chunks(self, group: list[int]) -> list[list[int]]:
        """Forward passes for a run of prompts: by the length left to compute, at most ``_PREFILL_TOKENS``
        padded positions each (one prompt a pass where the model cannot keep only the last logits)."""
        to_run = {i: len(self.encoded[i]) - self._stored_prefix(self.encoded[i])[0] for i in group}
        chunks, chunk = [], []
        for prompt_index in sorted(group, key=to_run.get):
            width = to_run[prompt_index]
            if chunk and (not self.logits_to_keep or (len(chunk) + 1) * width > _PREFILL_TOKENS):
                chunks.append(chunk)
                chunk = []
            chunk.append(prompt_index)
        return chunks + [chunk] if chunk else chunks

    def _prefill_chunk(self, chunk: list[int]):
        """One forward pass over several prompts, each continuing from its stored prefix.

        Rows are left-padded so that every prompt ends in the last column: the stored prefixes fill the cache
        columns before the new tokens (each right-aligned), the new tokens follow, and the attention mask hides
        what lies between. Each row's own columns are then taken out again."""
        from transformers import DynamicCache

        stored = [self._stored_prefix(self.encoded[i]) for i in chunk]
        runs = [self.encoded[i][cached:] for i, (cached, _) in zip(chunk, stored)]
        past, width = max(cached for cached, _ in stored), max(map(len, runs))
        cache = DynamicCache(config=self.model.config)
        if past:
            n_layers = len(next(layers for cached, layers in stored if cached))
            for layer in range(n_layers):
                keys = values = None
                for row, (cached, layers) in enumerate(stored):
                    if not cached:
                        continue
                    k, v = layers[layer]
                    if keys is None:
                        keys = k.new_zeros((len(chunk), k.shape[0], past, k.shape[2]))
                        values = torch.zeros_like(keys)
                    keys[row, :, past - cached:] = k[:, :cached]
                    values[row, :, past - cached:] = v[:, :cached]
                cache.update(keys, values, layer)
        input_ids, mask, positions = [], [], []
        for (cached, _), run in zip(stored, runs):
            pad = width - len(run)
            input_ids.append([self.pad] * pad + run)
            mask.append([0] * (past - cached) + [1] * cached + [0] * pad + [1] * len(run))
            positions.append([0] * pad + list(range(cached, cached + len(run))))
        extra = {"logits_to_keep": 1} if self.logits_to_keep else {}
        out = self.model(input_ids=torch.tensor(input_ids, device=self.device),
                         attention_mask=torch.tensor(mask, device=self.device),
                         position_ids=torch.tensor(positions, device=self.device),
                         past_key_values=cache, use_cache=True, **extra)
        self.prefill_tokens += sum(map(len, runs))
        results = []
        for row, ((cached, _), run) in enumerate(zip(stored, runs)):
            own = torch.arange(past - cached, past + width, device=self.device)
            own = own[(own < past) | (own >= past + width - len(run))]  # the row's prefix and its new tokens
            layers = [(layer.keys[row].index_select(1, own), layer.values[row].index_select(1, own))
                      for layer in cache.layers]
            results.append((layers, out.logits[row, -1, :]))
        return results

    def _stored_prefix(self, tokens: list[int]):
        """The longest stored prefix of ``tokens`` (never all of them: the last token must run to give the
        logits): its length and its layers, or (0, None)."""
        best, best_layers = 0, None
        for prefix, layers in self.prefixes.items():
            if len(prefix) > best and tuple(tokens[: len(prefix)]) == prefix:
                best, best_layers = len(prefix), layers
        return min(best, len(tokens) - 1), best_layers

    # one decoding step for every occupied slot ------------------------------------------------------------

    def _step(self) -> None:
        active = [s for s, row in enumerate(self.slots) if row is not None]
        positions = self.lengths.clone()
        positions[[s for s, row in enumerate(self.slots) if row is None]] = 0  # idle slots write column 0
        self.cache.prepare_step(positions)
        mask = torch.arange(self.cache.columns).unsqueeze(0) <= positions.unsqueeze(1)
        out = self.model(input_ids=self.last.unsqueeze(1).to(self.device), attention_mask=mask.long().to(self.device),
                         position_ids=positions.unsqueeze(1).to(self.device), past_key_values=self.cache,
                         use_cache=True)
        index = torch.tensor(active)
        self.lengths[index] += 1
        self._accept(active, out.logits[index.to(out.logits.device), -1, :])

    def _accept(self, slots: list[int], logits: torch.Tensor) -> None:
        """Choose the next token of each slot in ``slots`` from its logits; finish rows that are done."""
        rows = [self.slots[s] for s in slots]
        width = max(r.prompt_len + len(r.ids) for r in rows)
        index = torch.tensor(slots)
        tokens = choose_tokens(logits.float().cpu(), self.history[index, :width], self.settings,
                               [r.generator for r in rows]).tolist()
        grown = []
        for slot, row, token in zip(slots, rows, tokens):
            if token == self.eos:
                self._finish(slot, ended=True)
                continue
            self.history[slot, row.prompt_len + len(row.ids)] = token
            row.ids.append(token)
            self.last[slot] = token
            grown.append(slot)
        hits = self.stops.hits([self.slots[s].ids for s in grown])
        for slot, hit in zip(grown, hits):
            row = self.slots[slot]
            if hit:
                self._finish(slot, ended=True)
            elif len(row.ids) >= self.settings.max_new_tokens:
                self._finish(slot, ended=False)

    def _finish(self, slot: int, *, ended: bool) -> None:
        row = self.slots[slot]
        text = self.tokenizer.decode(row.ids, skip_special_tokens=True)
        self.results[row.prompt_index][row.sample_index] = Sample(text, len(row.ids), hit_token_limit=not ended)
        self.generated_tokens += len(row.ids)
        self.slots[slot] = None
        self.remaining[row.prompt_index] -= 1
        if self.remaining[row.prompt_index] == 0:
            self.bar.update(1)
            self.bar.set_postfix(tok_s=f"{self.generated_tokens / (time.perf_counter() - self.start):.0f}")

    def _shrink(self) -> None:
        """With nothing left to admit, drop idle slots once half the batch is idle (fewer rows per step)."""
        occupied = [s for s, row in enumerate(self.slots) if row is not None]
        if self.pending or not occupied or len(occupied) > self.n_slots // 2:
            return
        index = torch.tensor(occupied)
        for layer in self.cache.layers:
            layer.select_rows(index.to(layer.key_buf.device))
        self.slots = [self.slots[s] for s in occupied]
        self.lengths, self.last, self.history = self.lengths[index], self.last[index], self.history[index]
        self.n_slots = len(occupied)


_MIN_SHARED_PREFIX = 8  # tokens; a shorter shared prefix is not worth storing
# A prompt sharing this many tokens more with the one before it than the store holds waits for that prompt's
# pass, to reuse the shared part; a shorter stretch is cheaper to compute again than a pass is to split.
_SPLIT_SHARED = 32
_PREFILL_TOKENS = 8192  # padded positions in one prefill pass: bounds its activations


def _common_length(a: list[int], b: list[int]) -> int:
    return len(os.path.commonprefix([a, b]))  # element-wise on any sequences, not only strings


def _shared_prefix_lengths(sorted_tokens: list[list[int]], order: list[int]) -> dict[int, tuple[int, ...]]:
    """For prompts in token order: the lengths of the prefixes each shares with its neighbours (never the
    whole prompt: its last token must run to give the first logits), keyed by prompt index."""
    out = {}
    for pos, prompt_index in enumerate(order):
        tokens = sorted_tokens[pos]
        lengths = set()
        for other in (pos - 1, pos + 1):
            if 0 <= other < len(order):
                shared = min(_common_length(tokens, sorted_tokens[other]), len(tokens) - 1)
                if shared >= _MIN_SHARED_PREFIX:
                    lengths.add(shared)
        if lengths:
            out[prompt_index] = tuple(sorted(lengths))
    return out


def _forward_parameters(model) -> set[str]:
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return set(inspect.signature(base.forward).parameters)
    except (TypeError, ValueError):
        return set()
