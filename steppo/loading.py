"""From a config to a :class:`~steppo.policy.Policy` on its device: model spec, init folder, LoRA, frozen layers."""

from __future__ import annotations

import torch

from stepgym.errors import InvalidArgument, InvalidConfig
from stepgym.policy_folder import resolve_checkpoint
from steppo.config import CommonConfig
from steppo.policy import Policy

__all__ = ["build_policy", "resolve_init", "resolve_device"]


def resolve_init(path: str) -> str:
    """The policy folder of ``--init``: a ``stepgym sft``/``train`` output dir, its ``policy/``, or a saved model.

    A path that does not exist is an error here, never a Hugging Face id (use ``--model`` for those).

    Example:
        >>> resolve_init("runs/does-not-exist")
        Traceback (most recent call last):
        ...
        stepgym.errors.InvalidConfig: invalid value for 'init': expected a `stepgym sft`/`stepgym train` output dir or a saved model folder (checkpoint directory 'runs/does-not-exist' does not exist; pass the --out directory of a training run); for a Hugging Face model use --model, got 'runs/does-not-exist'
    """
    try:
        return resolve_checkpoint(path)
    except InvalidArgument as exc:
        raise InvalidConfig("init", path, f"a `stepgym sft`/`stepgym train` output dir or a saved model folder "
                            f"({exc}); for a Hugging Face model use --model") from None


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; a named CUDA device must exist.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidConfig("device", name, "'cpu' or 'auto' (no CUDA device is available here)")
    return dev


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The compute dtype of ``--dtype``: ``"auto"`` -> bfloat16 where ``device`` computes it natively.

    Natively: a CUDA GPU with bf16 support, or a CPU whose oneDNN build has bf16 kernels
    (AVX512-BF16 or AMX). There, SmolLM2-135M's update runs about 3x and its sampling about 1.9x
    as fast as in float32 (docs/benchmarks.md, "Precision"); elsewhere bf16 is emulated and slow,
    so ``"auto"`` stays float32.

    Example:
        >>> resolve_dtype("float32", torch.device("cpu"))
        torch.float32
    """
    if name != "auto":
        return getattr(torch, name)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return torch.float32


def build_policy(cfg: CommonConfig, critic: str = "none", *, temperature: float = 1.0,
                 for_reference: bool = False) -> Policy:
    """Load ``cfg.model`` (or ``cfg.init`` when set) as a :class:`Policy` with a ``critic`` head.

    Args:
        cfg: any config (RL or SFT): model, init, seed, dtype (the autocast dtype; weights stay
            float32), device, LoRA and frozen layers.
        critic: ``"none"``, ``"shared"`` (a value head on the trunk) or ``"separate"``.
        temperature: the sampling temperature the log-probs are taken at.
        for_reference: a frozen copy without critic or LoRA (the KL reference).
    """
    from steppo.models import load_model

    spec = resolve_init(cfg.init) if cfg.init else cfg.model
    # bfloat16/float16: mixed precision. The weights (and so AdamW's state) stay float32, the
    # forward/backward passes run under torch.autocast; bf16 weights with a bf16 optimizer lose
    # small updates (docs/benchmarks.md, "Precision").
    lm, tok = load_model(spec, seed=cfg.seed, dtype=torch.float32)
    if cfg.lora_r and not for_reference:
        from steppo.models import apply_lora

        lm = apply_lora(lm, r=cfg.lora_r, alpha=cfg.lora_alpha)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    pol = Policy(lm, tok, critic="none" if for_reference else critic, temperature=temperature,
                 autocast_dtype=None if dtype == torch.float32 else dtype)
    if cfg.init:
        pol.init_folder = spec
    if cfg.init and not for_reference and critic != "none":
        pol.load_critic_from(spec)
    if for_reference:
        for p in pol.parameters():
            p.requires_grad_(False)
        pol.eval()
    elif cfg.train_layers:
        pol.freeze_all_but_last(cfg.train_layers)
    return pol.to(device)
