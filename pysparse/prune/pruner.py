"""Gradual magnitude pruning of a PyTorch model during training.

    pruner = GradualPruner(model, target=0.8, block=4, begin_step=0, end_step=1000, frequency=100)
    for batch in data:
        loss(model(batch)).backward()
        optimizer.step()
        pruner.step()           # raises the sparsity on schedule and re-applies the masks
    pruner.finalize()           # zeros stay in the weights; hooks removed
    print(pruner.text_report())

The masks are applied to the weights themselves (no reparametrisation), so the model keeps
its usual parameters and state dict. Gradients of pruned weights are masked by a tensor
hook (so optimiser moments of pruned weights do not build up) and the weights are masked
again after every step: momentum or Adam updates cannot bring a zero back. Passing
`optimizer=` also re-applies the masks from the optimiser's post-step hook.
"""
from __future__ import annotations

import torch
from torch import nn

from . import masks as M
from .layers import MIN_WEIGHTS, LayerInfo, exclusion
from .report import LayerReport, layer_report, rich_table, text_table, totals
from .schedule import PolynomialSchedule

SCOPES = ("layer", "global")


def torch_layers(model: nn.Module) -> list[tuple[LayerInfo, nn.Parameter]]:
    """The conv and fully connected weights of `model` with what the pruning rule needs.

    A model may describe its own layers with a `prunable_layers()` method returning such
    pairs (pysparse.torch_module does, naming them after the IR constants); otherwise every
    nn.Conv2d and nn.Linear counts, named by module path, the first Conv2d being the stem."""
    if hasattr(model, "prunable_layers"):
        return list(model.prunable_layers())
    out, seen, first = [], set(), True
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            info = LayerInfo(name, "conv", tuple(m.weight.shape), m.groups, first)
            first = False
        elif isinstance(m, nn.Linear):
            info = LayerInfo(name, "fc", tuple(m.weight.shape))
        else:
            continue
        if id(m.weight) not in seen:
            seen.add(id(m.weight))
            out.append((info, m.weight))
    return out


class GradualPruner:
    def __init__(self, model: nn.Module, target: float = 0.8, block: int = 1, begin_step: int = 0,
                 end_step: int = 1000, frequency: int = 100, scope: str = "layer", exclude=(), include=(),
                 initial: float = 0.0, power: float = 3.0, norm: str = "l2", min_weights: int = MIN_WEIGHTS,
                 optimizer: torch.optim.Optimizer | None = None):
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
        if norm not in M.NORMS:
            raise ValueError(f"norm must be one of {M.NORMS}, got {norm!r}")
        self.block = M.check_block(block)
        self.scope, self.norm = scope, norm
        self.schedule = PolynomialSchedule(target, initial, begin_step, end_step, frequency, power)
        self.layers: dict[str, tuple[LayerInfo, nn.Parameter]] = {}
        self.skipped: dict[str, tuple[LayerInfo, nn.Parameter, str]] = {}
        found = torch_layers(model)
        self._order = {info.name: i for i, (info, _) in enumerate(found)}
        for info, p in found:
            why = exclusion(info, exclude, include, min_weights)
            if why is None:
                self.layers[info.name] = (info, p)
            else:
                self.skipped[info.name] = (info, p, why)
        if not self.layers:
            raise ValueError("no layer to prune: every conv/fc weight is excluded (see `include=`)")
        self.masks: dict[str, torch.Tensor] = {
            name: torch.ones_like(p, dtype=torch.bool) for name, (_, p) in self.layers.items()}
        self.step_count = 0
        self.current_sparsity = 0.0
        self._hooks = [p.register_hook(self._grad_hook(name)) for name, (_, p) in self.layers.items()]
        if optimizer is not None:
            self._hooks.append(optimizer.register_step_post_hook(lambda *_: self.apply_masks()))
        self.finalized = False

    def _grad_hook(self, name: str):
        def hook(grad):
            return grad * self.masks[name].to(grad.dtype)
        return hook

    # -- training loop --------------------------------------------------------------------
    def step(self) -> None:
        """Call once per training step, after `optimizer.step()`."""
        if self.finalized:
            raise RuntimeError("the pruner was finalized")
        if self.schedule.updates_at(self.step_count):
            self.update_masks(self.schedule.sparsity(self.step_count))
        self.apply_masks()
        self.step_count += 1

    @torch.no_grad()
    def update_masks(self, sparsity: float) -> None:
        """Recomputes the masks for `sparsity` from the current (masked) weights."""
        weights = {name: (p * self.masks[name]).detach().cpu().numpy() for name, (_, p) in self.layers.items()}
        if self.scope == "global":
            new = M.global_masks(weights, sparsity, self.block, self.norm)
        else:
            new = {name: M.layer_mask(w, sparsity, self.block, self.norm) for name, w in weights.items()}
        for name, keep in new.items():
            self.masks[name] = torch.from_numpy(keep).to(self.layers[name][1].device)
        self.current_sparsity = sparsity

    @torch.no_grad()
    def apply_masks(self) -> None:
        for name, (_, p) in self.layers.items():
            p.mul_(self.masks[name].to(p.dtype))

    def finalize(self) -> list[LayerReport]:
        """Makes the zeros permanent, removes the hooks and returns the report."""
        if not self.finalized:
            self.apply_masks()
            for h in self._hooks:
                h.remove()
            self._hooks = []
            self.finalized = True
        return self.report()

    # -- reporting and resuming -----------------------------------------------------------
    def report(self) -> list[LayerReport]:
        rows = []
        for name, (info, p) in self.layers.items():
            rows.append(layer_report(info, p.detach().cpu().numpy(), self.block, "pruned"))
        for name, (info, p, why) in self.skipped.items():
            rows.append(layer_report(info, p.detach().cpu().numpy(), self.block, why))
        return sorted(rows, key=lambda r: self._order[r.name])

    def totals(self) -> dict:
        return totals(self.report())

    def text_report(self) -> str:
        return text_table(self.report())

    def rich_report(self, title: str = "per-layer sparsity"):
        return rich_table(self.report(), title)

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "current_sparsity": self.current_sparsity,
                "masks": {k: v.cpu() for k, v in self.masks.items()}}

    def load_state_dict(self, state: dict) -> None:
        if set(state["masks"]) != set(self.masks):
            raise ValueError("the saved masks are for other layers")
        self.step_count = int(state["step_count"])
        self.current_sparsity = float(state["current_sparsity"])
        for k, v in state["masks"].items():
            self.masks[k] = v.to(torch.bool).to(self.layers[k][1].device)
        self.apply_masks()

