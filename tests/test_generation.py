"""Generation and cleaning: string stopping (a colon is not a stop), the slot decoder against Hugging Face's
generate, per-row sampling, and how a raw generation becomes a response."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM

from stages.lib.cleaning import clean, is_valid
from stages.lib.decode_attention import DECODE_ATTENTION, decode_attention
from stages.lib.generation import GenerationSettings, generate
from stages.lib.hardware import resolve_precision
from stages.lib.hf_generation import generate_with_hf
from stages.lib.loader import load_model, load_tokenizer
from stages.lib.prompts import few_shot_prompt, stop_strings, Shot
from stages.lib.sampling import apply_repetition_penalty, nucleus_sample, row_seed
from stages.lib.slot_decoder import SlotDecoder, supports_slot_decoding
from stages.lib.stopping import StopChecker

STOPS = ["###", "\nInstruction:", "\nQ:"]
FP32 = resolve_precision("float32")


def settings_for(max_new_tokens: int, batch_size: int, *, temperature: float = 0.0, top_p: float = 1.0,
                 repetition_penalty: float = 1.0, seed: int = 0) -> GenerationSettings:
    """Greedy, no penalty, unless a test says otherwise."""
    return GenerationSettings(max_new_tokens, temperature, top_p, repetition_penalty, batch_size, seed)


# --- a model whose output we choose --------------------------------------------------------------------


class ScriptedLlama(LlamaForCausalLM):
    """The tiny Llama run for real (cache, masks, positions), with its choice of next token overridden: after a
    prompt of ``prompt_len`` tokens, generation step i emits ``script[i]``, then EOS. The step is read from the
    position ids, so it holds for every row of a batch, in the slot decoder and in ``model.generate`` alike."""

    script: list[int] = []
    prompt_len = 0

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, **kwargs):
        out = super().forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs)
        steps = (position_ids[:, -1] - (self.prompt_len - 1)).tolist()
        logits = torch.full((len(steps), 1, self.config.vocab_size), -20.0)
        for row, step in enumerate(steps):
            token = self.script[step] if 0 <= step < len(self.script) else self.config.eos_token_id
            logits[row, 0, token] = 20.0
        out.logits = logits
        return out


def byte_tokens(tokenizer, text: str) -> list[int]:
    """One token per character (the byte-level alphabet), so ':' and '\\n' are tokens of their own."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    table = bytes_to_unicode()
    ids = [tokenizer.convert_tokens_to_ids(table[b]) for b in text.encode("utf-8")]
    assert tokenizer.unk_token_id not in ids and None not in ids
    return ids


@pytest.fixture(scope="module")
def tiny(tiny_hf_dir, tmp_path_factory):
    import shutil

    from tiny_model import write_base_manifest

    base = tmp_path_factory.mktemp("gen") / "base"
    shutil.copytree(tiny_hf_dir, base)
    write_base_manifest(base)
    return load_model(base, FP32), load_tokenizer(base), base


@pytest.fixture(scope="module")
def chaotic(tiny):
    """The tiny model with large random weights: its greedy output varies from prompt to prompt (the plain
    tiny model repeats one token), so rows stop at different steps."""
    _, tokenizer, base = tiny
    model = load_model(base, FP32)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.normal_(0, 0.5)
    return model, tokenizer


@pytest.fixture(scope="module")
def scripted(tiny):
    _, tokenizer, base = tiny
    model = ScriptedLlama.from_pretrained(base, dtype=torch.float32).eval()
    return model, tokenizer


def run_script(scripted, script: list[int], prompt: str = "Instruction: Give a ratio.\nResponse:", *,
               max_new_tokens: int = 64, engine=generate, samples_per_prompt: int = 1, stops=STOPS):
    model, tokenizer = scripted
    model.script = script
    model.prompt_len = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    settings = settings_for(max_new_tokens=max_new_tokens, temperature=0.0, repetition_penalty=1.3, batch_size=4)
    return engine(model, tokenizer, [prompt], settings, stop_strings=stops, samples_per_prompt=samples_per_prompt)[0]


