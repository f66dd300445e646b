"""Turn curated tasks into IFEval-style instructions: split tasks into train/eval pools, attach verifiable
constraints drawn from data/constraints.yaml, and guard against leakage between the pools.

Everything here is a pure function of its arguments (the caller reads the files), and every random
choice comes from a ``random.Random`` seeded by the caller, so the same seed gives the same records.
"""
from __future__ import annotations

import difflib
import json
import random
import re
import string
from collections import defaultdict
from typing import Any, Iterable, Mapping, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import UserError
from .records import Instruction, Task

# ---------------------------------------------------------------------------------------------------
# constraints.yaml schema


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskWordsSpec(_Strict):
    """Words taken from the task's own text: a natural answer tends to use them, so a small model can
    satisfy "include the word X" without going off topic."""

    k: int = Field(1, ge=1)
    min_length: int = Field(4, ge=1)
    fallback: list[str] = Field(min_length=1)


class KwargSpec(_Strict):
    """How one kwarg is drawn. Exactly one way must be given."""

    choices: Optional[list[Any]] = Field(None, min_length=1)
    range: Optional[tuple[int, int]] = None
    sample: Optional[list[str]] = Field(None, min_length=1)
    k: int = Field(1, ge=1, description="how many distinct words `sample` draws")
    task_word: Optional[TaskWordsSpec] = None
    task_words: Optional[TaskWordsSpec] = None
    task_text: bool = False
    depends_on: Optional[str] = None
    cases: Optional[dict[str, "KwargSpec"]] = None

    @model_validator(mode="after")
    def _one_way(self):
        ways = [
            name
            for name in ("choices", "range", "sample", "task_word", "task_words", "cases")
            if getattr(self, name) is not None
        ] + (["task_text"] if self.task_text else [])
        if len(ways) != 1:
            raise ValueError(
                "give exactly one of choices, range, sample, task_word, task_words, task_text, "
                f"depends_on+cases (got {ways or 'none'})"
            )
        if (self.cases is None) != (self.depends_on is None):
            raise ValueError("depends_on and cases go together")
        if self.range is not None and self.range[0] > self.range[1]:
            raise ValueError(f"range {list(self.range)} is empty")
        if self.sample is not None and self.k > len(self.sample):
            raise ValueError(f"k={self.k} but sample has only {len(self.sample)} words")
        return self


class ConstraintSpec(_Strict):
    """One verifiable instruction id: how to phrase it, how to draw its kwargs, which tasks it suits."""

    weight: float = Field(1.0, gt=0.0)
    phrasings: list[str] = Field(min_length=1)
    kwargs: dict[str, KwargSpec] = Field(default_factory=dict)
    categories: Optional[list[str]] = Field(None, min_length=1)
    task_pattern: Optional[str] = None
    max_task_words: Optional[int] = Field(None, ge=1)
    # Render right after the task text, so "the request above" means the task and nothing else.
    render_first: bool = False


class ConstraintConfig(_Strict):
    instructions: dict[str, ConstraintSpec] = Field(min_length=1)
    conflicts: list[tuple[str, str]] = Field(default_factory=list)

    def conflict_set(self) -> set[frozenset[str]]:
        return {frozenset(pair) for pair in self.conflicts}


def _describe(err: dict) -> str:
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    return f"{key}: {err['msg']}"


