"""What an RLOO run trains: steering vectors, a PEFT LoRA, or every weight.

A :class:`Trainable` gives the kernel (:mod:`steerlib.rloo`) its parameter groups (one Adam optimizer
each), the routing groups of a multiplexed sweep, the context in which the policy runs (steering
hooks, or the adapted / copied model), the reference policy for an optional KL term, and the tensors
a checkpoint saves.

Example:
    >>> tr = VectorTrainable(model, zero_vectors(model, [5]))       # doctest: +SKIP
    >>> tr.param_groups()                                          # doctest: +SKIP
    [[Parameter containing: ...]]
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from steerlib.steering import Positions, SteeringVector, steer

__all__ = ["Trainable", "VectorTrainable", "LoraTrainable", "FullTrainable"]


class Trainable:
    """What an RLOO run optimises. Subclasses set ``model`` and implement the hooks below."""

    model: Any

    def param_groups(self) -> list[list[nn.Parameter]]:
        """Tensors to train, grouped: gradients are clipped per group (one group per route)."""
        raise NotImplementedError

    def route_ids(self) -> list[int] | None:
        """Routing groups of a multiplexed run (``None``: one policy for every row)."""
        return None

    def start_block(self, route: int | None) -> int:
        """The first decoder block whose computation depends on what is trained (for one route)."""
        return 0

    def context(
        self, routing: Sequence[int] | None, prompt_length: int | None = None
    ) -> contextlib.AbstractContextManager:
        """Applies the policy's modifications (e.g. steering hooks) for a teacher-forced pass."""
        return contextlib.nullcontext()

    def reference(self) -> contextlib.AbstractContextManager:
        """The reference policy for the KL term."""
        raise NotImplementedError

    def named_tensors(self) -> dict[str, torch.Tensor]:
        """The trained tensors by name (checkpoints)."""
        return {f"p{g}.{i}": p for g, grp in enumerate(self.param_groups()) for i, p in enumerate(grp)}

    def steering(self) -> tuple[list[SteeringVector] | None, Positions]:
        """Vectors and positions used during rollouts (``None`` for weight-based policies)."""
        return None, "all"

    def optimizer_groups(self) -> list[list[torch.Tensor]]:
        """What the optimizers update (default: :meth:`param_groups`; fp32 master copies when the
        model's weights are in half precision, see :class:`FullTrainable`)."""
        return self.param_groups()

    def before_step(self) -> None:
        """Called after the backward pass, before clipping and the optimizer step."""

    def after_step(self) -> None:
        """Called after the optimizer step."""

    def master_tensors(self) -> dict[str, torch.Tensor]:
        """Optimizer-side copies to checkpoint for an exact resume (none by default)."""
        return {}


class VectorTrainable(Trainable):
    """Steering vectors: one layer, all layers at once, or routed per layer (multiplexed sweep)."""

    def __init__(
        self,
        model: Any,
        vectors: Sequence[SteeringVector],
        positions: Positions = "all",
        orthogonal_to: torch.Tensor | None = None,
    ) -> None:
        self.model = model
        self.vectors = list(vectors)
        self.positions = positions
        self.basis: torch.Tensor | None = None  # orthonormal rows the vectors are kept orthogonal to
        if orthogonal_to is not None:
            dirs = orthogonal_to.detach().float().reshape(-1, orthogonal_to.shape[-1])
            self.basis = torch.linalg.qr(dirs.T).Q.T.to(self.vectors[0].vector)
        for v in self.vectors:
            if not (isinstance(v.vector, nn.Parameter) and v.vector.requires_grad):
                raise ValueError("VectorTrainable needs nn.Parameter vectors (see zero_vectors)")
        routes = [v.route for v in self.vectors]
        if any(r is not None for r in routes) and len(set(routes)) != len(routes):
            raise ValueError("a multiplexed run needs exactly one vector per route")
        self._routed = routes[0] is not None if routes else False

    def param_groups(self) -> list[list[nn.Parameter]]:
        if self._routed:
            return [[v.vector] for v in self.vectors]  # type: ignore[list-item]
        return [[v.vector for v in self.vectors]]  # type: ignore[misc]

    def route_ids(self) -> list[int] | None:
        return [int(v.route) for v in self.vectors] if self._routed else None  # type: ignore[arg-type]

    def effective_vectors(self) -> list[SteeringVector]:
        """The vectors as applied: with their component along ``orthogonal_to`` removed, if given."""
        if self.basis is None:
            return self.vectors
        b = self.basis
        return [dataclasses.replace(v, vector=v.vector - b.T @ (b @ v.vector)) for v in self.vectors]

    def start_block(self, route: int | None) -> int:
        layers = [v.layer for v in self.vectors if route is None or v.route == route]
        return min(layers) if layers else 0

    def context(self, routing, prompt_length=None):
        vectors = self.effective_vectors()
        if routing is not None and self._routed and len(set(routing)) == 1:
            # every row goes to one route (the loss pass of one multiplexed group): apply only that
            # route's vector, so autograd never records the other layers' (zero-masked) vectors
            route = next(iter(routing))
            vectors = [dataclasses.replace(v, route=None) for v in vectors if v.route == route]
            routing = None
        return steer(self.model, vectors, positions=self.positions, routing=routing, prompt_length=prompt_length)

    def reference(self):
        return contextlib.nullcontext()

    def named_tensors(self) -> dict[str, torch.Tensor]:
        return {f"vector.{i}": v.vector for i, v in enumerate(self.vectors)}

    def steering(self):
        return self.effective_vectors(), self.positions