# --- stopping by string ----------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", [generate, generate_with_hf], ids=["slot-decoder", "hf-generate"])
def test_colons_do_not_stop_generation_only_whole_stop_strings_do(scripted, engine):
    """Every stop string ends in ':' (or '#'); the original code stopped on those last tokens, so answers ended
    at the first colon. Here ':' is its own token and appears five times before the real stop."""
    _, tokenizer = scripted
    text = " Ratio 3:1 is common: Q: and A: stay.\nQ: next"
    script = byte_tokens(tokenizer, text)
    (sample,) = run_script(scripted, script, engine=engine)
    assert sample.text == " Ratio 3:1 is common: Q: and A: stay.\nQ:"
    assert sample.n_tokens == len(byte_tokens(tokenizer, sample.text))
    assert not sample.hit_token_limit
    assert clean(sample.text, "###", sample.hit_token_limit).text == "Ratio 3:1 is common: Q: and A: stay."


@pytest.mark.parametrize("engine", [generate, generate_with_hf], ids=["slot-decoder", "hf-generate"])
def test_delimiter_spread_over_tokens_stops_and_eos_ends_cleanly(scripted, engine):
    _, tokenizer = scripted
    (sample,) = run_script(scripted, byte_tokens(tokenizer, " 10:30 works.\n###\nInstruction: more"), engine=engine)
    assert sample.text == " 10:30 works.\n###" and not sample.hit_token_limit
    # No stop string at all: the script runs out and EOS ends the row; EOS is not part of the text.
    script = byte_tokens(tokenizer, " Time 9:15: fine")
    (sample,) = run_script(scripted, script, engine=engine)
    assert sample.text == " Time 9:15: fine" and sample.n_tokens == len(script) and not sample.hit_token_limit


def test_natural_tokenization_and_a_stop_on_the_last_allowed_token(scripted):
    _, tokenizer = scripted
    script = tokenizer(" Red, blue and yellow.\n###\n", add_special_tokens=False)["input_ids"]
    (full,) = run_script(scripted, script)
    assert full.text.startswith(" Red, blue and yellow.\n###")
    n = full.n_tokens
    (exact,) = run_script(scripted, script, max_new_tokens=n)  # the stop string completes on the last token
    assert exact == full and not exact.hit_token_limit
    (cut,) = run_script(scripted, script, max_new_tokens=n - 1)
    assert cut.hit_token_limit and cut.n_tokens == n - 1 and "###" not in cut.text
    assert clean(cut.text, "###", cut.hit_token_limit).text == "Red, blue and yellow."


def test_stop_checker_finds_strings_across_token_boundaries(tiny):
    _, tokenizer, _ = tiny
    checker = StopChecker(tokenizer, STOPS)
    rows = [byte_tokens(tokenizer, t) for t in ("a 3:1", "x\nQ", "x\nQ:", "ok\n#", "ok\n###", "Instruction: x")]
    assert checker.hits(rows) == [False, False, True, False, True, False]
    long_row = byte_tokens(tokenizer, "word " * 40 + "\nInstruction:")
    assert checker.hits([long_row]) == [True]


def test_hf_stop_string_criteria_do_not_fire_on_a_colon(tiny):
    """The fallback path's stopping criterion, called on token sequences directly."""
    from transformers.generation.stopping_criteria import StopStringCriteria

    _, tokenizer, _ = tiny
    criteria = StopStringCriteria(tokenizer, STOPS)
    seqs = [" Ratio 3:", " Ratio 3:1", "x\nQ:", "end\n###"]
    ids = [byte_tokens(tokenizer, s) for s in seqs]
    width = max(map(len, ids))
    batch = torch.tensor([[tokenizer.pad_token_id] * (width - len(i)) + i for i in ids])
    assert criteria(batch, None).tolist() == [False, False, True, True]


# --- the slot decoder is generate(), only faster ----------------------------------------------------------