def parse_constraints(raw: object, supported_ids: Iterable[str], source: str = "data/constraints.yaml") -> ConstraintConfig:
    """Validate the parsed YAML. Every problem names ``source`` and the id or key at fault, because a
    typo here would otherwise surface much later as an unscorable instruction."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping with 'instructions' (and optionally 'conflicts')")
    try:
        config = ConstraintConfig.model_validate(raw)
    except ValidationError as exc:
        lines = "\n  ".join(_describe(e) for e in exc.errors())
        raise UserError(f"{source}: invalid constraints:\n  {lines}") from None
    supported = set(supported_ids)
    for where, ids in [("instructions", list(config.instructions))] + [
        (f"conflicts[{i}]", list(pair)) for i, pair in enumerate(config.conflicts)
    ]:
        for iid in ids:
            if iid not in supported:
                raise UserError(
                    f"{source}: {where}: unknown instruction id {iid!r} (supported: {', '.join(sorted(supported))})"
                )
    for iid, spec in config.instructions.items():
        _check_spec(iid, spec, source)
    return config


def _check_spec(iid: str, spec: ConstraintSpec, source: str) -> None:
    """Catch mistakes pydantic cannot see: placeholders without a kwarg, bad regexes, dangling depends_on."""
    names = list(spec.kwargs)
    for phrasing in spec.phrasings:
        for field in _placeholders(phrasing, f"{source}: {iid}"):
            if field not in spec.kwargs:
                raise UserError(f"{source}: {iid}: phrasing {phrasing!r} uses {{{field}}} but kwargs has no {field!r}")
    if spec.task_pattern is not None:
        try:
            re.compile(spec.task_pattern)
        except re.error as exc:
            raise UserError(f"{source}: {iid}: task_pattern is not a valid regex ({exc})") from None
    for pos, (name, kw) in enumerate(spec.kwargs.items()):
        if kw.depends_on is not None and kw.depends_on not in names[:pos]:
            raise UserError(f"{source}: {iid}.kwargs.{name}: depends_on {kw.depends_on!r} must name an earlier kwarg")
        if kw.depends_on is not None and spec.kwargs[kw.depends_on].choices is not None:
            missing = {str(c) for c in spec.kwargs[kw.depends_on].choices} - set(kw.cases)
            if missing:
                raise UserError(f"{source}: {iid}.kwargs.{name}: no case for {sorted(missing)}")


def _placeholders(phrasing: str, where: str) -> list[str]:
    try:
        return [field for _, field, _, _ in string.Formatter().parse(phrasing) if field is not None]
    except ValueError as exc:
        raise UserError(f"{where}: phrasing {phrasing!r} is not a valid template ({exc})") from None


# ---------------------------------------------------------------------------------------------------
# Text similarity

_PUNCT = re.compile(r"[^\w\s]|_")


def normalise(text: str) -> str:
    """Lowercase, drop punctuation, collapse whitespace: the form in which two prompts are compared."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def similarity(a: str, b: str) -> float:
    """Word-level difflib ratio of the normalised texts, in [0, 1]. Words rather than characters: one
    changed word in a ten-word task scores 0.9, while unrelated tasks of similar length stay low."""
    wa, wb = normalise(a).split(), normalise(b).split()
    if not wa and not wb:
        return 1.0
    matcher = difflib.SequenceMatcher(None, wa, wb, autojunk=False)
    return matcher.ratio()


def _similar(a: list[str], b: list[str], threshold: float) -> Optional[float]:
    """The ratio if it reaches ``threshold``, else None; the cheap upper bounds skip most pairs."""
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    if matcher.real_quick_ratio() < threshold or matcher.quick_ratio() < threshold:
        return None
    ratio = matcher.ratio()
    return ratio if ratio >= threshold else None


def near_duplicate_pairs(left: Sequence[str], right: Sequence[str], threshold: float) -> list[tuple[int, int, float]]:
    """(i, j, ratio) for every left[i] and right[j] at least ``threshold`` similar."""
    lw = [normalise(t).split() for t in left]
    rw = [normalise(t).split() for t in right]
    found = []
    for i, a in enumerate(lw):
        for j, b in enumerate(rw):
            ratio = _similar(a, b, threshold)
            if ratio is not None:
                found.append((i, j, ratio))
    return found


