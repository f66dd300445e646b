"""The routes by which generate_sft turns train instructions into verified SFT examples.

1. Adaptive best-of-k (``sample_until_pass``): every instruction gets ``samples_per_prompt`` samples; those
   with no passing sample get as many more, round after round, until one passes or ``max_samples_per_prompt``
   samples were drawn.
2. Critique and revise (``revise_failures``): the base model rewrites its best failing draft, shown the
   checker's findings and worked revisions; a revision is kept only if it passes, checked like any sample.
3. Constraint back-translation (``backtranslate_failures``): the best finished response is kept with an
   instruction made of the constraints it already satisfies.

"Passes" always means the same thing (``passes``): a valid, finished response that meets every one of its
instruction's constraints strictly. Models are reached only through a ``Sampler``, so the routes can be
tested with any function that returns samples.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence

from . import checkers
from .backtranslate import backtranslate
from .cleaning import Cleaned, clean, is_valid
from .constraint_schema import ConstraintConfig
from .findings import findings
from .generation import Sample
from .negatives import is_refusal
from .prompts import REVISION_MARKERS, NEXT_TURN_MARKERS, RevisionShot, revision_prompt
from .records import Instruction, Task
from .revision import pick_revision_shots

# (prompts, seed, samples per prompt) -> samples per prompt; one call per round, each with its own seed.
Sampler = Callable[[list[str], int, int], list[list[Sample]]]


@dataclass(frozen=True)
class Attempt:
    """One response drawn for an instruction, cleaned and checked against that instruction."""

    text: str
    cleaned: Cleaned
    valid: bool
    score: checkers.Score
    n_tokens: int
    prompt: str  # the exact prompt that produced it
    seed: int  # the seed of the call that drew it
    index: int  # its sample index within that call

    @property
    def finished(self) -> bool:
        return self.valid and not self.cleaned.truncated

    @property
    def passes(self) -> bool:
        return self.finished and self.score.prompt_strict and not is_refusal(self.cleaned.text)


def check(sample: Sample, instr: Instruction, prompt: str, seed: int, index: int, delimiter: str,
          markers: tuple[str, ...] = NEXT_TURN_MARKERS) -> Attempt:
    cleaned = clean(sample.text, delimiter, sample.hit_token_limit, markers)
    return Attempt(sample.text, cleaned, is_valid(cleaned, delimiter),
                   checkers.score(cleaned.text, instr.instruction_id_list, instr.kwargs, instr.prompt),
                   sample.n_tokens, prompt, seed, index)


def rank_key(a: Attempt):
    """Best first: passing, then more constraints met strictly, then loosely, finished over truncated, earliest."""
    loose = sum(a.score.loose) / len(a.score.loose) if a.score.loose else 1.0
    return (not a.passes, not a.valid, -a.score.strict_fraction, -loose, a.cleaned.truncated)


def best(attempts: Sequence[Attempt]) -> Optional[Attempt]:
    """The first passing attempt if any (an unbiased draw among passing ones), else the closest miss."""
    return min(attempts, key=rank_key) if attempts else None  # min is stable: earliest among equals


# --- 1. adaptive best-of-k ------------------------------------------------------------------------------


def round_seed(seed: int, round_index: int) -> int:
    """Each round draws with its own seed, so a later round never repeats an earlier round's samples."""
    return seed * 1000 + round_index


def sample_until_pass(sampler: Sampler, instructions: list[Instruction], prompts: list[str], samples_per_prompt: int,
                      max_samples_per_prompt: int, seed: int, delimiter: str) -> list[list[Attempt]]:
    """All attempts per instruction. Sampling stops for an instruction as soon as one attempt passes."""
    attempts: list[list[Attempt]] = [[] for _ in instructions]
    pending = list(range(len(instructions)))
    round_index = 0
    while pending and round_index * samples_per_prompt < max_samples_per_prompt:
        n = min(samples_per_prompt, max_samples_per_prompt - round_index * samples_per_prompt)
        call_seed = round_seed(seed, round_index)
        samples = sampler([prompts[i] for i in pending], call_seed, n)
        for i, drawn in zip(pending, samples):
            attempts[i] += [check(s, instructions[i], prompts[i], call_seed, j, delimiter) for j, s in enumerate(drawn)]
        pending = [i for i in pending if not any(a.passes for a in attempts[i])]
        round_index += 1
    return attempts