def _prompts(tokenizer):
    shots = [Shot("Name three primary colours.", "Red, blue and yellow."),
             Shot("Explain why the sky is blue in one sentence.", "Air scatters blue light more than red.")]
    base = ["Write a haiku about the sea.", "What is the capital of France?", "List three fruits.",
            "Name a dog.", "the quick brown fox", "Give me a title in double angular brackets.", "Say yes."]
    return [few_shot_prompt(p, shots[: i % 3], "###") for i, p in enumerate(base)]


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_slot_decoder_matches_hf_generate_greedy(chaotic, penalty):
    """Same tokens as Hugging Face's generate, one prompt at a time, while rows finish at different steps
    (single-letter stop strings), slots are refilled and the batch shrinks at the end."""
    model, tokenizer = chaotic
    assert supports_slot_decoding(model)
    prompts = _prompts(tokenizer)
    settings = settings_for(max_new_tokens=24, temperature=0.0, repetition_penalty=penalty, batch_size=3)
    # Letters that no special token's text contains: Hugging Face matches stop strings against special tokens'
    # text too ("<|im_end|>" holds an "e"), while our text, like the stored one, skips special tokens.
    stops = ["o", "y", "\nQ:"]
    ours = generate(model, tokenizer, prompts, settings, stop_strings=stops)
    reference = [generate_with_hf(model, tokenizer, [p], settings, stop_strings=stops)[0] for p in prompts]
    assert ours == reference
    lengths = {s[0].n_tokens for s in ours}
    assert len(lengths) > 2, "rows should finish at different steps for this test to mean anything"


def test_shared_prompt_prefixes_are_computed_once_and_released(chaotic):
    model, tokenizer = chaotic
    prompts = _prompts(tokenizer)
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    settings = settings_for(max_new_tokens=8, temperature=0.0, batch_size=2)
    decoder = SlotDecoder(model, tokenizer, prompts, encoded, settings, STOPS, 1)
    shared = decoder.run("test")
    assert decoder.prefill_tokens < sum(map(len, encoded)) - 20  # the few-shot examples ran once
    assert decoder.prefixes == {}  # nothing is held once every prompt is in
    assert shared == [generate_with_hf(model, tokenizer, [p], settings, stop_strings=STOPS)[0] for p in prompts]


def test_prompts_are_prefilled_together_with_and_without_a_stored_prefix(chaotic):
    """Prompts run several to a forward pass, left-padded, some continuing from a stored few-shot prefix and some
    from nothing in the same pass, and decode exactly as Hugging Face's generate does one prompt at a time."""
    model, tokenizer = chaotic
    colours = [Shot("Name three primary colours.", "Red, blue and yellow."),
               Shot("Explain why the sky is blue in one sentence.", "Air scatters blue light more than red.")]
    cities = [Shot("What is the capital of Italy?", "Rome."), Shot("Which city hosts the Louvre?", "Paris.")]
    questions = ["Write a haiku about the sea.", "What is the capital of France?", "List three fruits."]
    # Two sets of prompts, each sharing two examples: whichever set comes first in token order, the other's first
    # prompt, which has nothing stored, runs beside the first set's later prompts, which continue from theirs.
    prompts = [few_shot_prompt(q, shots, "###") for shots in (colours, cities) for q in questions]
    prompts.append("Q: the quick brown fox")
    passes = []  # per prompt pass: for each row, (tokens already cached, new tokens)

    def record(module, args, kwargs):
        ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
        if ids.shape[1] > 1:
            past = mask.shape[1] - ids.shape[1]
            passes.append([(int(m[:past].sum()), int(m[past:].sum())) for m in mask])

    hook = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        settings = settings_for(max_new_tokens=12, temperature=0.0, repetition_penalty=1.3, batch_size=len(prompts))
        ours = generate(model, tokenizer, prompts, settings, stop_strings=STOPS)
    finally:
        hook.remove()
    assert ours == [generate_with_hf(model, tokenizer, [p], settings, stop_strings=STOPS)[0] for p in prompts]
    assert len(passes) < len(prompts) and max(map(len, passes)) >= 2
    mixed = [rows for rows in passes if len({cached > 0 for cached, _ in rows}) == 2]
    assert mixed, f"no pass mixed rows with and without a stored prefix: {passes}"
    new_tokens = sum(n for rows in passes for _, n in rows)
    assert new_tokens < sum(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts) - 20