def dedupe_tasks(tasks: Sequence[Task], threshold: float) -> tuple[list[Task], list[tuple[Task, Task]]]:
    """Keep the first of each group of near-duplicate tasks; also return (dropped, kept twin) pairs so the
    caller can report them. Run before the split, so near-twins cannot land in different pools."""
    kept: list[Task] = []
    kept_words: list[list[str]] = []
    dropped: list[tuple[Task, Task]] = []
    for task in tasks:
        words = normalise(task.text).split()
        twin = next((k for k, w in zip(kept, kept_words) if _similar(words, w, threshold) is not None), None)
        if twin is None:
            kept.append(task)
            kept_words.append(words)
        else:
            dropped.append((task, twin))
    return kept, dropped


def dedupe_instructions(records: Sequence[Instruction]) -> list[Instruction]:
    """Drop records whose normalised prompt repeats an earlier one. Near-duplicates are allowed here on
    purpose: one task reused with different constraints is a near-duplicate by design."""
    seen: set[str] = set()
    out = []
    for rec in records:
        norm = normalise(rec.prompt)
        if norm not in seen:
            seen.add(norm)
            out.append(rec)
    return out


def check_disjoint(
    train: Sequence[Instruction],
    eval: Sequence[Instruction],
    threshold: float,
    task_texts: Optional[Mapping[str, str]] = None,
) -> None:
    """Raise UserError if train and eval share a task id or a near-duplicate task text.

    Task texts are compared rather than whole prompts, since shared constraint phrasings would make
    unrelated prompts look alike. A record whose task text is unknown (no task_id, or not in
    ``task_texts``) is compared by its whole prompt.
    """
    shared = sorted({r.task_id for r in train if r.task_id} & {r.task_id for r in eval if r.task_id})
    if shared:
        raise UserError(f"train and eval share task ids: {', '.join(shared[:10])}" + (" ..." if len(shared) > 10 else ""))
    texts = task_texts or {}
    left = _unique_texts(train, texts)
    right = _unique_texts(eval, texts)
    pairs = near_duplicate_pairs([t for t, _ in left], [t for t, _ in right], threshold)
    if pairs:
        i, j, ratio = max(pairs, key=lambda p: p[2])
        raise UserError(
            f"train and eval contain near-duplicate tasks ({len(pairs)} pair(s), threshold {threshold}); "
            f"e.g. train {left[i][1]} vs eval {right[j][1]} (similarity {ratio:.2f}): {left[i][0]!r} ~ {right[j][0]!r}"
        )


def _unique_texts(records: Sequence[Instruction], texts: Mapping[str, str]) -> list[tuple[str, str]]:
    """(text, label) per distinct task text; the label names the task id or the record key."""
    out: dict[str, str] = {}
    for r in records:
        if r.task_id and r.task_id in texts:
            out.setdefault(texts[r.task_id], f"task {r.task_id}")
        else:
            out.setdefault(r.prompt, f"key {r.key}" + (f" (task {r.task_id})" if r.task_id else ""))
    return list(out.items())


# ---------------------------------------------------------------------------------------------------
# Train/eval split


def split_tasks(tasks: Sequence[Task], seed: int, eval_fraction: float) -> tuple[list[Task], list[Task]]:
    """Disjoint (train, eval) pools, stratified by category so eval covers every kind of task.

    A category with at least two tasks gives eval round(n * fraction) of them, but at least one and never
    all; a single-task category stays in train. Output order follows the input order."""
    rng = random.Random(f"split:{seed}")
    by_cat: dict[str, list[Task]] = defaultdict(list)
    for task in tasks:
        by_cat[task.category].append(task)
    eval_ids: set[str] = set()
    for cat in sorted(by_cat):
        members = sorted(t.task_id for t in by_cat[cat])
        if len(members) < 2:
            continue
        n_eval = min(max(round(len(members) * eval_fraction), 1), len(members) - 1)
        eval_ids.update(rng.sample(members, n_eval))
    return [t for t in tasks if t.task_id not in eval_ids], [t for t in tasks if t.task_id in eval_ids]


