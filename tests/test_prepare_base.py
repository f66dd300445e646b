"""prepare_base: the embedded GGUF model, a local directory or a Hub id becomes a loadable models/base."""
import json
import os
import shutil

import pytest
import torch
from conftest import ROOT, run_stage, write_params

from stages.lib.base_model import BASE_MANIFEST, embedded_gguf_path, load_gguf
from stages.lib.hardware import resolve_precision
from stages.lib.loader import encode, load_model, load_tokenizer
from stages.lib.paths import BASE_MODEL, metrics_path

pytestmark = pytest.mark.slow  # runs prepare_base (one test converts the 135M GGUF model)


def test_gguf_conversion_keeps_the_logits(tmp_path):
    """The saved safetensors model computes what the GGUF-loaded model computes (slow: ~40 s)."""
    write_params(tmp_path)
    result = run_stage("prepare_base", tmp_path)
    assert result.returncode == 0, result.stderr
    base = tmp_path / BASE_MODEL
    manifest = json.loads((base / BASE_MANIFEST).read_text())
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
    manifest = json.loads((tmp_path / BASE_MODEL / BASE_MANIFEST).read_text())
    assert manifest["source"] == "local" and manifest["name_or_path"] == str(tiny_hf_dir)
    assert load_model(tmp_path / BASE_MODEL, resolve_precision("float32")).num_parameters() > 0


def test_hub_id_needs_a_pinned_revision(tmp_path):
    write_params(tmp_path, model={"name_or_path": "HuggingFaceTB/SmolLM2-135M", "revision": None})
    result = run_stage("prepare_base", tmp_path)
    assert result.returncode == 2 and "model.revision" in result.stderr
    assert not (tmp_path / BASE_MODEL.parent).exists()


def test_missing_local_directory_is_a_clear_error(tmp_path):
    write_params(tmp_path, model={"name_or_path": str(tmp_path / "no-such-model")})
    result = run_stage("prepare_base", tmp_path)
    assert result.returncode == 2 and "no-such-model" in result.stderr
    assert not (tmp_path / BASE_MODEL.parent).exists()


def _json(path):
    return json.loads(path.read_text())


def test_base_json_holds_no_absolute_path_and_no_versions(tmp_path, tiny_hf_dir):
    """Hashed outputs must not move with the checkout's location or the installed packages: the source is
    recorded as the params spell it; versions and timings go to metrics/prepare_base.json, which no stage
    reads. What this host resolves dtype and attention to is recorded (and so part of the hash)."""
    shutil.copytree(tiny_hf_dir, tmp_path / "src-model")
    write_params(tmp_path, model={"name_or_path": "./src-model", "dtype": "float32"})
    result = run_stage("prepare_base", tmp_path)
    assert result.returncode == 0, result.stderr
    manifest = _json(tmp_path / BASE_MODEL / BASE_MANIFEST)
    assert manifest["name_or_path"] == "./src-model"
    assert str(tmp_path) not in (tmp_path / BASE_MODEL / BASE_MANIFEST).read_text()
    assert "packages" not in manifest
    assert manifest["runtime"] == {"device": "cpu", "dtype": "float32", "quantization": "none",
                                   "attn_implementation": "sdpa", "threads": len(os.sched_getaffinity(0))}
    metrics = _json(tmp_path / metrics_path("prepare_base"))
    assert metrics["environment"]["packages"]["transformers"] and metrics["environment"]["threads"] >= 1
    assert f"float32 on cpu, {len(os.sched_getaffinity(0))} threads, sdpa attention" in result.stdout


def test_a_source_that_is_its_own_output_is_refused_untouched(tmp_path, tiny_hf_dir):
    """model.name_or_path: ./models/base would have prepare_base delete its own source before reading it."""
    shutil.copytree(tiny_hf_dir, tmp_path / BASE_MODEL)
    before = sorted(p.name for p in (tmp_path / BASE_MODEL).iterdir())
    write_params(tmp_path, model={"name_or_path": f"./{BASE_MODEL}"})
    result = run_stage("prepare_base", tmp_path)
    assert result.returncode == 2
    assert f"model.name_or_path=./{BASE_MODEL}: is prepare_base's own output" in result.stderr
    assert sorted(p.name for p in (tmp_path / BASE_MODEL).iterdir()) == before


def test_remote_code_is_announced_with_hashes_and_recorded(tmp_path):
    """trust_remote_code runs the model's own Python files: prepare_base lists them with their sha256 before
    loading anything, records them in base.json, and later stages load the model with them."""
    from tiny_model import build_remote_code_model

    from stages.lib.base_model import file_sha256

    source = build_remote_code_model(tmp_path / "remote-model")
    write_params(tmp_path, model={"name_or_path": str(source), "trust_remote_code": True, "dtype": "float32"})
    result = run_stage("prepare_base", tmp_path)
    assert result.returncode == 0, result.stderr
    expected = {name: file_sha256(source / name) for name in ("configuration_tiny_remote.py", "modeling_tiny_remote.py")}
    for name, digest in expected.items():
        assert f"  {name}  sha256 {digest}" in result.stdout
    assert result.stdout.index("this code from") < result.stdout.index("prepare_base: local model")
    assert _json(tmp_path / BASE_MODEL / BASE_MANIFEST)["remote_code"] == expected
    model = load_model(tmp_path / BASE_MODEL, resolve_precision("float32"), trust_remote_code=True)
    assert type(model).__name__ == "TinyRemoteForCausalLM"