@pytest.mark.parametrize("decoder", [generate, generate_with_hf], ids=["slot decoder", "hugging face"])
def test_a_frozen_model_prefills_prompts_together_without_copying_its_output_layer_per_row(tiny, decoder):
    """A merged adapter leaves every weight frozen, and then torch.matmul multiplies the prefill's last positions
    (a strided slice) by a bf16 output layer as a batched product that copies the weight once per row: 8.3 GB
    for 157 prompts of the default model. No allocation while decoding may come near that."""
    _, tokenizer, base = tiny
    model = load_model(base, resolve_precision("bfloat16")).requires_grad_(False)
    prompts = [f"Question {i}: name {i} colours, one a line.\nAnswer:" for i in range(16)]
    settings = settings_for(max_new_tokens=2, temperature=0.0, batch_size=len(prompts))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        samples = decoder(model, tokenizer, prompts, settings, stop_strings=STOPS)
    head = model.get_output_embeddings().weight
    largest = max(event.self_cpu_memory_usage for event in prof.events())
    per_row_copy = len(prompts) * head.numel() * head.element_size()
    assert largest < per_row_copy / 2, f"an allocation of {largest} bytes (the head once per row: {per_row_copy})"
    assert [len(per_prompt) for per_prompt in samples] == [1] * len(prompts)


def test_slot_decoder_works_through_a_peft_adapter(tiny):
    from peft import LoraConfig, get_peft_model

    model, tokenizer, base = tiny
    fresh = load_model(base, FP32)
    lora = get_peft_model(fresh, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.eval()
    prompts = _prompts(tokenizer)[:4]
    settings = settings_for(max_new_tokens=12, temperature=0.0, batch_size=2)
    ours = generate(lora, tokenizer, prompts, settings, stop_strings=STOPS)
    reference = [generate_with_hf(lora, tokenizer, [p], settings, stop_strings=STOPS)[0] for p in prompts]
    assert ours == reference
    assert ours != generate(model, tokenizer, prompts, settings, stop_strings=STOPS)  # the adapter is in use


def test_sampling_is_per_row_reproducible_and_independent_of_batching(tiny):
    model, tokenizer, _ = tiny
    prompts = _prompts(tokenizer)
    settings = settings_for(max_new_tokens=16, temperature=0.8, top_p=0.9, repetition_penalty=1.1,
                            batch_size=6, seed=7)
    a = generate(model, tokenizer, prompts, settings, stop_strings=STOPS, samples_per_prompt=3)
    assert a == generate(model, tokenizer, prompts, settings, stop_strings=STOPS, samples_per_prompt=3)
    small = GenerationSettings(**{**settings.__dict__, "batch_size": 3})
    assert a == generate(model, tokenizer, prompts, small, stop_strings=STOPS, samples_per_prompt=3)
    # One prompt alone, as a stored generation_prompt would be regenerated, gives the same samples.
    assert generate(model, tokenizer, [prompts[4]], settings, stop_strings=STOPS, samples_per_prompt=3)[0] == a[4]
    assert len({s.text for s in a[0]}) > 1  # the k samples of a prompt differ
    other = generate(model, tokenizer, prompts, GenerationSettings(**{**settings.__dict__, "seed": 8}),
                     stop_strings=STOPS, samples_per_prompt=3)
    assert other != a
    assert row_seed(7, "p", 0) == row_seed(7, "p", 0) != row_seed(7, "p", 1)


def test_sample_offset_continues_a_run_with_new_draws(tiny):
    """Drawing 2 samples, then 2 more with sample_offset=2, gives the 4 samples of one call asking for 4: an
    adaptive best-of-k can sample again without repeating an earlier draw."""
    model, tokenizer, _ = tiny
    prompts = _prompts(tokenizer)[:4]
    settings = settings_for(max_new_tokens=12, temperature=0.9, top_p=0.95, batch_size=5, seed=3)
    four = generate(model, tokenizer, prompts, settings, stop_strings=STOPS, samples_per_prompt=4)
    first = generate(model, tokenizer, prompts, settings, stop_strings=STOPS, samples_per_prompt=2)
    more = generate(model, tokenizer, prompts, settings, stop_strings=STOPS, samples_per_prompt=2, sample_offset=2)
    assert [a + b for a, b in zip(first, more)] == four
    assert first != more  # new draws, not the first ones again
    with pytest.raises(ValueError):
        generate(model, tokenizer, prompts, settings, sample_offset=-1)


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_decode_attention_matches_sdpa_for_one_new_token(dtype, tolerance):
    """Grouped query heads (9 over 3 key/value heads, as SmolLM2) and rows of different lengths (the mask)."""
    from types import SimpleNamespace

    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    gen = torch.Generator().manual_seed(0)
    rows, width = 5, 40
    query = torch.randn(rows, 9, 1, 16, generator=gen).to(dtype)
    key, value = (torch.randn(rows, 3, width, 16, generator=gen).to(dtype) for _ in range(2))
    lengths = torch.tensor([40, 1, 17, 33, 8])
    mask = (torch.arange(width) < lengths[:, None])[:, None, None, :]
    module = SimpleNamespace(num_key_value_groups=3, is_causal=True)
    ours, _ = decode_attention(module, query, key, value, mask, scaling=0.25)
    reference, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.25)
    assert ours.shape == reference.shape == (rows, 1, 9, 16)
    assert (ours.float() - reference.float()).abs().max() < tolerance


