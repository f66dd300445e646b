"""SFT: loss on the completion alone (asserted on the labels), training that learns, curves for dvc plots."""
import json

import pytest
import yaml
from conftest import ROOT, run_stage
from tiny_model import build_tokenizer

from stages.lib.hardware import resolve_precision
from stages.lib.loader import load_model, load_tokenizer
from stages.lib.params import TrainDpoParams, TrainSftParams
from stages.lib.paths import (
    BASE_MODEL, DPO_ADAPTER, PREFS_DIR, SFT_ADAPTER, SFT_DATA, SFT_DATA_DIR, metrics_path, stage_files,
)
from stages.lib.sft_tokenize import tokenize_prompt_completion
from stages.lib.training import common_args, lora_config, sft_config

PROMPT = "Instruction: Say the answer.\nResponse:"
COMPLETION = " The answer."


def _trainer(model, tokenizer, records, tmp_path, **overrides):
    from datasets import Dataset
    from trl import SFTTrainer

    sft = TrainSftParams(**({"batch_size": 2, "max_steps": 1} | overrides))
    args = sft_config(sft, resolve_precision("float32"), str(tmp_path / "out"), has_eval=False)
    examples = [tokenize_prompt_completion(tokenizer, p, c, sft.max_length) for p, c in records]
    return SFTTrainer(model=model, args=args, processing_class=tokenizer, peft_config=lora_config(sft.lora),
                      train_dataset=Dataset.from_list(examples))


def _assert_mask_exact(trainer, tokenizer, prompt, completion):
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    batch = trainer.data_collator([trainer.train_dataset[0]])
    labels, input_ids = batch["labels"][0].tolist(), batch["input_ids"][0].tolist()
    assert input_ids == prompt_ids + completion_ids
    assert labels == [-100] * len(prompt_ids) + completion_ids


def test_labels_cover_exactly_the_completion_and_eos(tiny_base, tmp_path):
    tokenizer = load_tokenizer(tiny_base)
    model = load_model(tiny_base, resolve_precision("float32"))
    trainer = _trainer(model, tokenizer, [(PROMPT, COMPLETION)], tmp_path)
    _assert_mask_exact(trainer, tokenizer, PROMPT, COMPLETION)


def test_mask_is_exact_even_when_the_tokenizer_merges_across_the_boundary(tiny_base, tmp_path):
    merging = build_tokenizer(pre_tokenize=False)  # BPE free to merge ": T" across the boundary
    merging.save_pretrained(tiny_base)
    tokenizer = load_tokenizer(tiny_base)
    joint = tokenizer(PROMPT + COMPLETION, add_special_tokens=False)["input_ids"]
    alone = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    assert joint[: len(alone)] != alone, "the tokenizer should merge across the boundary for this test to mean anything"
    model = load_model(tiny_base, resolve_precision("float32"))
    model.resize_token_embeddings(len(tokenizer))
    trainer = _trainer(model, tokenizer, [(PROMPT, COMPLETION)], tmp_path)
    _assert_mask_exact(trainer, tokenizer, PROMPT, COMPLETION)


@pytest.mark.slow
def test_a_few_steps_lower_the_loss(tiny_base, tmp_path):
    tokenizer = load_tokenizer(tiny_base)
    model = load_model(tiny_base, resolve_precision("float32"))
    records = [(f"Instruction: Name colour {i}.\nResponse:", " Red and blue.") for i in range(4)]
    trainer = _trainer(model, tokenizer, records, tmp_path, max_steps=12, batch_size=4, learning_rate=5e-3)
    before = trainer.evaluate(eval_dataset=trainer.train_dataset)["eval_loss"]
    trainer.train()
    after = trainer.evaluate(eval_dataset=trainer.train_dataset)["eval_loss"]
    assert after < before - 0.1


@pytest.mark.slow
def test_dvclive_curves_exist_where_dvc_yaml_plots_point(tiny_pipeline):
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage, curve in [("train_sft", "loss.tsv"), ("train_dpo", "rewards/margins.tsv")]:
        (plot_dir,) = [next(iter(p)) for p in stages[stage]["plots"]]
        files = list((tiny_pipeline / plot_dir).rglob("*.tsv"))
        assert (tiny_pipeline / plot_dir / curve).is_file(), files
        header = (tiny_pipeline / plot_dir / curve).read_text().splitlines()[0].split("\t")
        assert "step" in header


@pytest.mark.slow
def test_stage_outputs_adapter_manifest_and_metrics(tiny_pipeline):
    adapter = tiny_pipeline / SFT_ADAPTER
    assert (adapter / "adapter_model.safetensors").is_file()
    manifest = json.loads((adapter / "manifest.json").read_text())
    assert manifest["precision"]["dtype"] == "float32" and manifest["gradient_checkpointing"] is False
    metrics = json.loads((tiny_pipeline / metrics_path("train_sft")).read_text())
    for key in ("train_loss_first", "train_loss_last", "eval_loss_before", "eval_loss_after", "tokens_seen",
                "tokens_per_s", "wall_s"):
        assert metrics[key] is not None, key
    assert metrics["tokens_seen"] > 0