def test_remote_code_without_trust_is_a_clear_error(tmp_path):
    from tiny_model import build_remote_code_model

    source = build_remote_code_model(tmp_path / "remote-model")
    write_params(tmp_path, model={"name_or_path": str(source), "trust_remote_code": False})
    result = run_stage("prepare_base", tmp_path)
    assert result.returncode == 2, result.stderr
    assert "model.trust_remote_code: " in result.stderr and "modeling_tiny_remote.py" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / BASE_MODEL.parent).exists()


COMMIT_1, COMMIT_2 = "1" * 40, "2" * 40
LOAD_SCRIPT = """
import json, sys
sys.path.insert(0, {root!r})
from stages.lib.hardware import resolve_precision
from stages.lib.loader import load_base_model
from stages.lib.paths import BASE_MODEL
model = load_base_model(BASE_MODEL, resolve_precision("float32"))
print(json.dumps(float(model.model.embed_tokens.weight.double().sum())))
"""


def _hub_env(cache):
    return {"HF_HOME": str(cache), "HF_HUB_OFFLINE": "1"}


def test_a_hub_revision_is_resolved_to_its_commit_and_stays_pinned(tmp_path, tiny_hf_dir):
    """`model.revision: main` is resolved to the commit main names, offline from a real hub cache layout, and
    recorded; every later load uses that commit, so when main moves on the Hub the pipeline's base does not
    move with it (until prepare_base is rerun)."""
    import subprocess
    import sys

    from tiny_model import build_tiny_model, fake_hub_cache

    cache = fake_hub_cache(tmp_path / "hf", tiny_hf_dir, "org/tiny", COMMIT_1)
    write_params(tmp_path, model={"name_or_path": "org/tiny", "revision": "main", "dtype": "float32"})
    result = run_stage("prepare_base", tmp_path, env=_hub_env(cache))
    assert result.returncode == 0, result.stderr
    assert f"org/tiny revision main is commit {COMMIT_1}" in result.stdout
    manifest = _json(tmp_path / BASE_MODEL / BASE_MANIFEST)
    assert (manifest["revision"], manifest["requested_revision"], manifest["weights"]) == (COMMIT_1, "main", "hub")

    def embedding_sum():
        out = subprocess.run([sys.executable, "-c", LOAD_SCRIPT.format(root=str(ROOT))], cwd=tmp_path,
                             env={**os.environ, **_hub_env(cache)}, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    pinned = embedding_sum()
    # main moves to another commit with other weights
    fake_hub_cache(cache, build_tiny_model(tmp_path / "tiny-2", seed=1), "org/tiny", COMMIT_2)
    assert embedding_sum() == pinned


def test_an_unknown_hub_revision_names_the_key(tmp_path, tiny_hf_dir):
    from tiny_model import fake_hub_cache

    cache = fake_hub_cache(tmp_path / "hf", tiny_hf_dir, "org/tiny", COMMIT_1)
    write_params(tmp_path, model={"name_or_path": "org/tiny", "revision": "v9"})
    result = run_stage("prepare_base", tmp_path, env=_hub_env(cache))
    assert result.returncode == 2
    assert "model.name_or_path=org/tiny, model.revision=v9: cannot be fetched" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / BASE_MODEL.parent).exists()


def test_a_stage_on_another_kind_of_host_is_stopped(tmp_path, tiny_hf_dir, monkeypatch):
    """base.json records what prepare_base's host resolved; a stage on a host that resolves the same params
    differently (here: base.json as a bf16 host wrote it, this run in fp32) stops and says how to re-resolve,
    instead of producing fp32 outputs under hashes DVC recorded for bf16 ones."""
    from stages.lib.errors import UserError
    from stages.lib.model_session import precision_for
    from stages.lib.params import ModelParams

    write_params(tmp_path, model={"name_or_path": str(tiny_hf_dir), "dtype": "float32"})
    assert run_stage("prepare_base", tmp_path).returncode == 0
    monkeypatch.chdir(tmp_path)
    params = ModelParams(name_or_path=str(tiny_hf_dir), dtype="float32")
    assert precision_for(params).dtype == "float32"
    manifest = _json(tmp_path / BASE_MODEL / BASE_MANIFEST)
    manifest["runtime"]["dtype"] = "bfloat16"
    (tmp_path / BASE_MODEL / BASE_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=r"dtype bfloat16 -> float32.*dvc repro -f prepare_base"):
        precision_for(params)
