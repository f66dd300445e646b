"""bitsandbytes is left out of a stage process on a host without a GPU driver, and the libraries that would have
imported it still work (stages/lib/optional_packages.py). Each case runs in a fresh interpreter: whether a package
can be imported is a property of the process."""
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT
from stages.lib.optional_packages import gpu_driver_present


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_a_gpu_driver_leaves_bitsandbytes_alone(tmp_path):
    driver = tmp_path / "nvidiactl"
    driver.touch()
    result = run_python(f"""
        import sys
        from stages.lib.optional_packages import gpu_driver_present, hide_bitsandbytes_without_gpu
        assert gpu_driver_present(({str(driver)!r},))
        assert not hide_bitsandbytes_without_gpu(({str(driver)!r},))
        assert "bitsandbytes" not in sys.modules
    """)
    assert result.returncode == 0, result.stderr[-3000:]


def test_without_a_gpu_driver_a_stage_imports_trl_and_peft_without_bitsandbytes():
    """The stage wrapper hides it before the stage imports anything; trl, peft and transformers' quantization
    config then import and work as on an install without it, and bitsandbytes' warning about `kernels` is gone.
    (The tiny pipeline's stages train and load adapters this way in the DVC tests.)"""
    if gpu_driver_present():
        pytest.skip("this host has a GPU driver: bitsandbytes is left to the libraries here")
    result = run_python("""
        import importlib.util, sys
        from stages.lib.errors import stage_main

        @stage_main
        def main():
            from peft import LoraConfig, PeftModel
            from transformers import BitsAndBytesConfig
            from trl import DPOTrainer, SFTTrainer
            assert BitsAndBytesConfig(load_in_4bit=True).load_in_4bit
            assert sys.modules["bitsandbytes"] is None and importlib.util.find_spec("bitsandbytes") is None
            print("ran without bitsandbytes")

        main()
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ran without bitsandbytes" in result.stdout
    assert "kernels" not in result.stderr, result.stderr[-3000:]
