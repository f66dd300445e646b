"""Self-instruct for tasks: show the base model a numbered list of existing tasks and let it continue the
list, then keep the new items that look like real, new tasks.

A base model continues text rather than following requests, so the prompt is a list that stops at the
next number ("...\\n9."); whatever the model writes right after that number is item 9. Parsing keeps that
first item (the original self-instruct code dropped it, wasting a sixth of the yield), stops where the
list stops, and filters meta-text and near-duplicates of tasks we already have.

The model call lives in stages/make_instructions.py (model_generate_fn, on stages/lib/generation.py);
everything here takes generated strings as input.
"""
from __future__ import annotations

import random
import re
from collections import defaultdict
from typing import Callable, Iterable, Optional, Sequence

from .near_duplicates import near_duplicate_pairs, normalise
from .errors import UserError
from .params import MakeInstructionsParams
from .records import Task

LIST_HEADER = "A numbered list of short, varied requests that people send to a helpful assistant, one per line:"

# prompts -> one continuation per prompt (the generated text only, without the prompt)
GenerateFn = Callable[[list[str]], list[str]]

_ITEM = re.compile(r"^\s*(\d+)\s*[.)]\s*(.*)$")
_META_START = re.compile(
    r"^(here are|here is|here's|sure|certainly|of course|okay|ok\b|note\b|instruction:|response:|task:|"
    r"answer:|output:|input:|example:|the following|below are|i hope|i can|as an ai)",
    re.IGNORECASE,
)
# Items talking about the list rather than asking for something: "What is the next item in this list?"
_ABOUT_LIST = re.compile(
    r"\b(this|the above|above|these|previous|numbered)\s+(list|items?|tasks?|requests?|examples?|entries|lines)\b"
    r"|\b(following|next|more|other)\s+(tasks|requests|examples|entries)\b",
    re.IGNORECASE,
)
MIN_WORDS = 4
MAX_WORDS = 60


def build_list_prompt(texts: Sequence[str], header: str = LIST_HEADER) -> str:
    """The header, ``texts`` numbered from 1, and the next number with nothing after it ("\\n9.")."""
    if not texts:
        raise ValueError("build_list_prompt needs at least one example task")
    lines = [header] + [f"{i}. {' '.join(t.split())}" for i, t in enumerate(texts, start=1)]
    return "\n".join(lines) + f"\n{len(texts) + 1}."


def _keep(item: str) -> bool:
    """Whether a parsed item looks like a task: long enough, not chatter, not about the list itself."""
    n_words = len(item.split())
    if n_words < MIN_WORDS or n_words > MAX_WORDS:
        return False
    if _META_START.match(item) or "instruction:" in item.lower() or "response:" in item.lower():
        return False
    return not _ABOUT_LIST.search(item)


def parse_numbered_list(generated_text: str, first_number: int) -> list[str]:
    """Items of a list continuation whose first item's number (``first_number``) ended the prompt.

    The text before the first newline is item ``first_number``. Later items must be numbered
    consecutively; the list ends at the first non-blank line that is not the next item (prose, a new
    list starting again at 1, a repeated number). Items failing the filters are dropped, not fatal; exact
    duplicates (after normalisation) are kept once."""
    lines = generated_text.split("\n")
    raw = [lines[0].strip()]
    expected = first_number + 1
    for line in lines[1:]:
        if not line.strip():
            continue
        match = _ITEM.match(line)
        if not match or int(match.group(1)) != expected:
            break
        raw.append(match.group(2).strip())
        expected += 1
    items, seen = [], set()
    for item in raw:
        item = " ".join(item.split())
        key = normalise(item)
        if item and _keep(item) and key not in seen:
            seen.add(key)
            items.append(item)
    return items


def propose_tasks(
    texts_from_model: Iterable[str],
    existing_tasks: Sequence[Task],
    *,
    category: str,
    first_number: int,
    threshold: float,
    id_prefix: str = "si",
    start_index: int = 1,
    limit: Optional[int] = None,
) -> list[Task]:
    """New Task records from model continuations: parsed, then filtered against near-duplicates of the
    existing tasks and of each other. Ids are ``{id_prefix}-{n:03d}`` counting from ``start_index``."""
    known = [t.text for t in existing_tasks]
    new: list[Task] = []
    for text in texts_from_model:
        for item in parse_numbered_list(text, first_number):
            if limit is not None and len(new) >= limit:
                return new
            if near_duplicate_pairs([item], known, threshold):
                continue
            new.append(Task(task_id=f"{id_prefix}-{start_index + len(new):03d}", category=category, text=item))
            known.append(item)
    return new


def build_prompts(existing: Sequence[Task], rng: random.Random, n_shots: int = 8) -> list[tuple[str, str, int]]:
    """One (category, prompt, first_number) per category: ``n_shots`` random tasks of that category as the
    list, so the continuation stays in the category and can be labelled with it."""
    by_cat: dict[str, list[str]] = defaultdict(list)
    for task in existing:
        by_cat[task.category].append(task.text)
    prompts = []
    for cat in sorted(by_cat):
        shots = rng.sample(by_cat[cat], min(n_shots, len(by_cat[cat])))
        prompts.append((cat, build_list_prompt(shots), len(shots) + 1))
    return prompts


def generate_candidate_tasks(
    params: MakeInstructionsParams,
    count: int,
    *,
    existing: Sequence[Task] = (),
    generate_fn: Optional[GenerateFn] = None,
    max_rounds: int = 20,
) -> list[Task]:
    """Up to ``count`` new tasks proposed by the base model (hook for stages/make_instructions.py).

    ``generate_fn`` maps prompts to continuations (the stage passes one on the base model). Without it this
    is a UserError, so self_instruct_count > 0 cannot silently fall back to curated tasks only. Every
    proposal is checked against ``existing`` (pass every curated task, eval pool included, so no proposal
    near-duplicates an eval task) and against the proposals kept before it."""
    if count <= 0:
        return []
    if generate_fn is None:
        raise UserError(
            "make_instructions.self_instruct_count > 0 but no model was given to propose tasks; "
            "set self_instruct_count: 0 or pass generate_fn"
        )
    if not existing:
        raise UserError("self-instruct needs existing tasks to show the model as examples")
    rng = random.Random(f"self-instruct:{params.seed}")
    found: list[Task] = []
    for _ in range(max_rounds):
        prompts = build_prompts(existing, rng)
        outputs = generate_fn([p for _, p, _ in prompts])
        if len(outputs) != len(prompts):
            raise UserError(f"generate_fn returned {len(outputs)} texts for {len(prompts)} prompts")
        for (cat, _, first), text in zip(prompts, outputs):
            found += propose_tasks(
                [text], list(existing) + found, category=cat, first_number=first,
                threshold=params.near_duplicate_threshold, start_index=len(found) + 1, limit=count - len(found),
            )
        if len(found) >= count:
            break
    return found[:count]
