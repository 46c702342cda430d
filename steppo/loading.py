"""From a config to a :class:`~steppo.policy.Policy` on its device: model spec, init folder, LoRA, frozen layers."""

from __future__ import annotations

import os

import torch

from stepgym.errors import InvalidConfig
from steppo.config import CommonConfig
from steppo.policy import Policy

__all__ = ["build_policy", "resolve_init", "resolve_device"]


def resolve_init(path: str) -> str:
    """The policy folder inside a ``stepgym sft``/``train`` output dir (or ``path`` itself).

    A path that does not exist is passed on as a Hugging Face model id.

    Example:
        >>> resolve_init("HuggingFaceTB/SmolLM2-135M-Instruct")
        'HuggingFaceTB/SmolLM2-135M-Instruct'
    """
    if not path or not os.path.exists(path):
        return path
    if os.path.isdir(os.path.join(path, "policy")):
        return os.path.join(path, "policy")
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, "config.json")):
        raise InvalidConfig("init", path, "a `stepgym sft`/`stepgym train` output dir or a saved model folder "
                            "(it has no policy/ and no config.json)")
    return path


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


def build_policy(cfg: CommonConfig, critic: str = "none", *, temperature: float = 1.0,
                 for_reference: bool = False) -> Policy:
    """Load ``cfg.model`` (or ``cfg.init`` when set) as a :class:`Policy` with a ``critic`` head.

    Args:
        cfg: any config (RL or SFT): model, init, seed, dtype, device, LoRA and frozen layers.
        critic: ``"none"``, ``"shared"`` (a value head on the trunk) or ``"separate"``.
        temperature: the sampling temperature the log-probs are taken at.
        for_reference: a frozen copy without critic or LoRA (the KL reference).
    """
    from steppo.models import load_model

    spec = resolve_init(cfg.init) if cfg.init else cfg.model
    lm, tok = load_model(spec, seed=cfg.seed, dtype=getattr(torch, cfg.dtype))
    if cfg.lora_r and not for_reference:
        from steppo.models import apply_lora

        lm = apply_lora(lm, r=cfg.lora_r, alpha=cfg.lora_alpha)
    pol = Policy(lm, tok, critic="none" if for_reference else critic, temperature=temperature)
    if cfg.init and not for_reference and critic != "none":
        pol.load_critic_from(spec)
    if for_reference:
        for p in pol.parameters():
            p.requires_grad_(False)
        pol.eval()
    elif cfg.train_layers:
        pol.freeze_all_but_last(cfg.train_layers)
    return pol.to(resolve_device(cfg.device))
