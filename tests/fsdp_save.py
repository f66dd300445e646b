"""Two processes (torchrun, gloo, CPU) shard a LoRA model with FSDP2, then save its adapter as the training
stages do. argv: project root, base model dir, output dir, mode (gather | rank0-only)."""
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist

sys.path.insert(0, sys.argv[1])
from peft import get_peft_model  # noqa: E402
from torch.distributed.fsdp import fully_shard  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from stages.lib.params import LoraParams  # noqa: E402
from stages.lib.training import gather_adapter, lora_config, save_adapter  # noqa: E402


def seeded_lora_model(base):
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = get_peft_model(model, lora_config(LoraParams(r=8, alpha=16, dropout=0.0)))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # as after training: B no longer zero, values the same in every process
        for name, param in sorted(model.named_parameters()):
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator))
    return model


def main():
    root, base, out, mode = sys.argv[1:5]
    if mode == "single":
        save_adapter(seeded_lora_model(base), Path(out))
        return
    dist.init_process_group("gloo")
    model = seeded_lora_model(base)
    for layer in model.base_model.model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    shard = next(p for n, p in model.named_parameters() if "lora_A" in n)
    print(f"rank {dist.get_rank()}: {type(shard).__name__} local shard {tuple(shard.to_local().shape)}", flush=True)
    if mode == "gather":
        weights = gather_adapter(SimpleNamespace(model=model))  # every process, as the stages call it
        if dist.get_rank() == 0:
            save_adapter(model, Path(out), weights)
    else:  # what the stages did before: the main process saves, the others leave
        if dist.get_rank() == 0:
            save_adapter(model, Path(out))
    dist.barrier()
    dist.destroy_process_group()


main()
