"""Sampling many completions from one model, fast on a CPU, stopped by string (never by a stop string's last token).

``generate`` runs a slot-based decoding loop ("continuous batching"): ``batch_size`` rows decode together, and a
row that finishes (end of sequence, a stop string, or the token limit) frees its slot at once for the next
prompt, instead of idling until the slowest row of a fixed batch reaches max_new_tokens. Each prompt is
prefilled once and its key/value states copied into its ``num_samples`` slots. The KV cache is preallocated
(one buffer per layer, each row left-aligned at its own length), so a step writes one column per row instead
of concatenating the whole cache, and in bf16 on a CPU a step's attention (``decode_attention``) reads the
whole buffer in two batched products instead of torch's fused kernel. Prompts are admitted in token order and a
prefix shared by neighbouring prompts (few-shot examples) is computed once and reused.

Sampling is per row: every (prompt, sample) has its own random generator, seeded from the generation seed,
the prompt text and the sample index, so the random draws do not depend on which rows share a batch. Same
inputs, settings and thread count give identical output. In float32 a sample can also be regenerated from its
stored prompt, seed and sample index alone; in bfloat16 the matrix products' rounding depends on the batch
shape (measured on this CPU: 5 of 6 prompts diverge when run alone), so only the whole run reproduces.

Models whose cache is not plain full attention (sliding windows, linear attention) fall back to batched
``model.generate`` with Hugging Face's string stopping criteria, built once per call.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
from tqdm import tqdm


@dataclass(frozen=True)
class Sample:
    text: str  # the decoded new tokens, stop string included if one was hit
    n_tokens: int  # new tokens generated (the end-of-sequence token and padding excluded)
    hit_token_limit: bool  # generation ran to max_new_tokens without an EOS or a stop string


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    batch_size: int = 64  # sequences decoded together (prompts x samples); finished rows free their slot at once
    seed: int = 0


def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    settings: GenerationSettings,
    *,
    stop_strings: Sequence[str] = (),
    num_samples: int = 1,
    desc: str = "generate",
    sample_offset: int = 0,
) -> list[list[Sample]]:
    """``num_samples`` samples for each prompt, in prompt order (sample i of a prompt at index i).

    Sample i of a prompt is drawn as sample number ``sample_offset + i``: a later call with ``sample_offset=k``
    continues a run of k samples per prompt with new draws, as if the first call had asked for more."""
    if num_samples < 1:
        raise ValueError("num_samples must be >= 1")
    if sample_offset < 0:
        raise ValueError("sample_offset must be >= 0")
    if settings.max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    prompts = list(prompts)
    if not prompts:
        return []
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    if any(len(ids) == 0 for ids in encoded):
        raise ValueError("generate: an empty prompt has nothing to continue")
    if supports_slot_decoding(model):
        runner = _SlotDecoder(model, tokenizer, prompts, encoded, settings, list(stop_strings), num_samples,
                              sample_offset)
        return runner.run(desc)
    return generate_with_hf(model, tokenizer, prompts, settings, stop_strings=stop_strings,
                            num_samples=num_samples, desc=desc, sample_offset=sample_offset)


# --- per-row randomness ---------------------------------------------------------------------------------


def row_seed(seed: int, prompt: str, sample_index: int) -> int:
    """The random seed of one (prompt, sample): stable across runs, machines and batch layouts."""
    digest = hashlib.sha256(f"{seed}\x00{sample_index}\x00{prompt}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


# --- choosing the next token ------------------------------------------------------------------------------

_TOP_P_CANDIDATES = (64, 1024, None)  # exact top-p widens its look at the best tokens only as far as needed


def apply_repetition_penalty(logits: torch.Tensor, history: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty, as Hugging Face applies it: seen tokens' positive logits divided, negative multiplied.

    ``history`` holds, per row, the ids seen so far (prompt and generated); a row may repeat ids as padding.
    """
    if penalty == 1.0 or history.shape[1] == 0:
        return logits
    seen = logits.gather(1, history)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(1, history, seen)


