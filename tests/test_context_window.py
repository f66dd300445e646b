"""Prompts that leave no room in the model's context for the answer are refused, counted and named,
before generation starts."""
import pytest

from stages.lib.context_window import check_prompts_fit, context_length
from stages.lib.errors import UserError
from stages.lib.hardware import resolve_precision
from stages.lib.loader import encode, load_model, load_tokenizer


@pytest.fixture()
def tiny(tiny_base):
    return load_model(tiny_base, resolve_precision("float32")), load_tokenizer(tiny_base)


def test_the_context_comes_from_the_model_config(tiny):
    model, _ = tiny
    assert context_length(model) == model.config.max_position_embeddings == 2048


def test_prompts_that_fit_pass(tiny):
    model, tokenizer = tiny
    check_prompts_fit(model, tokenizer, ["Instruction: Name a colour.\nResponse:"], 128,
                      budget_key="evaluate.max_new_tokens", source="eval.jsonl")


def test_over_long_prompts_are_counted_and_named(tiny):
    model, tokenizer = tiny
    short = "Instruction: Name a colour.\nResponse:"
    long = "Instruction: " + "Describe the harbour at dawn. " * 200 + "\nResponse:"
    n_long = len(encode(tokenizer, [long])[0])
    assert n_long > 2048 - 128
    with pytest.raises(UserError) as err:
        check_prompts_fit(model, tokenizer, [short, long, short, long + " again"], 128,
                          budget_key="evaluate.max_new_tokens", source="data/eval.jsonl", keys=["a", "b", "c", "d"])
    message = str(err.value)
    assert message.startswith("data/eval.jsonl: 2 of 4 prompts do not fit the model's context of 2048 tokens")
    assert "evaluate.max_new_tokens=128 (at most 1920 prompt tokens); keys b, d; the longest, key d, has" in message


def test_a_budget_larger_than_the_context_names_the_key(tiny):
    model, tokenizer = tiny
    with pytest.raises(UserError, match="generate_sft.max_new_tokens=4096 does not fit the model's context of 2048"):
        check_prompts_fit(model, tokenizer, ["x"], 4096, budget_key="generate_sft.max_new_tokens", source="train.jsonl")
