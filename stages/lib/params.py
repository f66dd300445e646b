"""The one typed schema for params.yaml. Every stage validates the whole file before doing any work.

An unknown key (a misspelling passed through ``dvc exp run -S``), a wrong type, a value that is not
finite or out of range raises a UserError naming the dotted key and what is allowed. Upper bounds are
generous (far beyond any run this pipeline is sized for) and exist to catch typos such as 1e12 before a
model is loaded.

params.yaml is read as YAML 1.2, with the parser DVC itself uses (ruamel.yaml's safe loader): DVC
writes ``-S train_sft.learning_rate=1e-5`` as ``1e-05``, which YAML 1.1 (PyYAML) reads as a string, and
reads ``yes`` or ``010`` differently from YAML 1.1. Parsing as DVC does means the stage runs with the
values dvc.lock records.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal, Optional, Union

from pydantic import ConfigDict, Field, PlainValidator, ValidationError, field_validator, model_validator

from .errors import UserError
from .schema import describe_errors
from .schema import Strict as StrictSchema

EMBEDDED_MODEL = "embedded:SmolLM2-135M-Instruct"


class Strict(StrictSchema):
    # Params are stricter than the data schemas: no coercion (the string "8" is not a batch size), and
    # allow_inf_nan=False refuses .inf / .nan, which pass every `gt`/`ge` bound.
    model_config = ConfigDict(strict=True, allow_inf_nan=False)


# numpy and torch seed generators take 0 .. 2**32 - 1; anything else fails deep inside a trainer.
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
Tokens = Annotated[int, Field(ge=1, le=131_072)]  # per generation; the model's own context is checked at run time
Batch = Annotated[int, Field(ge=1, le=65_536)]


def _micro_batch(value):
    if value == "auto" or (type(value) is int and 0 <= value <= 65_536):
        return value
    raise ValueError("expected 'auto' or a count of sequences from 0 to 65536")


# Sequences a training forward pass on one device: a count (0 = the whole per-device batch, no accumulation), or
# "auto": the stage's AUTO_MICRO_BATCH in bf16 / fp16, half that in fp32 (stages.lib.training.micro_batch).
MicroBatch = Annotated[Union[Literal["auto"], int], PlainValidator(_micro_batch)]


class ModelParams(Strict):
    name_or_path: str = Field(EMBEDDED_MODEL, min_length=1)
    revision: Optional[str] = None
    quantization: Literal["none", "8bit", "4bit"] = "none"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2"] = "auto"
    trust_remote_code: bool = False
    threads: int = Field(0, ge=0, le=4096, description="torch threads; 0 means one per usable core")


class MakeInstructionsParams(Strict):
    seed: Seed = 0
    n_train: int = Field(400, ge=1, le=10_000_000)
    n_dev: int = Field(120, ge=1, le=10_000_000, description="held-out prompts for choosing defaults")
    n_test: int = Field(300, ge=1, le=10_000_000, description="held-out prompts nothing is tuned on")
    eval_task_fraction: float = Field(0.3, gt=0.0, lt=1.0, description="share of tasks held out (dev + test)")
    dev_task_fraction: float = Field(0.34, gt=0.0, lt=1.0, description="share of held-out tasks given to dev")
    max_constraints: int = Field(2, ge=1, le=4)
    self_instruct_count: int = Field(0, ge=0, le=1_000_000)
    near_duplicate_threshold: float = Field(0.85, gt=0.0, le=1.0)


class GenerateSftParams(Strict):
    seed: Seed = 0
    samples_per_prompt: int = Field(2, ge=1, le=256, description="samples per instruction and round")
    max_samples_per_prompt: int = Field(4, ge=1, le=256,
                                        description="samples at most per instruction: rounds go on while none passes")
    n_shots: int = Field(3, ge=0, le=8)
    max_new_tokens: Tokens = 160
    temperature: float = Field(0.7, ge=0.0, le=100.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.1, gt=0.0, le=100.0)
    batch_size: Batch = 64
    delimiter: str = Field("###", min_length=1)
    revise_rounds: int = Field(0, ge=0, le=8, description="critique-and-revise rounds for failing drafts (0 = off)")
    revise_samples: int = Field(2, ge=1, le=16, description="revisions drawn per failing draft and round")
    backtranslate: bool = True
    placeholder_fallback: bool = False
    max_failed_rate: float = Field(0.2, ge=0.0, le=1.0, description="instructions with no passing response")
    min_kept_pass_rate: float = Field(0.95, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _rounds(self):
        if self.samples_per_prompt > self.max_samples_per_prompt:
            raise ValueError(f"samples_per_prompt ({self.samples_per_prompt}) must not exceed max_samples_per_prompt "
                             f"({self.max_samples_per_prompt})")
        return self


class LoraParams(Strict):
    r: int = Field(16, ge=1, le=4096)
    alpha: int = Field(32, ge=1, le=65_536)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"

    @field_validator("target_modules")
    @classmethod
    def _some_modules(cls, value):
        # An empty list would make PEFT fail only after the model has loaded.
        if isinstance(value, list) and (not value or not all(name.strip() for name in value)):
            raise ValueError("must name at least one module (e.g. [q_proj, v_proj]) or be 'all-linear'")
        return value


class TrainParams(Strict):
    """Settings shared by SFT and DPO training. Where the two differ in default, the subclass says so."""

    lora: LoraParams = LoraParams()
    learning_rate: float = Field(2e-4, gt=0.0, le=1.0)
    epochs: float = Field(1.0, gt=0.0, le=10_000.0)
    max_steps: int = Field(-1, ge=-1, le=100_000_000, description="-1: run the epochs; >0 caps the steps")
    batch_size: Batch = Field(8, description="global batch: sequences per optimizer step, over all processes")
    micro_batch_size: MicroBatch = Field(0, description="sequences per forward pass on one device; 0 = no "
                                         "accumulation; auto = AUTO_MICRO_BATCH in 16-bit, half that in fp32")
    AUTO_MICRO_BATCH: ClassVar[int]  # each training stage's own, for micro_batch_size: auto
    max_length: int = Field(256, ge=8, le=1_048_576)
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    seed: Seed = 0
    gradient_checkpointing: Literal["auto", "on", "off"] = "auto"
    logging_steps: int = Field(1, ge=1, le=1_000_000)
    accelerate_config: Optional[str] = Field(None, description="an accelerate config file; runs the stage under "
                                             "`accelerate launch` (configs/accelerate/)")


class TrainSftParams(TrainParams):
    epochs: float = Field(2.0, gt=0.0, le=10_000.0)
    micro_batch_size: MicroBatch = "auto"
    AUTO_MICRO_BATCH: ClassVar[int] = 4  # records: 2 in fp32
    eval_fraction: float = Field(0.1, ge=0.0, lt=1.0)


class BuildPrefsParams(Strict):
    seed: Seed = 0
    samples_per_prompt: int = Field(4, ge=1, le=256, description="on-policy samples from the SFT model per prompt")
    max_new_tokens: Tokens = 160
    temperature: float = Field(0.9, ge=0.0, le=100.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    batch_size: Batch = 64
    min_margin: float = Field(0.0, ge=0.0, le=10.0, description="a pair's checked score margin must also reach this")
    synthetic_per_prompt: int = Field(1, ge=0, le=64)
    negative_weights: dict[
        Literal["minimal_edit", "refusal", "off_topic", "verbose", "truncated"],
        Annotated[float, Field(ge=0.0, le=1e6)],
    ] = Field(
        default_factory=lambda: {
            "minimal_edit": 1.0,
            "refusal": 0.0,
            "off_topic": 0.0,
            "verbose": 0.0,
            "truncated": 0.0,
        }
    )

    @model_validator(mode="after")
    def _weights(self):
        if any(w < 0 for w in self.negative_weights.values()):
            raise ValueError("negative_weights must be >= 0")
        if self.synthetic_per_prompt and sum(self.negative_weights.values()) <= 0:
            raise ValueError("negative_weights must have a positive total when synthetic_per_prompt > 0")
        return self


class TrainDpoParams(TrainParams):
    init: Literal["sft", "base"] = "sft"
    beta: float = Field(0.1, gt=0.0, le=1000.0)
    loss_type: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"
    precompute_ref_log_probs: bool = True
    micro_batch_size: MicroBatch = "auto"
    AUTO_MICRO_BATCH: ClassVar[int] = 2  # pairs: 1 in fp32


class EvaluateParams(Strict):
    # data/suites/<name>.jsonl, each evaluated for every model (dvc.yaml's evaluate matrix); the report's
    # headline is "test". dev and test are written by make_instructions, handwritten is in git.
    suites: list[Annotated[str, Field(pattern=r"^[a-z0-9_]+$")]] = Field(
        default_factory=lambda: ["test", "handwritten"], min_length=1)
    max_new_tokens: Tokens = 128
    batch_size: Batch = 192
    scoring: Literal["ifeval", "markdown"] = "ifeval"  # checkers.SCORING_MODES

    @model_validator(mode="after")
    def _unique(self):
        if len(set(self.suites)) != len(self.suites):
            raise ValueError(f"suites must not repeat a name (got {self.suites})")
        return self


class ReportParams(Strict):
    seed: Seed = 0
    bootstrap_samples: int = Field(2000, ge=100, le=1_000_000)
    alpha: float = Field(0.05, gt=0.0, lt=1.0)


class Params(Strict):
    """params.yaml: one group per stage, named after it; ``model`` is read by every stage that loads the model."""

    model: ModelParams = ModelParams()
    make_instructions: MakeInstructionsParams = MakeInstructionsParams()
    generate_sft: GenerateSftParams = GenerateSftParams()
    train_sft: TrainSftParams = TrainSftParams()
    build_prefs: BuildPrefsParams = BuildPrefsParams()
    train_dpo: TrainDpoParams = TrainDpoParams()
    evaluate: EvaluateParams = EvaluateParams()
    report: ReportParams = ReportParams()


def parse_params(raw: object, source: str = "params.yaml") -> Params:
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping of stage names to settings at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = "\n  ".join(describe_errors(
            exc, show_input=True, unknown_hint="check the spelling; allowed keys are in params.yaml's schema, "
                                               "stages/lib/params.py"))
        raise UserError(f"{source}: invalid params:\n  {lines}") from None


def read_yaml(path: str | Path):
    """A YAML file as DVC reads it (YAML 1.2, ruamel.yaml's safe loader); a duplicate key is an error."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        return YAML(typ="safe", pure=True).load(text)
    except YAMLError as exc:
        what = ": ".join(part for part in (getattr(exc, "context", None), getattr(exc, "problem", None)) if part)
        raise UserError(f"{path}: not valid YAML: {what or type(exc).__name__} ({_where(exc)})") from None


def _where(exc) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "position unknown"


def load_params(path: str | Path = "params.yaml") -> Params:
    return parse_params(read_yaml(path), str(path))
