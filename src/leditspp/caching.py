"""A small LRU cache of inversions, shared by the web UI, the evaluation suites and Ray workers.

An inversion is the expensive half of an edit (N network calls, the VAE encoder) and depends only
on the image and the inversion settings, so everything that edits one image several times (the
web UI's re-edits, a suite's edit types and sweep values, a Ray worker's share of a scene) keeps
the last few by key and computes a missing one once.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from PIL import Image

T = TypeVar("T")


class LRUCache(Generic[T]):
    """Values by key, at most ``size`` of them; the least recently used is dropped first.

    ``get(key, compute)`` returns the cached value or stores ``compute()``; ``hits`` and
    ``misses`` count the outcomes (a test reads them to check what was computed).
    """

    def __init__(self, size: int = 8) -> None:
        if size < 1:
            raise ValueError(f"cache size must be ≥ 1; got {size}")
        self.size = size
        self.hits = 0
        self.misses = 0
        self._values: OrderedDict[Hashable, T] = OrderedDict()

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        if key in self._values:
            self.hits += 1
            self._values.move_to_end(key)
            return self._values[key]
        self.misses += 1
        value = compute()
        self._values[key] = value
        while len(self._values) > self.size:
            self._values.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._values)


def image_key(image: Image.Image) -> str:
    """A digest of an image's pixels, mode and size: equal for equal images, whatever their file."""
    digest = hashlib.sha256(image.tobytes())
    digest.update(repr((image.mode, image.size)).encode())
    return digest.hexdigest()