# ---------------------------------------------------------------------------------------------------
# Drawing constraints

_STOPWORDS = frozenset(
    """a an the and or but if of to in on at by for with from into onto about above below after before
    this that these those there their them they then than what which who whom whose when where why how
    is are was were be been being do does did have has had will would can could should may might must
    your you yours our ours its it his her she he we us i me my mine not no yes all any each every some
    such very more most much many few also just only so too own same other write short explain describe
    list name give tell rewrite summarise summarize sentence sentences classify extract identify find
    following word words text message make turn please simple terms using three four two five one""".split()
)


def task_content_words(text: str, min_length: int) -> list[str]:
    """Distinct lowercase content words of a task, in order: candidates for keyword constraints."""
    seen: list[str] = []
    for word in re.findall(r"[A-Za-z]+", text):
        w = word.lower()
        if len(w) >= min_length and w not in _STOPWORDS and w not in seen:
            seen.append(w)
    return seen


def _draw_words(spec: TaskWordsSpec, task: Task, rng: random.Random) -> list[str]:
    pool = task_content_words(task.text, spec.min_length)
    picked = rng.sample(pool, min(spec.k, len(pool)))
    extra = [w for w in spec.fallback if w not in picked]
    picked += rng.sample(extra, min(spec.k - len(picked), len(extra)))
    return picked


def _draw_value(spec: KwargSpec, drawn: dict, task: Task, rng: random.Random) -> Any:
    if spec.cases is not None:
        return _draw_value(spec.cases[str(drawn[spec.depends_on])], drawn, task, rng)
    if spec.choices is not None:
        return rng.choice(spec.choices)
    if spec.range is not None:
        return rng.randint(*spec.range)
    if spec.sample is not None:
        return rng.sample(spec.sample, spec.k)
    if spec.task_word is not None:
        return _draw_words(spec.task_word.model_copy(update={"k": 1}), task, rng)[0]
    if spec.task_words is not None:
        return _draw_words(spec.task_words, task, rng)
    return task.text  # task_text


def draw_kwargs(spec: ConstraintSpec, task: Task, rng: random.Random) -> dict:
    """Draw each kwarg in declaration order, so a `depends_on` kwarg sees the value it depends on."""
    drawn: dict = {}
    for name, kw in spec.kwargs.items():
        drawn[name] = _draw_value(kw, drawn, task, rng)
    return drawn


def applies_to(spec: ConstraintSpec, task: Task) -> bool:
    """Whether a constraint makes sense for a task (e.g. "answer yes or no" only for yes/no questions)."""
    if spec.categories is not None and task.category not in spec.categories:
        return False
    if spec.task_pattern is not None and not re.search(spec.task_pattern, task.text):
        return False
    if spec.max_task_words is not None and len(task.text.split()) > spec.max_task_words:
        return False
    return True


def compatible(ids: Iterable[str], conflicts: set[frozenset[str]]) -> bool:
    ids = list(ids)
    return len(set(ids)) == len(ids) and not any(
        frozenset((a, b)) in conflicts for i, a in enumerate(ids) for b in ids[i + 1 :]
    )


def _required_texts(kwargs: Sequence[dict]) -> list[str]:
    """Text the response is obliged to contain, whatever else it says."""
    out: list[str] = []
    for kw in kwargs:
        for key in ("keywords",):
            out += kw.get(key, [])
        for key in ("keyword", "end_phrase", "prompt_to_repeat", "first_word", "postscript_marker", "section_spliter"):
            if key in kw:
                out.append(kw[key])
    return out


def _min_sentences(ids: Sequence[str], kwargs: Sequence[dict]) -> int:
    """Sentences any compliant response must have: each paragraph, section, bullet or response is at
    least one, and a postscript, end phrase or yes/no option adds one of its own."""
    units = [1]
    extra = 0
    for iid, kw in zip(ids, kwargs):
        units += [kw.get(k, 0) for k in ("num_paragraphs", "num_sections", "num_bullets")]
        if iid == "combination:two_responses":
            units.append(2)
        if iid in ("detectable_content:postscript", "startend:end_checker", "detectable_format:constrained_response"):
            extra += 1
    return max(units) + extra