def test_decode_attention_is_used_in_bf16_and_restored_after(tiny, monkeypatch):
    import stages.lib.decode_attention as attention_module

    _, tokenizer, base = tiny
    query_lengths = []

    def spy(module, query, *args, **kwargs):
        query_lengths.append(query.shape[2])
        return decode_attention(module, query, *args, **kwargs)

    monkeypatch.setattr(attention_module, "decode_attention", spy)
    prompts = _prompts(tokenizer)[:3]
    settings = settings_for(max_new_tokens=6, batch_size=2)
    fp32 = load_model(base, FP32)
    generate(fp32, tokenizer, prompts, settings)
    assert query_lengths == []  # fp32 keeps torch's kernel
    bf16 = load_model(base, resolve_precision("bfloat16"))
    out = generate(bf16, tokenizer, prompts, settings)
    assert 1 in query_lengths and max(query_lengths) > 1  # decoding steps and prompts both went through it
    assert bf16.config._attn_implementation == "sdpa" != DECODE_ATTENTION
    assert all(s[0].n_tokens == 6 for s in out)


def test_slot_decoder_with_decode_attention_matches_hf_generate(chaotic, monkeypatch):
    """The whole-buffer cache and decode_attention, forced on in fp32, give Hugging Face's tokens."""
    import stages.lib.decode_attention as attention_module

    monkeypatch.setattr(attention_module, "DECODE_ATTENTION_DTYPES", (torch.float32,))
    model, tokenizer = chaotic
    prompts = _prompts(tokenizer)
    settings = settings_for(max_new_tokens=16, temperature=0.0, repetition_penalty=1.3, batch_size=3)
    stops = ["o", "y", "\nQ:"]
    ours = generate(model, tokenizer, prompts, settings, stop_strings=stops)
    assert ours == [generate_with_hf(model, tokenizer, [p], settings, stop_strings=stops)[0] for p in prompts]


def test_generate_edge_cases(tiny):
    model, tokenizer, _ = tiny
    settings = settings_for(max_new_tokens=5, batch_size=4)
    assert generate(model, tokenizer, [], settings) == []
    out = generate(model, tokenizer, ["Q: hi", "Q: hello there"], settings, samples_per_prompt=3)
    assert [len(s) for s in out] == [3, 3]
    assert all(s.n_tokens <= 5 for per in out for s in per)
    with pytest.raises(ValueError):
        generate(model, tokenizer, [""], settings)


# --- choosing tokens ------------------------------------------------------------------------------------------


def _reference_top_p(logits, temperature, top_p, u):
    probs = torch.softmax(logits / temperature, -1)
    sorted_p, ids = probs.sort(descending=True)
    before = sorted_p.cumsum(-1) - sorted_p
    kept = torch.where(before < top_p, sorted_p, torch.zeros_like(sorted_p))
    kept[0] = sorted_p[0]
    cdf = kept.cumsum(-1) / kept.sum()
    return int(ids[int((cdf > u).nonzero()[0])])


