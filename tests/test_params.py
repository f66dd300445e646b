"""params.yaml is validated before any work: bad keys, types and ranges stop a stage with no output."""
import pytest
import yaml
from conftest import ROOT, run_stage, write_params

from stages.lib.errors import UserError
from stages.lib.params import Params, load_params, parse_params
from stages.lib.paths import BASE_MODEL


def test_shipped_params_are_valid():
    params = load_params(ROOT / "params.yaml")
    assert isinstance(params, Params)


def test_shipped_params_name_every_knob():
    """params.yaml is the single place a user sees every knob: nothing is left to a hidden default."""
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())
    full = Params().model_dump()

    def keys(d, prefix=""):
        out = set()
        for k, v in d.items():
            out.add(prefix + k)
            if isinstance(v, dict) and k not in ("negative_weights",):
                out |= keys(v, prefix + k + ".")
        return out

    assert keys(full) == keys(shipped)


def test_schema_defaults_are_the_shipped_values():
    """A key left out of params.yaml (a test's params, an old experiment) means what params.yaml says, not a third
    value hidden in the schema."""
    shipped = load_params(ROOT / "params.yaml").model_dump()
    defaults = Params().model_dump()
    differ = {f"{group}.{key}": (defaults[group][key], value) for group, values in shipped.items()
              for key, value in values.items() if defaults[group][key] != value}
    assert differ == {}, "schema default vs params.yaml"


def test_params_groups_are_named_after_their_stages():
    """One name per concept: a group holds the knobs of the stage of the same name (model: every stage that loads
    the model)."""
    stages = set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]) - {"prepare_base"}
    assert set(Params.model_fields) == stages | {"model"}


@pytest.mark.parametrize(
    "section, values, key, hint",
    [
        ("model", {"name_or_pth": "x"}, "model.name_or_pth", "unknown key"),
        ("train_sft", {"batch_size": "eight"}, "train_sft.batch_size", "integer"),
        ("generate_sft", {"top_p": 1.5}, "generate_sft.top_p", "less than or equal to 1"),
        ("model", {"quantization": "3bit"}, "model.quantization", "'none', '8bit' or '4bit'"),
        ("train_dpo", {"init": "sftt"}, "train_dpo.init", "'sft' or 'base'"),
    ],
)
@pytest.mark.slow
def test_bad_params_stop_the_stage_before_any_output(tmp_path, section, values, key, hint):
    write_params(tmp_path, **{section: values})
    result = run_stage("prepare_base", tmp_path)
    assert result.returncode == 2
    assert key in result.stderr and hint in result.stderr
    assert not (tmp_path / BASE_MODEL).exists()


def test_unparseable_yaml_names_the_file(tmp_path):
    (tmp_path / "params.yaml").write_text("model: [unclosed\n")
    with pytest.raises(UserError, match="params.yaml: not valid YAML"):
        load_params(tmp_path / "params.yaml")


def test_int_is_accepted_where_a_float_is_expected():
    params = parse_params({"train_dpo": {"beta": 1}})
    assert params.train_dpo.beta == 1.0


# --- parsed as DVC writes and reads params.yaml -------------------------------------------------------

def test_a_learning_rate_written_by_dvc_is_a_number(tmp_path):
    """`dvc exp run -S train_sft.learning_rate=1e-5` writes `1e-05`: YAML 1.1 reads that as a string, DVC (YAML
    1.2) as a number. The stage must read what dvc.lock records."""
    (tmp_path / "params.yaml").write_text("train_sft:\n  learning_rate: 1e-05\ntrain_dpo:\n  learning_rate: 2e5\n"
                                          "  beta: 0.1\n")
    with pytest.raises(UserError, match="train_dpo.learning_rate: Input should be less than or equal to 1"):
        load_params(tmp_path / "params.yaml")  # 2e5 is read as the number 200000, then refused by its bound
    (tmp_path / "params.yaml").write_text("train_sft:\n  learning_rate: 1e-05\n")
    assert load_params(tmp_path / "params.yaml").train_sft.learning_rate == 1e-05


def test_yaml_1_1_spellings_mean_what_they_mean_to_dvc(tmp_path):
    """`yes` is a string and `010` is ten in YAML 1.2 (DVC), not True and eight as in YAML 1.1."""
    (tmp_path / "params.yaml").write_text("model:\n  trust_remote_code: yes\n")
    with pytest.raises(UserError, match="model.trust_remote_code: Input should be a valid boolean"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("generate_sft:\n  max_samples_per_prompt: 010\n")
    assert load_params(tmp_path / "params.yaml").generate_sft.max_samples_per_prompt == 10


def test_a_key_given_twice_is_refused_with_its_line(tmp_path):
    (tmp_path / "params.yaml").write_text("train_sft:\n  seed: 1\n  seed: 2\n")
    with pytest.raises(UserError, match=r'duplicate key "seed".*line 3'):
        load_params(tmp_path / "params.yaml")


# --- finite values, seed ranges and upper bounds ------------------------------------------------------

@pytest.mark.parametrize(
    "text, message",
    [
        ("generate_sft:\n  temperature: .inf\n", "generate_sft.temperature: Input should be a finite number"),
        ("train_sft:\n  learning_rate: .inf\n", "train_sft.learning_rate: Input should be a finite number"),
        ("train_sft:\n  epochs: .inf\n", "train_sft.epochs: Input should be a finite number"),
        ("train_dpo:\n  beta: .inf\n", "train_dpo.beta: Input should be a finite number"),
        ("build_prefs:\n  min_margin: .nan\n", "build_prefs.min_margin: Input should be a finite number"),
        ("build_prefs:\n  negative_weights: {refusal: .inf}\n",
         "build_prefs.negative_weights.refusal: Input should be a finite"),
        ("train_sft:\n  seed: -1\n", "train_sft.seed: Input should be greater than or equal to 0"),
        ("report:\n  seed: 4294967296\n", "report.seed: Input should be less than or equal to 4294967295"),
        ("report:\n  bootstrap_samples: 1000000000000\n", "report.bootstrap_samples: Input should be less than"),
        ("model:\n  threads: 100000\n", "model.threads: Input should be less than or equal to 4096"),
        ("train_sft:\n  lora: {r: 1000000}\n", "train_sft.lora.r: Input should be less than or equal to 4096"),
        ("train_dpo:\n  lora: {target_modules: []}\n",
         "train_dpo.lora.target_modules: Value error, must name at least one"),
        ("evaluate:\n  max_new_tokens: 10000000\n", "evaluate.max_new_tokens: Input should be less than or equal to"),
        ("train_dpo:\n  micro_batch_size: fast\n", "train_dpo.micro_batch_size: Value error, expected 'auto' or a count"),
        ("train_sft:\n  micro_batch_size: -1\n", "train_sft.micro_batch_size: Value error, expected 'auto' or a count"),
    ],
)
def test_values_no_run_can_use_are_refused(tmp_path, text, message):
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(UserError, match=message):
        load_params(tmp_path / "params.yaml")


def test_the_largest_seed_is_accepted():
    assert parse_params({"train_sft": {"seed": 2**32 - 1}}).train_sft.seed == 2**32 - 1