def _min_capital_words(kwargs: Sequence[dict]) -> int:
    """All-capital words that required text forces into the response ("P.S." is two, "SECTION 1" one)."""
    count = 0
    for kw in kwargs:
        for text in _required_texts([kw]):
            caps = sum(1 for w in re.findall(r"[^\W\d_]+", text) if w.isupper())
            count += caps * (kw.get("num_sections", 1) if "section_spliter" in kw else 1)
    return count


def kwargs_consistent(task: Task, ids: Sequence[str], kwargs: Sequence[dict]) -> bool:
    """Reject draws whose values contradict each other or the task, which no response could satisfy:
    a forbidden word that the task or another constraint requires, a comma in required text under
    no_comma, required text already over a "less than" letter or capital-word budget, or a sentence
    limit below what the requested layout needs."""
    required = _required_texts(kwargs)
    required_words = {w for text in required + [task.text] for w in normalise(text).split()}
    for iid, kw in zip(ids, kwargs):
        if iid == "keywords:forbidden_words" and required_words & {w.lower() for w in kw["forbidden_words"]}:
            return False
        if iid == "punctuation:no_comma" and any("," in text for text in required):
            return False
        if iid == "keywords:letter_frequency" and kw["let_relation"] == "less than":
            if sum(text.lower().count(kw["letter"].lower()) for text in required) >= kw["let_frequency"]:
                return False
        if iid == "length_constraints:number_sentences" and kw["relation"] == "less than":
            if kw["num_sentences"] <= _min_sentences(ids, kwargs):
                return False
        if iid == "change_case:capital_word_frequency" and kw["capital_relation"] == "less than":
            # one spare for the pronoun "I", which counts as a capital word
            if _min_capital_words(kwargs) + 1 >= kw["capital_frequency"]:
                return False
    return True


class _ListFormatter(string.Formatter):
    """Renders list kwargs as quoted words: {keywords} -> "a" and "b"; {forbidden_words:or} -> "a" or "b"."""

    def format_field(self, value, format_spec):
        if isinstance(value, list):
            quoted = [f'"{v}"' for v in value]
            joiner = format_spec or "and"
            return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f" {joiner} " + quoted[-1]
        return super().format_field(value, format_spec)


_FORMATTER = _ListFormatter()


def render_prompt(task_text: str, phrasings: Sequence[str], kwargs: Sequence[dict]) -> str:
    """The task text followed by one sentence per constraint, on a single line."""
    parts = [task_text.strip()] + [_FORMATTER.format(p, **kw).strip() for p, kw in zip(phrasings, kwargs)]
    return " ".join(parts)


def draw_constraints(
    task: Task, config: ConstraintConfig, rng: random.Random, max_constraints: int
) -> tuple[list[str], list[dict], list[str]]:
    """Pick 1..max_constraints compatible ids suited to the task (weighted), then their kwargs and a
    phrasing each. Returns (ids, kwargs, phrasings). Inconsistent kwargs are redrawn, then the ids."""
    eligible = [iid for iid in sorted(config.instructions) if applies_to(config.instructions[iid], task)]
    if not eligible:
        raise UserError(f"no constraint in constraints.yaml applies to task {task.task_id}")
    for _ in range(50):
        ids = pick_ids(eligible, config, rng, rng.randint(1, max_constraints))
        for _ in range(5):
            kwargs = [draw_kwargs(config.instructions[i], task, rng) for i in ids]
            if kwargs_consistent(task, ids, kwargs):
                phrasings = [rng.choice(config.instructions[i].phrasings) for i in ids]
                return ids, kwargs, phrasings
    raise UserError(f"could not draw a consistent set of constraints for task {task.task_id}: {task.text!r}")