def test_nucleus_sampling_matches_a_plain_sort_based_reference():
    gen = torch.Generator().manual_seed(0)
    # peaked (top 64), flatter (top 1024), flat (full sort), and a vocabulary smaller than 64
    for vocab, scale in [(3000, 6.0), (3000, 2.5), (3000, 1.5), (3000, 0.01), (50, 1.0)]:
        logits = torch.randn(16, vocab, generator=gen) * scale
        u = torch.rand(16, generator=gen)
        got = nucleus_sample(logits, 0.7, 0.9, u).tolist()
        assert got == [_reference_top_p(logits[i], 0.7, 0.9, float(u[i])) for i in range(16)]


def test_nucleus_sampling_small_cases():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    # top_p 0.7 keeps {0, 1} (mass before token 2 is 0.8); renormalised CDF is [0.625, 1.0]
    assert nucleus_sample(logits, 1.0, 0.7, torch.tensor([0.6])).tolist() == [0]
    assert nucleus_sample(logits, 1.0, 0.7, torch.tensor([0.99])).tolist() == [1]
    assert nucleus_sample(logits, 1.0, 0.01, torch.tensor([0.99])).tolist() == [0]
    assert nucleus_sample(logits, 1.0, 1.0, torch.tensor([0.95])).tolist() == [2]


def test_repetition_penalty_matches_hugging_face():
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    logits = torch.randn(3, 40, generator=torch.Generator().manual_seed(1))
    history = torch.tensor([[1, 2, 2, 5], [0, 0, 0, 0], [39, 7, 1, 1]])
    expected = RepetitionPenaltyLogitsProcessor(1.3)(history, logits.clone())
    assert torch.equal(apply_repetition_penalty(logits, history, 1.3), expected)


# --- cleaning ----------------------------------------------------------------------------------------------


def test_colon_inside_an_answer_survives_cleaning():
    for text in ("Ratio 3:1 is common", "Meet at 10:30: bring water.", "Note: Q: is not a new turn here"):
        cleaned = clean(text, "###", False)
        assert cleaned.text == text and not cleaned.ran_on and not cleaned.truncated
        assert is_valid(cleaned, "###")


def test_cut_at_the_delimiter():
    cleaned = clean(" Paris is the capital.\n###\n\nInstruction: Name a river.\nResponse: Seine", "###", False)
    assert cleaned.text == "Paris is the capital." and cleaned.had_delimiter and not cleaned.truncated
    assert clean("Yes ### no", "###", True).text == "Yes"
    assert clean("Yes\n<END>more", "<END>", False).text == "Yes"


@pytest.mark.parametrize("raw", [
    "Paris.\nInstruction: Name a river.\nResponse: Seine",
    "Paris.\nQ: And Spain?",
    "Paris.\nResponse: again",
    "Paris.\nQuestion: why?",
])
def test_cut_at_a_run_on_into_a_next_turn(raw):
    cleaned = clean(raw, "###", True)
    assert cleaned.text == "Paris." and cleaned.ran_on and not cleaned.truncated


def test_partial_delimiter_at_the_end_is_stripped_but_content_is_not():
    assert clean("Answer.\n##", "###", True) == clean("Answer.\n##", "###", True)
    cleaned = clean("Answer.\n##", "###", True)
    assert cleaned.text == "Answer." and not cleaned.truncated  # it had finished and was writing the delimiter
    assert clean("Answer.\n#", "###", False).text == "Answer."
    assert clean("I like C#", "###", False).text == "I like C#"  # a '#' that is content stays
    assert clean("Answer.\nInstruc", "###", True).text == "Answer."
    assert clean("Colours:\nRed", "###", True).text == "Colours:\nRed"


def test_truncation_is_flagged_only_when_the_token_limit_was_hit():
    assert clean("An answer cut mid", "###", True).truncated
    assert not clean("An answer cut mid", "###", False).truncated
    assert not clean("Done.\n###", "###", True).truncated
    assert not clean("Done.\nQ: next", "###", True).truncated


def test_residue_makes_a_response_invalid():
    assert not is_valid(clean("", "###", False), "###")
    assert not is_valid(clean("###", "###", False), "###")
    assert not is_valid(clean("see Instruction: above", "###", False), "###")
    assert is_valid(clean("A fine answer.", "###", False), "###")


def test_project_stop_strings_are_whole_strings():
    assert stop_strings("###") == ["###", "\nInstruction:", "\nQ:", "\nResponse:", "\nQuestion:"]
