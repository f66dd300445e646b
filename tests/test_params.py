"""params.yaml is validated before any work: bad keys, types and ranges stop a stage with no output."""
import pytest
import yaml
from conftest import ROOT, run_stage, write_params

from stages.lib.errors import UserError
from stages.lib.params import Params, load_params, parse_params


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


@pytest.mark.parametrize(
    "section, values, key, hint",
    [
        ("model", {"name_or_pth": "x"}, "model.name_or_pth", "unknown key"),
        ("sft", {"batch_size": "eight"}, "sft.batch_size", "integer"),
        ("generate", {"top_p": 1.5}, "generate.top_p", "less than or equal to 1"),
        ("model", {"quantization": "3bit"}, "model.quantization", "'none', '8bit' or '4bit'"),
        ("dpo", {"init": "sftt"}, "dpo.init", "'sft' or 'base'"),
    ],
)
def test_bad_params_stop_the_stage_before_any_output(tmp_path, section, values, key, hint):
    write_params(tmp_path, **{section: values})
    result = run_stage("prepare_base", tmp_path)
    assert result.returncode == 2
    assert key in result.stderr and hint in result.stderr
    assert not (tmp_path / "models").exists()


def test_unparseable_yaml_names_the_file(tmp_path):
    (tmp_path / "params.yaml").write_text("model: [unclosed\n")
    with pytest.raises(UserError, match="params.yaml: not valid YAML"):
        load_params(tmp_path / "params.yaml")


def test_int_is_accepted_where_a_float_is_expected():
    params = parse_params({"dpo": {"beta": 1}})
    assert params.dpo.beta == 1.0
