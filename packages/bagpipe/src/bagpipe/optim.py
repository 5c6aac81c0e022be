"""Row-wise embedding optimizers whose per-row state can travel with the row.

A cached row is updated only in the steps that use it, so an optimizer is exact here only if
an untouched row would not change under the dense optimizer either: plain SGD (no momentum, no
weight decay) and Adagrad (no weight decay, no lr decay). Both follow torch's formulas
(``torch.optim.SGD``, ``torch.optim.Adagrad``) so that a run matches a dense single-process
trainer to float rounding. Adagrad's state (the running sum of squared gradients) is one
vector per row, moved with the row's weights on eviction and prefetch.

>>> import torch
>>> opt = row_optimizer(torch.optim.Adagrad, {"lr": 0.1})
>>> w, s = torch.ones(2, 3), opt.init_state(2, 3)
>>> opt.apply(w, s, torch.tensor([1]), torch.full((1, 3), 2.0))
>>> w[1].tolist(), s[1].tolist()
([0.8999999761581421, 0.8999999761581421, 0.8999999761581421], [4.0, 4.0, 4.0])
"""

from __future__ import annotations

import torch
from torch import Tensor

from bagpipe.errors import BagpipeError


class RowSGD:
    """``w -= lr * g`` on the given rows."""

    name = "sgd"
    state_width_factor = 0

    def __init__(self, lr: float) -> None:
        self.lr = float(lr)

    def init_state(self, rows: int, width: int, device=None) -> Tensor:
        return torch.zeros(rows, 0, device=device)

    def apply(self, weight: Tensor, state: Tensor, slots: Tensor, grad: Tensor) -> None:
        weight.index_add_(0, slots, grad, alpha=-self.lr)

    def params(self) -> dict:
        return {"lr": self.lr}


class RowAdagrad:
    """torch's Adagrad per row: ``s += g*g; w -= lr * g / (sqrt(s) + eps)``."""

    name = "adagrad"
    state_width_factor = 1

    def __init__(
        self, lr: float = 0.01, eps: float = 1e-10, initial_accumulator_value: float = 0.0
    ):
        self.lr, self.eps, self.init = float(lr), float(eps), float(initial_accumulator_value)

    def init_state(self, rows: int, width: int, device=None) -> Tensor:
        return torch.full((rows, width), self.init, device=device)

    def apply(self, weight: Tensor, state: Tensor, slots: Tensor, grad: Tensor) -> None:
        s = state.index_select(0, slots).addcmul_(grad, grad, value=1.0)
        state.index_copy_(0, slots, s)
        w = weight.index_select(0, slots).addcdiv_(grad, s.sqrt().add_(self.eps), value=-self.lr)
        weight.index_copy_(0, slots, w)

    def params(self) -> dict:
        return {"lr": self.lr, "eps": self.eps, "initial_accumulator_value": self.init}


_ALLOWED = {
    "sgd": (RowSGD, {"lr"}, {"momentum": 0, "dampening": 0, "weight_decay": 0, "nesterov": False,
                             "maximize": False}),
    "adagrad": (RowAdagrad, {"lr", "eps", "initial_accumulator_value"},
                {"lr_decay": 0, "weight_decay": 0, "maximize": False}),
}  # fmt: skip


def optimizer_name(opt) -> str:
    """``"sgd"``/``"adagrad"`` for a torch optimizer class, a row optimizer or a name."""
    if isinstance(opt, str):
        name = opt.lower()
    elif isinstance(opt, type) and issubclass(opt, torch.optim.Optimizer):
        name = opt.__name__.lower()
    else:
        name = getattr(opt, "name", type(opt).__name__).lower()
    if name not in _ALLOWED:
        raise BagpipeError(
            f"emb_optim: {opt!r} is not supported for cached embeddings; use torch.optim.SGD or "
            "torch.optim.Adagrad (optimizers whose untouched rows do not change)"
        )
    return name


def row_optimizer(opt, params: dict | None = None):
    """The row-wise equivalent of ``opt(params)`` (a torch optimizer class or its name)."""
    name = optimizer_name(opt)
    cls, keys, neutral = _ALLOWED[name]
    params = dict(params or {})
    for key, value in list(params.items()):
        if key in neutral:
            if value != neutral[key]:
                raise BagpipeError(
                    f"emb_optim_params: {key}={value!r} is not supported with cached rows "
                    f"({name}: untouched rows would change); use {key}={neutral[key]!r}"
                )
            params.pop(key)
        elif key not in keys:
            raise BagpipeError(
                f"emb_optim_params: unknown parameter {key!r} for {name}; expected some of "
                f"{sorted(keys | set(neutral))}"
            )
    if name == "sgd" and "lr" not in params:
        raise BagpipeError("emb_optim_params: SGD needs lr, e.g. {'lr': 0.01}")
    return cls(**params)


class DenseOptimizer:
    """SGD or Adagrad over dense parameters with torch's formulas, without ``torch.optim``
    (whose first step imports the compiler stack: seconds per process at start-up)."""

    def __init__(self, params, name: str, lr: float, eps: float = 1e-10) -> None:
        self.params = [p for p in params]
        self.name = optimizer_name(name)
        self.lr, self.eps = float(lr), float(eps)
        self.state = [torch.zeros_like(p) for p in self.params] if self.name == "adagrad" else None

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            if self.state is None:
                p.add_(p.grad, alpha=-self.lr)
            else:
                s = self.state[i].addcmul_(p.grad, p.grad, value=1.0)
                p.addcdiv_(p.grad, s.sqrt().add_(self.eps), value=-self.lr)