def nucleus_sample(logits: torch.Tensor, temperature: float, top_p: float, uniforms: torch.Tensor) -> torch.Tensor:
    """One token per row from softmax(logits / temperature) cut to the top-p nucleus, using ``uniforms`` (one
    U[0, 1) draw per row) as the randomness.

    The nucleus is the smallest set of most probable tokens whose mass reaches ``top_p`` (a token is kept while
    the mass before it is below top_p), as in Hugging Face's TopPLogitsWarper. Sorting a 49k vocabulary for
    every row and step is what made sampling slow; here each row looks at its best 64 tokens first, then
    1024, and sorts the whole vocabulary only if its nucleus is wider still."""
    probs = torch.softmax(logits / temperature, dim=-1)
    vocab = probs.shape[-1]
    if top_p >= 1.0:  # no truncation: invert the CDF in vocabulary order, no sort needed
        ids = torch.arange(vocab, device=probs.device).expand_as(probs)
        return _pick(probs, ids, 1.0, uniforms)
    out = torch.empty(len(probs), dtype=torch.long, device=probs.device)
    rows = torch.arange(len(probs), device=probs.device)
    for size in _TOP_P_CANDIDATES:
        size = vocab if size is None else min(size, vocab)
        sub = probs[rows]
        if size < vocab:
            top_probs, top_ids = sub.topk(size, dim=-1)  # sorted, most probable first
        else:
            top_probs, top_ids = sub.sort(dim=-1, descending=True)
        done = top_probs.sum(-1) >= top_p if size < vocab else torch.ones(len(rows), dtype=torch.bool)
        if bool(done.any()):
            out[rows[done]] = _pick(top_probs[done], top_ids[done], top_p, uniforms[rows[done]])
        rows = rows[~done]
        if len(rows) == 0:
            break
    return out


def _pick(probs: torch.Tensor, ids: torch.Tensor, top_p: float, uniforms: torch.Tensor) -> torch.Tensor:
    """Invert the CDF of ``probs`` (rows sorted most probable first when top_p < 1) at ``uniforms``."""
    if top_p < 1.0:
        before = probs.cumsum(-1) - probs  # mass of the strictly more probable tokens
        kept = torch.where(before < top_p, probs, torch.zeros_like(probs))
        kept[:, 0] = probs[:, 0]  # at least one token always survives
    else:
        kept = probs
    cdf = kept.cumsum(-1)
    target = (uniforms.to(cdf.dtype) * cdf[:, -1]).unsqueeze(-1)
    index = torch.searchsorted(cdf, target, right=True).clamp_(max=probs.shape[-1] - 1)
    # Rounding can put the target past the last kept token: step back to the last token with mass.
    chosen = ids.gather(1, index).squeeze(-1)
    bad = kept.gather(1, index).squeeze(-1) <= 0
    if bool(bad.any()):
        last = (kept > 0).long().cumsum(-1).argmax(-1, keepdim=True)  # first index reaching the final count
        chosen = torch.where(bad, ids.gather(1, last).squeeze(-1), chosen)
    return chosen


def choose_tokens(logits: torch.Tensor, history: torch.Tensor, settings: GenerationSettings,
                  generators: Sequence[torch.Generator | None]) -> torch.Tensor:
    """Next token per row: repetition penalty, then greedy or temperature + top-p sampling."""
    logits = apply_repetition_penalty(logits.float(), history, settings.repetition_penalty)
    if settings.temperature <= 0:
        return logits.argmax(-1)
    uniforms = torch.cat([torch.rand(1, generator=g) for g in generators])
    return nucleus_sample(logits, settings.temperature, settings.top_p, uniforms)


# --- stop strings -----------------------------------------------------------------------------------------


class StopChecker:
    """Whether a row's generated text now contains a stop string. Decodes only a tail of the row, long enough
    to hold the longest stop string (every token is at least one byte)."""

    def __init__(self, tokenizer, stop_strings: Sequence[str]):
        self.tokenizer = tokenizer
        self.stop_strings = [s for s in stop_strings if s]
        self.window = max((len(s.encode("utf-8")) for s in self.stop_strings), default=0) + 2

    def hits(self, rows: Sequence[list[int]]) -> list[bool]:
        if not self.stop_strings or not rows:
            return [False] * len(rows)
        tails = self.tokenizer.batch_decode([r[-self.window :] for r in rows], skip_special_tokens=True)
        return [any(s in t for s in self.stop_strings) for t in tails]


# --- the slot decoder ---------------------------------------------------------------------------------------


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


# --- attention for one new token a row ------------------------------------------------------------------------

DECODE_ATTENTION = "slot_decode"
DECODE_ATTENTION_DTYPES = (torch.bfloat16, torch.float16)  # in fp32 torch's fused kernel was as fast


def decode_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention of one new token per row over the slot cache, as two batched products and a softmax.

    On a CPU, torch's fused attention runs a single query token far below the memory's rate: measured on a
    Zen 5 core, 64 rows over 700 cached tokens took 7.5 ms a layer in sdpa and about 4.6 ms here
    (BENCHMARKS.md). The query heads that share a key/value head are stacked as rows of one product, so the
    cache is read once per key/value head. Prompts (several tokens a row) go to sdpa unchanged. Scores are
    rounded to the cache's dtype before an fp32 softmax, as transformers' eager attention does."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if query.shape[2] != 1 or dropout:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    rows, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    grouped = query.reshape(rows, kv_heads, heads // kv_heads, dim)  # query head h reads key/value head h // group
    scores = torch.matmul(grouped, key.transpose(-1, -2)).float().mul_(dim ** -0.5 if scaling is None else scaling)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores.masked_fill_(~attention_mask, float("-inf"))
        else:
            scores.add_(attention_mask)
    out = torch.matmul(scores.softmax(-1).to(value.dtype), value)  # [rows, kv_heads, group, dim]
    return out.reshape(rows, 1, heads, dim), None


