"""The make_instructions stage end to end (in a temp dir), and the curated data under data/."""
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import run_stage, write_params

from stages import make_instructions
from stages.lib import checkers, constraint_schema, near_duplicates, task_split
from stages.lib.paths import BASE_MODEL, CONSTRAINTS, FEWSHOT, TASKS, TRAIN_INSTRUCTIONS, suite_path
from stages.lib.records import Instruction, Task, read_jsonl

ROOT = Path(__file__).resolve().parents[1]
DATA_FILES = (TASKS, CONSTRAINTS, FEWSHOT)
OUTPUTS = (TRAIN_INSTRUCTIONS, suite_path("dev"), suite_path("test"))


@pytest.fixture()
def workdir(tmp_path, monkeypatch) -> Path:
    for path in DATA_FILES:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, tmp_path / path)
    write_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(tmp_path: Path, **instructions) -> tuple[bytes, bytes]:
    write_params(tmp_path, make_instructions=instructions)
    make_instructions.main()
    return tuple(p.read_bytes() for p in OUTPUTS)


def _fails(capsys, *fragments: str) -> None:
    with pytest.raises(SystemExit) as exc:
        make_instructions.main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    for fragment in map(str, fragments):
        assert fragment in err, err
    assert not any(p.exists() for p in OUTPUTS)


# --- the stage ------------------------------------------------------------------------------------------


def test_stage_writes_disjoint_train_dev_and_test(workdir, capsys):
    _run(workdir, n_train=50, n_dev=20, n_test=30, seed=3)
    train, dev, test = (read_jsonl(p, Instruction) for p in OUTPUTS)
    assert (len(train), len(dev), len(test)) == (50, 20, 30)
    tasks = [{r.task_id for r in records} for records in (train, dev, test)]
    assert tasks[0].isdisjoint(tasks[1]) and tasks[0].isdisjoint(tasks[2]) and tasks[1].isdisjoint(tasks[2])
    assert len({r.key for r in train + dev + test}) == 100
    assert all(isinstance(r.key, int) for r in train + dev + test)
    for rec in train + dev + test:
        for iid, kw in zip(rec.instruction_id_list, rec.kwargs):
            checkers.validate_kwargs(iid, kw)
    out = capsys.readouterr().out
    assert "train" in out and "dev" in out and "test" in out


def test_dev_and_test_share_no_near_duplicate_task_text(workdir):
    _run(workdir)
    tasks = {t.task_id: t.text for t in read_jsonl(workdir / TASKS, Task)}
    dev, test = (read_jsonl(p, Instruction) for p in OUTPUTS[1:])
    dev_texts = sorted({tasks[r.task_id] for r in dev})
    test_texts = sorted({tasks[r.task_id] for r in test})
    assert not near_duplicates.near_duplicate_pairs(dev_texts, test_texts, 0.85)


def test_stage_output_is_byte_identical_per_seed(workdir):
    first = _run(workdir, seed=11)
    assert _run(workdir, seed=11) == first
    other = _run(workdir, seed=12)
    assert all(a != b for a, b in zip(other, first))


def test_held_out_prompts_do_not_move_when_n_train_changes(workdir):
    assert _run(workdir, n_train=40)[1:] == _run(workdir, n_train=90)[1:]


def test_pools_are_reused_internally_when_short_of_tasks(workdir):
    _run(workdir, n_train=600, n_dev=100, n_test=400, max_constraints=3)
    train, dev, test = (read_jsonl(p, Instruction) for p in OUTPUTS)
    assert (len(train), len(dev), len(test)) == (600, 100, 400)
    assert max(Counter(r.task_id for r in test).values()) >= 2  # test tasks reused ...
    assert {r.task_id for r in train}.isdisjoint({r.task_id for r in test})  # ... but never across pools


def test_cli_entry_point_runs_as_dvc_would(workdir):
    result = run_stage("make_instructions", workdir)
    assert result.returncode == 0, result.stderr
    assert all(p.is_file() for p in OUTPUTS)
    (workdir / TASKS).write_text("not json\n")
    result = run_stage("make_instructions", workdir)
    assert result.returncode == 2 and "data/tasks.jsonl:1" in result.stderr
    assert not any(p.exists() for p in OUTPUTS)