def pick_ids(eligible: list[str], config: ConstraintConfig, rng: random.Random, want: int) -> list[str]:
    """Weighted draw without replacement that skips any id conflicting with those already chosen."""
    conflicts = config.conflict_set()
    ids: list[str] = []
    while len(ids) < want:
        options = [i for i in eligible if compatible(ids + [i], conflicts)]
        if not options:
            break
        ids.append(rng.choices(options, weights=[config.instructions[i].weight for i in options])[0])
    return sorted(ids, key=lambda i: not config.instructions[i].render_first)  # stable: others keep order


# ---------------------------------------------------------------------------------------------------
# Composing a pool


def _interleaved(tasks: Sequence[Task], rng: random.Random) -> list[Task]:
    """Tasks shuffled within each category, then dealt round-robin across categories, so the first n
    records of a pool cover the categories evenly."""
    by_cat: dict[str, list[Task]] = defaultdict(list)
    for task in sorted(tasks, key=lambda t: t.task_id):
        by_cat[task.category].append(task)
    cats = sorted(by_cat)
    rng.shuffle(cats)
    for cat in cats:
        rng.shuffle(by_cat[cat])
    order = []
    for i in range(max(len(v) for v in by_cat.values())):
        order += [by_cat[c][i] for c in cats if i < len(by_cat[c])]
    return order


def _signature(task_id: str, ids: Sequence[str], kwargs: Sequence[dict]) -> str:
    return json.dumps([task_id, sorted(zip(ids, [json.dumps(k, sort_keys=True) for k in kwargs]))])


def compose_instructions(
    tasks: Sequence[Task],
    config: ConstraintConfig,
    n: int,
    seed: int | str,
    max_constraints: int,
    key_base: int = 1,
) -> list[Instruction]:
    """``n`` distinct instructions from the pool ``tasks``, keys key_base..key_base+n-1.

    Each task is used once before any is reused; a reused task gets a constraint set it has not had
    (falling back to new kwargs), so records never repeat. Raises UserError if the pool cannot yield
    ``n`` distinct records."""
    if not tasks:
        raise UserError("cannot compose instructions from an empty task pool")
    rng = random.Random(f"compose:{seed}")
    used_sets: dict[str, set[frozenset[str]]] = defaultdict(set)
    seen: set[str] = set()
    records: list[Instruction] = []
    while len(records) < n:
        added = 0
        for task in _interleaved(tasks, rng):
            if len(records) >= n:
                break
            drawn = _draw_new(task, config, rng, max_constraints, used_sets[task.task_id], seen)
            if drawn is None:
                continue
            ids, kwargs, phrasings = drawn
            used_sets[task.task_id].add(frozenset(ids))
            seen.add(_signature(task.task_id, ids, kwargs))
            records.append(
                Instruction(
                    key=key_base + len(records),
                    prompt=render_prompt(task.text, phrasings, kwargs),
                    instruction_id_list=ids,
                    kwargs=kwargs,
                    category=task.category,
                    task_id=task.task_id,
                    task=task.text,
                )
            )
            added += 1
        if not added:
            raise UserError(
                f"could only compose {len(records)} distinct instructions from {len(tasks)} tasks, {n} requested; "
                "add tasks or constraints, or lower the count"
            )
    return records


def _draw_new(task, config, rng, max_constraints, used: set, seen: set, tries: int = 30):
    """A draw not seen before for this task; the first two thirds of the tries also insist on a new id set."""
    for attempt in range(tries):
        ids, kwargs, phrasings = draw_constraints(task, config, rng, max_constraints)
        if attempt < tries * 2 // 3 and frozenset(ids) in used:
            continue
        if _signature(task.task_id, ids, kwargs) not in seen:
            return ids, kwargs, phrasings
    return None
