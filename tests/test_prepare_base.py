"""prepare_base: the embedded GGUF model and a local directory become a loadable models/base."""
import json

import torch
from conftest import run_stage, write_params

from stages.lib.base_model import embedded_gguf_path, load_gguf
from stages.lib.hardware import resolve_precision
from stages.lib.loader import encode, load_model, load_tokenizer


def test_gguf_conversion_keeps_the_logits(tmp_path):
    """The saved safetensors model computes what the GGUF-loaded model computes (slow: ~40 s)."""
    write_params(tmp_path)
    result = run_stage("prepare_base", tmp_path)
    assert result.returncode == 0, result.stderr
    base = tmp_path / "models" / "base"
    manifest = json.loads((base / "base.json").read_text())
    assert manifest["source"] == "embedded" and len(manifest["gguf_sha256"]) == 64
    assert (base / "model.safetensors").is_file()

    gguf_model, _ = load_gguf(embedded_gguf_path())
    converted = load_model(base, resolve_precision("float32"))
    ids = torch.tensor(encode(load_tokenizer(base), ["Instruction: Name a colour.\nResponse:"]))
    with torch.no_grad():
        expected = gguf_model(input_ids=ids).logits
        got = converted(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_local_directory_source(tmp_path, tiny_hf_dir):
    write_params(tmp_path, model={"name_or_path": str(tiny_hf_dir)})
    result = run_stage("prepare_base", tmp_path)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "models/base/base.json").read_text())
    assert manifest["source"] == "local" and manifest["name_or_path"] == str(tiny_hf_dir)
    assert load_model(tmp_path / "models/base", resolve_precision("float32")).num_parameters() > 0


def test_hub_id_needs_a_pinned_revision(tmp_path):
    write_params(tmp_path, model={"name_or_path": "HuggingFaceTB/SmolLM2-135M", "revision": None})
    result = run_stage("prepare_base", tmp_path)
    assert result.returncode == 2 and "model.revision" in result.stderr
    assert not (tmp_path / "models").exists()


def test_missing_local_directory_is_a_clear_error(tmp_path):
    write_params(tmp_path, model={"name_or_path": str(tmp_path / "no-such-model")})
    result = run_stage("prepare_base", tmp_path)
    assert result.returncode == 2 and "no-such-model" in result.stderr
    assert not (tmp_path / "models").exists()