def test_malformed_task_line_fails_naming_file_and_line(workdir, capsys):
    for p in OUTPUTS:  # stale outputs from an earlier run must not survive a failed one
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("stale\n")
    path = workdir / TASKS
    lines = path.read_text().splitlines()
    lines[2] = '{"task_id": "qa-003", "category": "factual_qa"'
    path.write_text("\n".join(lines) + "\n")
    _fails(capsys, "data/tasks.jsonl:3")


def test_task_missing_a_field_fails_naming_the_field(workdir, capsys):
    path = workdir / TASKS
    lines = path.read_text().splitlines()
    lines[4] = json.dumps({"task_id": "qa-005", "category": "factual_qa"})
    path.write_text("\n".join(lines) + "\n")
    _fails(capsys, "data/tasks.jsonl:5", "text")


def test_repeated_task_id_fails(workdir, capsys):
    path = workdir / TASKS
    path.write_text(path.read_text() + json.dumps({"task_id": "qa-001", "category": "lists", "text": "Name a tree."}) + "\n")
    _fails(capsys, "qa-001", "unique")


def test_unknown_instruction_id_in_constraints_fails_naming_it(workdir, capsys):
    path = workdir / CONSTRAINTS
    raw = yaml.safe_load(path.read_text())
    raw["instructions"]["detectable_format:haiku_shape"] = {"phrasings": ["Write it as a haiku."]}
    path.write_text(yaml.safe_dump(raw))
    _fails(capsys, CONSTRAINTS, "detectable_format:haiku_shape")


def test_kwargs_the_checkers_reject_fail_before_writing(workdir, capsys):
    path = workdir / CONSTRAINTS
    raw = yaml.safe_load(path.read_text())
    raw["instructions"] = {"detectable_content:number_placeholders": {
        "phrasings": ["Use {num_placeholders} placeholders."], "kwargs": {"num_placeholders": {"choices": [0]}}}}
    raw["conflicts"] = []
    path.write_text(yaml.safe_dump(raw))
    write_params(workdir, make_instructions={"n_train": 50, "n_dev": 10, "n_test": 20})  # one draw per task suffices
    _fails(capsys, CONSTRAINTS, "num_placeholders")


def test_self_instruct_tasks_join_train_only(workdir, monkeypatch):
    extra = [Task(task_id=f"si-{i:03d}", category="lists", text=t) for i, t in enumerate(
        ["List three tools used for knitting.", "Name four fish that live in rivers.", "List three parts of a sailboat."], 1)]
    monkeypatch.setattr(make_instructions.self_instruct, "generate_candidate_tasks", lambda *a, **k: extra)
    _run(workdir, self_instruct_count=3, n_train=400, n_dev=10, n_test=20)
    train_ids = {r.task_id for r in read_jsonl(OUTPUTS[0], Instruction)}
    eval_ids = {r.task_id for p in OUTPUTS[1:] for r in read_jsonl(p, Instruction)}
    assert {"si-001", "si-002", "si-003"} <= train_ids
    assert not any(i.startswith("si-") for i in eval_ids)


def test_self_instruct_without_a_model_fails_cleanly(workdir, capsys):
    write_params(workdir, make_instructions={"self_instruct_count": 5})
    _fails(capsys, "self_instruct_count")


def test_self_instruct_runs_on_the_tiny_base_model(workdir, tiny_hf_dir, monkeypatch, capsys):
    """The hook loads models/base and samples list continuations; a random model's proposals are mostly
    filtered, but the stage must complete and write both files."""
    from tiny_model import write_base_manifest

    shutil.copytree(tiny_hf_dir, workdir / BASE_MODEL)
    write_base_manifest(workdir / BASE_MODEL)
    monkeypatch.setitem(make_instructions.SELF_INSTRUCT_SETTINGS, "max_new_tokens", 12)
    train, dev, test = _run(workdir, self_instruct_count=2, n_train=30, n_dev=6, n_test=10)
    assert train and dev and test
    out, err = capsys.readouterr()
    assert "self-instruct:" in out and "self-instruct round 1" in err  # the model was asked
    assert {r.task_id for r in read_jsonl(OUTPUTS[0], Instruction)}.isdisjoint(
        {r.task_id for r in read_jsonl(OUTPUTS[2], Instruction)})


