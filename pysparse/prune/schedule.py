"""When to prune and how much: polynomial decay of the sparsity, as in TF-MOT's PolynomialDecay.

    s(t) = final + (initial - final) * (1 - p) ** power,  p = clamp((t - begin) / (end - begin), 0, 1)

The sparsity rises fast at first, while the network still has redundant weights to lose,
and slowly near the end, so that training can recover from the last cuts.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PolynomialSchedule:
    final: float = 0.8
    initial: float = 0.0
    begin_step: int = 0
    end_step: int = 1000
    frequency: int = 100
    power: float = 3.0

    def __post_init__(self):
        for name in ("initial", "final"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{name} sparsity must be in [0, 1), got {v}")
        if self.begin_step < 0 or self.end_step < self.begin_step:
            raise ValueError(f"need 0 <= begin_step <= end_step, got {self.begin_step}, {self.end_step}")
        if self.frequency < 1:
            raise ValueError(f"frequency must be >= 1, got {self.frequency}")
        if self.power <= 0:
            raise ValueError(f"power must be > 0, got {self.power}")

    def sparsity(self, step: int) -> float:
        """The target sparsity at `step` (the initial one before begin, the final one after end)."""
        if self.end_step == self.begin_step:
            return self.final if step >= self.begin_step else self.initial
        p = min(1.0, max(0.0, (step - self.begin_step) / (self.end_step - self.begin_step)))
        return self.final + (self.initial - self.final) * (1.0 - p) ** self.power

    def updates_at(self, step: int) -> bool:
        """Whether the masks are recomputed at `step`: every `frequency` steps from begin_step,
        and at end_step itself so that the final sparsity is always reached."""
        if step < self.begin_step or step > self.end_step:
            return False
        return (step - self.begin_step) % self.frequency == 0 or step == self.end_step
