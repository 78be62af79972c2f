"""The rows of one network call, in one place (the shape of Stability's ``sgm`` guiders: build
the rows, call the network once, split its output).

A call evaluates ``G`` groups of ``B`` rows, one row per image, group-major: row ``g·B + b`` is
image ``b`` of group ``g``. A group is one (latent, condition, noise level) for every image —
in the edit loop the base conditions and then each active concept, all at the same latent and
step; in the inversion each step of a chunk times each base condition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .models.base import Conditioning


@dataclass(frozen=True)
class RowLayout:
    """``groups`` × ``batch`` rows, group-major."""

    groups: int
    batch: int

    @property
    def rows(self) -> int:
        return self.groups * self.batch

    def stack(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        """One (B, …) tensor per group → (G·B, …)."""
        if len(parts) != self.groups:
            raise ValueError(f"{len(parts)} parts for {self.groups} groups")
        return torch.cat(list(parts))

    def per_row(self, values: torch.Tensor) -> torch.Tensor:
        """One value per group (G, …) → one per row (G·B, …): each repeated for its B images."""
        return values.repeat_interleave(self.batch, dim=0)

    def conditions(self, groups: Sequence[Conditioning]) -> Conditioning:
        """One condition per group, each with one row or B → (G·B) rows, group-major."""
        return Conditioning.cat([g if len(g) == self.batch else g.repeat_rows(self.batch) for g in groups])

    def repeat(self, x: torch.Tensor) -> torch.Tensor:
        """The same (B, …) tensor for every group → (G·B, …)."""
        return x.repeat(self.groups, *([1] * (x.dim() - 1)))

    def split(self, out: torch.Tensor) -> torch.Tensor:
        """The network's output (G·B, …) → (G, B, …), a view."""
        return out.view(self.groups, self.batch, *out.shape[1:])

    def from_group(self, group: int) -> slice:
        """The rows of groups ``group …`` (e.g. the concept rows after the base conditions)."""
        return slice(group * self.batch, None)
