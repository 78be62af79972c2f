"""The rows of one network call, in one place (the shape of Stability's ``sgm`` guiders: build
the rows, call the network once, split its output).

A call evaluates ``G`` groups of ``B`` rows, one row per image, group-major: row ``g·B + b`` is
image ``b`` of group ``g``. A group is one (latent, condition, noise level) for every image —
in the edit loop the base conditions and then each active concept, all at the same latent and
step; in the inversion each step of a chunk times each base condition. When memory is short the
groups go through the network a few at a time: :meth:`RowLayout.calls` plans those calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .memory import even_chunk
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

    def calls(self, most: int | None = None) -> list[CallRows]:
        """The network calls that evaluate these rows when one call takes at most ``most`` groups
        (None: all in one call): whole groups, in order, evened out so that every call but the
        last takes the same number.

        >>> [(c.start, c.layout.groups) for c in RowLayout(5, 2).calls(2)]  # 3 calls: 2, 2, 1 groups
        [(0, 2), (2, 2), (4, 1)]
        """
        per_call = even_chunk(self.groups, most or self.groups)
        return [
            CallRows(start, RowLayout(min(per_call, self.groups - start), self.batch))
            for start in range(0, self.groups, per_call)
        ]


@dataclass(frozen=True)
class CallRows:
    """One network call of a :class:`RowLayout`: its groups ``start …``, laid out as ``layout``."""

    start: int
    layout: RowLayout

    @property
    def rows(self) -> slice:
        """This call's rows among the whole layout's."""
        batch = self.layout.batch
        return slice(self.start * batch, (self.start + self.layout.groups) * batch)

    def rows_from(self, group: int) -> tuple[slice, slice] | None:
        """This call's rows of the whole layout's groups ``group …`` (e.g. the concepts, after the
        base conditions): in the call, and counted from ``group``'s first row (an index into
        tensors of one entry per such row); None when the call holds none of them."""
        end = self.start + self.layout.groups
        first = max(group, self.start)
        if first >= end:
            return None
        batch = self.layout.batch
        return slice((first - self.start) * batch, None), slice((first - group) * batch, (end - group) * batch)
