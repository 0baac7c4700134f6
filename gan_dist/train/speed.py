"""The step's speed switches resolved for one device: what applies where, and the compiled views of the nets.

Every switch is a request: on the CPU each falls back to plain eager fp32, so the same config runs anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from gan_dist.config import TrainConfig


@dataclass(frozen=True)
class StepFeatures:
    bf16: bool
    fused_adam: bool
    compile_mode: str | None  # None: eager
    compile_backend: str
    concat_d_forward: bool
    compile_optional: bool = False  # chosen by "auto": a graph that fails to compile runs eagerly instead

    @property
    def cuda_graphs(self) -> bool:
        return self.compile_mode == "reduce-overhead" and self.compile_backend == "inductor"

    def describe(self) -> str:
        compiled = f"compile {self.compile_mode} ({self.compile_backend})" if self.compile_mode else "eager"
        return (f"step: {compiled}, bf16 {'on' if self.bf16 else 'off'}, fused Adam {'on' if self.fused_adam else 'off'}, "
                f"D forward {'on cat(real, fake)' if self.concat_d_forward else 'real and fake apart'}")


def has_batch_norm(net: nn.Module) -> bool:
    return any(isinstance(m, _BatchNorm) for m in net.modules())


def resolve(train: TrainConfig, device: torch.device, discriminator: nn.Module) -> StepFeatures:
    cuda = device.type == "cuda"
    mode = train.compile
    if mode == "auto":
        mode = "reduce-overhead" if cuda else "off"
    elif mode == "reduce-overhead" and not cuda:
        mode = "default"  # no CUDA graphs without CUDA: compiled kernels only
    return StepFeatures(
        bf16=train.bf16 and cuda,
        fused_adam=train.fused_adam and cuda,
        compile_mode=None if mode == "off" else mode,
        compile_backend=train.compile_backend,
        # Batch norm would normalise real and fake with shared statistics: D then tells them apart by the batch.
        concat_d_forward=train.concat_d_forward and not has_batch_norm(discriminator),
        compile_optional=train.compile == "auto",
    )


def compiled(net: nn.Module, features: StepFeatures) -> nn.Module:
    """`net` under torch.compile when asked; the module itself otherwise. The plain module keeps its state."""
    if features.compile_mode is None:
        return net
    if features.compile_optional:  # process-wide; an explicit compile mode keeps failures loud
        torch._dynamo.config.suppress_errors = True
    if features.compile_backend != "inductor":  # modes are inductor's; other backends warn and ignore them
        return torch.compile(net, backend=features.compile_backend)
    mode = None if features.compile_mode == "default" else features.compile_mode
    return torch.compile(net, mode=mode)


def mark_step_begin(features: StepFeatures) -> None:
    """Tells CUDA graph trees a new iteration starts, so last step's graph outputs may be overwritten."""
    if features.cuda_graphs:
        torch.compiler.cudagraph_mark_step_begin()