def passing_by_samples(attempts: list[list[Attempt]], samples_per_prompt: int,
                       max_samples_per_prompt: int) -> dict[str, float]:
    """Share of instructions with a passing attempt among their first n samples, for n = samples_per_prompt,
    twice that, ... up to max_samples_per_prompt."""
    out = {}
    n = samples_per_prompt
    while True:
        n = min(n, max_samples_per_prompt)
        share = sum(any(a.passes for a in per[:n]) for per in attempts) / len(attempts) if attempts else 0.0
        out[str(n)] = round(share, 4)
        if n >= max_samples_per_prompt:
            return out
        n += samples_per_prompt


# --- 2. critique and revise ------------------------------------------------------------------------------


def revise_failures(sampler: Sampler, instructions: list[Instruction], drafts: list[Optional[Attempt]],
                    shots: list[RevisionShot], n_shots: int, samples: int, rounds: int, seed: int,
                    delimiter: str) -> list[list[Attempt]]:
    """Revision attempts per instruction whose draft fails (empty for the others). Each round revises the
    current best draft; a revision that passes ends that instruction's revising."""
    rng = random.Random(f"revise:{seed}")
    attempts: list[list[Attempt]] = [[] for _ in instructions]
    current = list(drafts)
    for round_index in range(rounds):
        todo = [i for i, d in enumerate(current) if d is not None and d.valid and not d.passes
                and not any(a.passes for a in attempts[i])]
        if not todo:
            break
        prompts = []
        for i in todo:
            instr, draft = instructions[i], current[i]
            problems = findings(draft.cleaned.text, instr.instruction_id_list, instr.kwargs)
            failing = [iid for iid, ok in zip(instr.instruction_id_list, draft.score.strict) if not ok]
            chosen = pick_revision_shots(shots, n_shots, instr.prompt, failing, rng)
            prompts.append(revision_prompt(instr.prompt, draft.cleaned.text, problems or ["It is unfinished."],
                                           chosen, delimiter))
        call_seed = round_seed(seed, 500 + round_index)  # never a sampling round's seed
        revised = sampler(prompts, call_seed, samples)
        for i, prompt, drawn in zip(todo, prompts, revised):
            new = [check(s, instructions[i], prompt, call_seed, j, delimiter, NEXT_TURN_MARKERS + REVISION_MARKERS)
                   for j, s in enumerate(drawn)]
            attempts[i] += new
            candidate = best(new)
            if candidate is not None and candidate.valid and rank_key(candidate) < rank_key(current[i]):
                current[i] = candidate
    return attempts


# --- 3. back-translation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backtranslated:
    instruction: Instruction  # the rewritten instruction the response obeys
    attempt: Attempt  # the response, as drawn for the original instruction


def backtranslate_failures(instructions: list[Instruction], drafts: list[Optional[Attempt]],
                           config: ConstraintConfig, max_constraints: int,
                           seed: int) -> list[Optional[Backtranslated]]:
    """For each instruction whose best attempt fails but is a finished answer, the response with an
    instruction it obeys; None where no constraint fits or there is no finished answer."""
    out: list[Optional[Backtranslated]] = []
    for instr, draft in zip(instructions, drafts):
        task = Task(task_id=instr.task_id, category=instr.category, text=instr.task) \
            if instr.task_id and instr.task else None
        if draft is None or draft.passes or not draft.finished or task is None or is_refusal(draft.cleaned.text):
            out.append(None)
            continue
        rng = random.Random(f"backtranslate:{seed}:{instr.key}")
        made = backtranslate(task, draft.cleaned.text, config, rng, max_constraints)
        if made is None:
            out.append(None)
            continue
        prompt, ids, kwargs = made
        new = instr.model_copy(update={"prompt": prompt, "instruction_id_list": ids, "kwargs": kwargs})
        # checked again against the new constraints, like every record, before it may be kept
        rescored = replace(draft, score=checkers.score(draft.cleaned.text, ids, kwargs, prompt))
        out.append(Backtranslated(new, rescored) if rescored.passes else None)
    return out