def _register_decode_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(DECODE_ATTENTION, decode_attention)
    AttentionMaskInterface.register(DECODE_ATTENTION, sdpa_mask)  # the same boolean masks sdpa gets


class _DecodeAttention:
    """Within the block, a bf16 or fp16 model on a CPU running sdpa or eager attention uses ``decode_attention``;
    restored after. In fp32 torch's kernel was as fast (BENCHMARKS.md), so fp32 models keep it."""

    def __init__(self, model):
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.model = base if hasattr(base, "set_attn_implementation") else None
        self.before = getattr(getattr(base, "config", None), "_attn_implementation", None)

    def __enter__(self):
        half = self.model is not None and self.model.dtype in DECODE_ATTENTION_DTYPES
        if half and self.model.device.type == "cpu" and self.before in ("sdpa", "eager"):
            _register_decode_attention()
            self.model.set_attn_implementation(DECODE_ATTENTION)
        else:
            self.model = None
        self.active = self.model is not None
        return self

    def __exit__(self, *exc):
        if self.model is not None:
            self.model.set_attn_implementation(self.before)


@dataclass
class _Row:
    prompt_index: int
    sample_index: int
    prompt_len: int
    generator: torch.Generator | None
    ids: list[int] = field(default_factory=list)


class _SlotDecoder:
    def __init__(self, model, tokenizer, prompts, encoded, settings: GenerationSettings, stop_strings, num_samples,
                 sample_offset: int = 0):
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        self.prompts, self.encoded, self.k, self.sample_offset = prompts, encoded, num_samples, sample_offset
        self.device = model.device
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (self.eos or 0)
        self.stops = StopChecker(tokenizer, stop_strings)
        self.n_slots = max(num_samples, settings.batch_size // num_samples * num_samples)
        self.capacity = max(len(e) for e in encoded) + settings.max_new_tokens + 1
        # Prompts are admitted in token order, so prompts sharing a prefix (few-shot examples) come together
        # and the prefix's keys and values, computed once, serve them all (see _prefill).
        order = sorted(range(len(prompts)), key=lambda i: (encoded[i], i))
        self.pending = order[::-1]  # popped from the end
        self.branch_points = _shared_prefix_lengths([encoded[i] for i in order], order)
        self.prefixes: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.prefill_tokens = 0  # prompt tokens actually run through the model
        self.results: list[list[Sample | None]] = [[None] * num_samples for _ in prompts]
        self.remaining = [num_samples] * len(prompts)
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
        with torch.inference_mode(), _DecodeAttention(self.model) as attention:
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
        n_new = min(len(free) // self.k, len(self.pending))
        new_slots, logits = [], []
        for _ in range(n_new):
            prompt_index = self.pending.pop()
            layers, last_logits = self._prefill(prompt_index)
            if self.cache is None:
                self.cache = _slot_cache_classes()(len(layers), self.whole_buffer)
                for layer, (keys, _) in zip(self.cache.layers, layers):
                    layer.allocate(keys.unsqueeze(0), self.n_slots, self.capacity)
            n = len(self.encoded[prompt_index])
            for sample_index in range(self.k):
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

    def _prefill(self, prompt_index: int):
        """Keys and values of a whole prompt ([kv_heads, length, head_dim] per layer) and the logits after it.

        The longest stored prefix of the prompt is reused and only the rest is run. The prompt's branch points
        (the prefixes it shares with its neighbours in token order) are stored for the prompts still to come,
        and a stored prefix is dropped once no pending prompt starts with it."""
        from transformers import DynamicCache

        tokens = self.encoded[prompt_index]
        start, reused = 0, None
        for prefix, layers in self.prefixes.items():
            if len(prefix) > start and tuple(tokens[: len(prefix)]) == prefix:
                start, reused = len(prefix), layers
        cache = DynamicCache(config=self.model.config)
        if reused is not None:
            for i, (keys, values) in enumerate(reused):
                cache.update(keys.unsqueeze(0), values.unsqueeze(0), i)
        n = len(tokens)
        extra = {"logits_to_keep": 1} if self.logits_to_keep else {}
        out = self.model(input_ids=torch.tensor([tokens[start:]], device=self.device),
                         attention_mask=torch.ones((1, n), dtype=torch.long, device=self.device),
                         position_ids=torch.arange(start, n, device=self.device).unsqueeze(0),
                         past_key_values=cache, use_cache=True, **extra)
        self.prefill_tokens += n - start
        layers = [(layer.keys[0], layer.values[0]) for layer in cache.layers]
        for length in self.branch_points.get(prompt_index, ()):
            if length > start:
                self.prefixes[tuple(tokens[:length])] = [(k[:, :length].clone(), v[:, :length].clone())
                                                         for k, v in layers]
        # Prompts starting with a given prefix are contiguous in token order, and admission follows that order:
        # a prefix the next pending prompt does not start with will not be needed again.
        upcoming = self.encoded[self.pending[-1]] if self.pending else []
        for prefix in [p for p in self.prefixes if tuple(upcoming[: len(p)]) != p]:
            del self.prefixes[prefix]
        return layers, out.logits[0, -1, :]

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


def _shared_prefix_lengths(sorted_tokens: list[list[int]], order: list[int]) -> dict[int, tuple[int, ...]]:
    """For prompts in token order: the lengths of the prefixes each shares with its neighbours (never the
    whole prompt: its last token must run to give the first logits), keyed by prompt index."""
    def common(a: list[int], b: list[int]) -> int:
        n = 0
        for x, y in zip(a, b):
            if x != y:
                break
            n += 1
        return n

    out = {}
    for pos, prompt_index in enumerate(order):
        tokens = sorted_tokens[pos]
        lengths = set()
        for other in (pos - 1, pos + 1):
            if 0 <= other < len(order):
                shared = min(common(tokens, sorted_tokens[other]), len(tokens) - 1)
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


# --- fallback: Hugging Face generate ------------------------------------------------------------------------


def generate_with_hf(model, tokenizer, prompts: Sequence[str], settings: GenerationSettings, *,
                     stop_strings: Sequence[str] = (), num_samples: int = 1,
                     desc: str = "generate", sample_offset: int = 0) -> list[list[Sample]]:
    """Fixed, length-sorted batches through ``model.generate``. The string stopping criteria are built once:
    preparing them scans the whole vocabulary (seconds for a 49k vocabulary), and Hugging Face's own cache of
    that work misses when the vocabulary dict comes back in a different order. Sampling draws from one
    generator for the whole call (seeded from the seed and ``sample_offset``), so here a sample depends on the
    batch it ran in."""
    from transformers import StoppingCriteriaList
    from transformers.generation.stopping_criteria import StopStringCriteria

    encoded = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i]), i))
    per_batch = max(1, settings.batch_size // num_samples)
    batches = [order[i : i + per_batch] for i in range(0, len(order), per_batch)]
    results: list[list[Sample]] = [[] for _ in prompts]
    sampling = settings.temperature > 0
    gen_kwargs = dict(
        max_new_tokens=settings.max_new_tokens, do_sample=sampling, num_return_sequences=num_samples,
        repetition_penalty=settings.repetition_penalty, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if sampling:
        gen_kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=0)
    else:
        gen_kwargs.update(temperature=None, top_p=None, top_k=None)
    stops = [s for s in stop_strings if s]
    if stops:
        gen_kwargs["stopping_criteria"] = StoppingCriteriaList([StopStringCriteria(tokenizer, stops)])
    checker = StopChecker(tokenizer, stops)
    torch.manual_seed(settings.seed if sample_offset == 0 else row_seed(settings.seed, "", sample_offset))
    generated, start = 0, time.perf_counter()
    bar = tqdm(batches, desc=desc, unit="batch")
    for batch in bar:
        padded = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt")
        padded = {k: v.to(model.device) for k, v in padded.items()}
        with torch.inference_mode():
            out = model.generate(**padded, **gen_kwargs)
        new = out[:, padded["input_ids"].shape[1] :].cpu().tolist()
        for row, ids in enumerate(new):
            sample = _hf_row_to_sample(ids, tokenizer, settings.max_new_tokens, checker)
            results[batch[row // num_samples]].append(sample)
            generated += sample.n_tokens
        bar.set_postfix(tok_s=f"{generated / (time.perf_counter() - start):.0f}")
    return results


def _hf_row_to_sample(ids: list[int], tokenizer, max_new_tokens: int, checker: StopChecker) -> Sample:
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    ended = eos in ids
    if ended:
        ids = ids[: ids.index(eos)]
    # A row that stopped early is right-filled with pad (pad may equal eos, handled above).
    while ids and ids[-1] == pad:
        ids = ids[:-1]
        ended = True
    ended = ended or len(ids) < max_new_tokens or (bool(ids) and checker.hits([ids])[0])
    return Sample(tokenizer.decode(ids, skip_special_tokens=True), len(ids), hit_token_limit=not ended)