@pytest.mark.slow
def test_retraining_with_the_same_inputs_gives_byte_identical_adapters(tiny_pipeline, tmp_path):
    """An adapter directory holds only what the inputs determine (weights, config, a manifest without
    timings), so when a stage reruns and trains the same adapter, DVC sees the same hash and the stages
    after it are not rerun."""
    import shutil

    for rel in (BASE_MODEL, SFT_DATA_DIR, PREFS_DIR, "params.yaml"):
        copy = shutil.copytree if (tiny_pipeline / rel).is_dir() else shutil.copy
        copy(tiny_pipeline / rel, tmp_path / rel)
    for stage, out in [("train_sft", SFT_ADAPTER), ("train_dpo", DPO_ADAPTER)]:
        result = run_stage(stage, tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        files = sorted(p.relative_to(tmp_path / out) for p in (tmp_path / out).rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(tiny_pipeline / out) for p in (tiny_pipeline / out).rglob("*")
                               if p.is_file())
        for rel in files:
            assert (tmp_path / out / rel).read_bytes() == (tiny_pipeline / out / rel).read_bytes(), f"{out}/{rel}"


@pytest.mark.slow
@pytest.mark.parametrize("problem", ["no_completion", "empty", "missing"])
def test_bad_sft_data_is_a_clear_error_with_no_output(tmp_path, tiny_pipeline, problem):
    import shutil

    shutil.copytree(tiny_pipeline / BASE_MODEL, tmp_path / BASE_MODEL)
    shutil.copy(tiny_pipeline / "params.yaml", tmp_path / "params.yaml")
    data = tmp_path / SFT_DATA
    data.parent.mkdir(parents=True)
    good = (tiny_pipeline / SFT_DATA).read_text().splitlines()
    if problem == "no_completion":
        rec = json.loads(good[1])
        del rec["completion"]
        data.write_text(good[0] + "\n" + json.dumps(rec) + "\n")
    elif problem == "empty":
        data.write_text("")
    result = run_stage("train_sft", tmp_path)
    assert result.returncode == 2
    expected = {"no_completion": "train.jsonl:2", "empty": "empty", "missing": "file not found"}[problem]
    assert expected in result.stderr and str(SFT_DATA) in result.stderr
    assert not (tmp_path / SFT_ADAPTER).exists() and not (tmp_path / metrics_path("train_sft")).exists()


def test_precision_is_never_left_to_trl_defaults():
    from trl import SFTConfig

    # A CPU without native bf16: fp32 (bf16 matrix products there are ~100x slower), no checkpointing.
    cpu = resolve_precision(cuda_available=False, cpu_bf16=False)
    args = SFTConfig(**common_args(TrainSftParams(), cpu, "/tmp/x", has_eval=False))
    assert args.bf16 is False and args.activation_checkpointing is False
    # A CPU with AMX / AVX512-BF16: bf16, still no checkpointing (memory is not what limits a CPU run).
    amx = resolve_precision(cuda_available=False, cpu_bf16=True)
    args = SFTConfig(**common_args(TrainSftParams(), amx, "/tmp/x", has_eval=False))
    assert args.bf16 is True and args.activation_checkpointing is False
    gpu = resolve_precision("auto", "4bit", cuda_available=True, cuda_bf16=True)
    kwargs = common_args(TrainSftParams(), gpu, "/tmp/x", has_eval=False)
    assert kwargs["bf16"] is True and kwargs["activation_checkpointing"] is True


@pytest.mark.parametrize("params, sixteen_bit, fp32", [
    (TrainSftParams(), (4, 2), (2, 4)),  # records a pass x accumulation steps, global batch 8
    (TrainDpoParams(), (2, 4), (1, 8)),  # pairs
    (TrainDpoParams(micro_batch_size=4), (4, 2), (4, 2)),  # a number is taken as written
    (TrainDpoParams(micro_batch_size=0), (8, 1), (8, 1)),
])
def test_auto_micro_batch_halves_in_fp32_and_keeps_the_global_batch(params, sixteen_bit, fp32):
    """A sequence's activations take twice the bytes in fp32, so `auto` runs half the sequences a pass there: the
    same optimizer steps, the peak memory of the 16-bit default (BENCHMARKS.md)."""
    cases = [(sixteen_bit, resolve_precision(cuda_available=False, cpu_bf16=True)),
             (fp32, resolve_precision(cuda_available=False, cpu_bf16=False))]
    for expected, precision in cases:
        kwargs = common_args(params, precision, "/tmp/x", has_eval=False)
        assert (kwargs["per_device_train_batch_size"], kwargs["gradient_accumulation_steps"]) == expected


def _sft_project(tiny_pipeline, directory, **sft):
    import shutil

    for rel in (BASE_MODEL, SFT_DATA_DIR):
        shutil.copytree(tiny_pipeline / rel, directory / rel)
    params = yaml.safe_load((tiny_pipeline / "params.yaml").read_text())
    params["train_sft"].update(sft)
    (directory / "params.yaml").write_text(yaml.safe_dump(params))
    return directory


@pytest.mark.slow
def test_truncation_that_leaves_no_completion_names_the_record(tiny_pipeline, tmp_path):
    """train_sft.max_length shorter than a prompt masks every completion token of that record (TRL would drop it
    without a count): an error naming the record and the key to raise, before any training."""
    project = _sft_project(tiny_pipeline, tmp_path, max_length=8)
    first_key = json.loads((project / SFT_DATA).read_text().splitlines()[0])["key"]
    result = run_stage("train_sft", project)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"train_sft.max_length=8: SFT record key {first_key!r} has a" in result.stderr
    assert "raise train_sft.max_length above" in result.stderr and "Traceback" not in result.stderr
    assert not (project / SFT_ADAPTER).exists() and not (project / metrics_path("train_sft")).exists()


@pytest.mark.slow
def test_a_non_finite_loss_stops_training_and_saves_nothing(tiny_pipeline, tmp_path):
    """A base model with one NaN weight (a corrupt download, or a learning rate that diverged) makes the loss
    NaN: training stops at the first logged step instead of running on, no adapter, no metrics and no
    curves are written, and the message says why. Files a user keeps beside the DVCLive curves are left alone."""
    from safetensors.torch import load_file, save_file

    project = _sft_project(tiny_pipeline, tmp_path, max_steps=6, logging_steps=1, eval_fraction=0.0)
    weights = project / BASE_MODEL / "model.safetensors"
    tensors = load_file(weights)
    tensors["model.layers.0.self_attn.q_proj.weight"][0, 0] = float("nan")
    save_file(tensors, weights, metadata={"format": "pt"})
    (project / stage_files("train_sft")).mkdir(parents=True)
    (project / stage_files("train_sft") / "notes.md").write_text("mine")

    result = run_stage("train_sft", project)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "sft: the training loss became nan at step 1; training stopped and no adapter was saved" in result.stderr
    assert not (project / SFT_ADAPTER).exists() and not (project / metrics_path("train_sft")).exists()
    logged = [line for line in (result.stdout + result.stderr).splitlines() if "{'loss':" in line]
    assert len(logged) == 1 and "'loss': 'nan'" in logged[0], logged  # step 1: the 5 steps after it never ran
    assert not (project / stage_files("train_sft") / "plots").exists()  # no curves of a failed run
    assert (project / stage_files("train_sft") / "notes.md").read_text() == "mine"


@pytest.mark.slow
def test_bf16_training_keeps_lora_inputs_in_bf16_with_the_same_loss_and_gradients(tiny_base, tmp_path):
    """Under bf16 autocast PEFT's fp32 copy of every adapted layer's input is cast straight back by autocast: the
    lean trainer skips it, which must change no number (loss, every gradient) and keep less for the backward pass
    (PEFT's way, each adapted layer keeps its own bf16 copy of an input the model already holds)."""
    import torch
    from datasets import Dataset

    from stages.lib.trainers import LeanSFTTrainer

    tokenizer = load_tokenizer(tiny_base)
    precision = resolve_precision("bfloat16")
    model = load_model(tiny_base, precision)
    sft = TrainSftParams(batch_size=2, max_steps=1)
    args = sft_config(sft, precision, str(tmp_path / "out"), has_eval=False)
    assert args.bf16
    records = [(f"Instruction: Name colour {i}.\nResponse:", " Red and blue.") for i in range(2)]
    trainer = LeanSFTTrainer(model=model, args=args, processing_class=tokenizer, peft_config=lora_config(sft.lora),
                             train_dataset=Dataset.from_list(
                                 [tokenize_prompt_completion(tokenizer, p, c, sft.max_length) for p, c in records]))
    lora_layers = [m for m in trainer.model.modules() if hasattr(m, "cast_input_dtype_enabled")]
    assert lora_layers and not any(m.cast_input_dtype_enabled for m in lora_layers)

    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])

    def step(cast: bool):
        for layer in lora_layers:
            layer.cast_input_dtype_enabled = cast
        trainer.model.zero_grad(set_to_none=True)
        weights = {p.untyped_storage().data_ptr() for p in trainer.model.parameters()}
        saved = {}  # storage -> bytes: each activation once, no weights

        def pack(t):
            if t.untyped_storage().data_ptr() not in weights:
                saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), trainer.accelerator.autocast():
            loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
        return loss.detach(), grads, sum(saved.values())

    loss_peft, grads_peft, saved_peft = step(cast=True)
    loss_lean, grads_lean, saved_lean = step(cast=False)
    assert torch.equal(loss_peft, loss_lean)
    assert grads_peft.keys() == grads_lean.keys() and grads_lean
    assert all(torch.equal(grads_peft[n], grads_lean[n]) for n in grads_peft)
    assert saved_lean < saved_peft
    trainer.train()  # the trainer's own step runs under autocast too: bf16 inputs meet fp32 adapter weights there
    assert trainer.state.global_step == 1