def test_self_instruct_proposals_copying_eval_tasks_never_reach_train(workdir, monkeypatch, capsys):
    """Leakage and dedup checks apply to proposals: a model that 'proposes' eval tasks (verbatim and reworded)
    and repeats itself yields only its one new task, once."""
    params = make_instructions.load_params().make_instructions
    tasks, _ = near_duplicates.dedupe_tasks(make_instructions.read_tasks(TASKS), params.near_duplicate_threshold)
    _, eval_pool = task_split.split_tasks(tasks, params.seed, params.eval_task_fraction)
    leaked, reworded = eval_pool[0].text, eval_pool[1].text.upper().rstrip(".?!") + "!!"
    novel = "Describe the smell of a pine forest after heavy rain in three sentences."
    continuation = f" {leaked}\n10. {reworded}\n11. {novel}\n12. {novel.lower()}\n13. {leaked}"
    monkeypatch.setattr(make_instructions, "model_generate_fn",
                        lambda *a, **k: (lambda prompts: [continuation for _ in prompts]))
    _run(workdir, self_instruct_count=5, n_train=600, n_dev=10, n_test=20)
    assert "self-instruct: 1 of 5" in capsys.readouterr().out
    train = read_jsonl(OUTPUTS[0], Instruction)
    proposed = {r.task_id for r in train if r.task_id.startswith("si-")}
    assert proposed == {"si-001"}
    texts = [r.prompt for r in train]
    assert any(novel in t for t in texts)
    assert not any(leaked in t for t in texts) and not any(reworded in t for t in texts)


def test_propose_tasks_drops_a_planted_eval_task_duplicate():
    from stages.lib import self_instruct

    eval_task = Task(task_id="qa-900", category="factual_qa", text="Explain why the moon has phases.")
    train_task = Task(task_id="qa-901", category="factual_qa", text="Name the largest planet in our solar system.")
    generated = (" Explain why the Moon has phases!\n10. Name the largest planet in the solar system.\n"
                 "11. Describe how a compass finds north.\n12. describe how a compass finds north")
    new = self_instruct.propose_tasks([generated], [train_task, eval_task], category="factual_qa",
                                      first_number=9, threshold=0.85)
    assert [t.text for t in new] == ["Describe how a compass finds north."]


# --- curated data --------------------------------------------------------------------------------------


def test_curated_tasks_are_plentiful_and_varied():
    tasks = read_jsonl(ROOT / TASKS, Task)
    cats = Counter(t.category for t in tasks)
    assert len(tasks) >= 250 and len({t.task_id for t in tasks}) == len(tasks)
    assert len(cats) >= 6 and min(cats.values()) >= 35
    assert len({near_duplicates.normalise(t.text) for t in tasks}) == len(tasks)


def test_constraints_cover_enough_ids_with_several_phrasings():
    raw = yaml.safe_load((ROOT / CONSTRAINTS).read_text())
    config = constraint_schema.parse_constraints(raw, checkers.SUPPORTED_IDS)
    assert len(config.instructions) >= 15
    assert all(2 <= len(spec.phrasings) <= 4 for spec in config.instructions.values())
    assert ("change_case:english_lowercase", "change_case:english_capital") in config.conflicts


def test_fewshot_examples_pass_their_own_checkers():
    rows = [json.loads(line) for line in (ROOT / FEWSHOT).read_text().splitlines() if line.strip()]
    assert len(rows) >= 8
    for row in rows:
        assert set(row) == {"instruction", "response", "instruction_id_list", "kwargs"}
        assert 1 <= len(row["instruction_id_list"]) <= 2
        assert all(k is not None for k in row["kwargs"])
        result = checkers.score(row["response"], row["instruction_id_list"], row["kwargs"], row["instruction"])
        assert result.prompt_strict, (row["instruction"], result)


def test_fewshot_tasks_are_not_curated_tasks():
    tasks = read_jsonl(ROOT / TASKS, Task)
    rows = [json.loads(line) for line in (ROOT / FEWSHOT).read_text().splitlines() if line.strip()]
    task_texts = [t.text for t in tasks]
    for row in rows:
        instruction = near_duplicates.normalise(row["instruction"])
        assert not any(near_duplicates.normalise(t) in instruction for t in task_texts), row["instruction"]
        # the task part is the instruction's first sentence; compare it too
        first = row["instruction"].split("? ")[0].split(". ")[0]
        assert not near_duplicates.near_duplicate_pairs([first], task_texts, 0.85), row["instruction"]