class LoraTrainable(Trainable):
    """A PEFT LoRA on ``down_proj`` (a copy of the model is wrapped; the original stays untouched).

    Args:
        layers: layers to adapt (``None``: all). Rank 1 on one layer is the paper's adaptive steering.
        r, alpha: LoRA rank and alpha (paper baseline r = alpha = 4).
    """

    def __init__(
        self, model: Any, *, layers: Sequence[int] | None = None, r: int = 4, alpha: int = 4, seed: int = 0
    ) -> None:
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(seed)
        cfg = LoraConfig(
            r=r,
            lora_alpha=alpha,
            lora_dropout=0.0,
            target_modules=["down_proj"],
            layers_to_transform=list(layers) if layers is not None else None,
            bias="none",
        )
        self.model = get_peft_model(copy.deepcopy(model), cfg)
        self.model.eval()

    def param_groups(self):
        return [[p for p in self.model.parameters() if p.requires_grad]]

    def named_tensors(self):
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def reference(self):
        return self.model.disable_adapter()


class FullTrainable(Trainable):
    """All weights of a copy of the model (the full fine-tune baseline).

    When the weights are in half precision (bf16/fp16), Adam updates fp32 *master* copies and the
    model's weights are rounded from them after every step: at the paper's learning rates (1e-6, 2e-6)
    an update applied to bf16 weights directly is mostly below half a unit in the last place and
    rounds to nothing. Float32 models are updated in place, as before.
    """

    def __init__(self, model: Any) -> None:
        self.model = copy.deepcopy(model)
        self.model.requires_grad_(True)
        self.model.eval()  # no dropout: the organism has none, real models are sampled in eval mode
        params = list(self.model.parameters())
        half = any(p.dtype in (torch.bfloat16, torch.float16) for p in params)
        self.master = [p.detach().float().clone().requires_grad_(True) for p in params] if half else None

    def param_groups(self):
        return [list(self.model.parameters())]

    def optimizer_groups(self):
        return [self.master] if self.master is not None else self.param_groups()

    def before_step(self) -> None:
        if self.master is None:
            return
        for m, p in zip(self.master, self.model.parameters()):
            m.grad = None if p.grad is None else p.grad.float()
            p.grad = None

    def after_step(self) -> None:
        if self.master is None:
            return
        with torch.no_grad():
            for m, p in zip(self.master, self.model.parameters()):
                p.copy_(m)

    def master_tensors(self) -> dict[str, torch.Tensor]:
        names = [n for n, _ in self.model.named_parameters()]
        return dict(zip(names, self.master)) if self.master is not None else {}

    def named_tensors(self):
        return dict(self.model.named_parameters())

    def reference(self):
        raise NotImplementedError("KL for the full fine-tune needs a frozen copy; not implemented")
