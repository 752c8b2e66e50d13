"""Trainings shared within one run: the explicit replacement of a process-wide memo.

Pipelines of one study often need the very same training: the fused pipeline's ``cnn`` block and
the deep pipeline whose classifier names that block's network (``network = "cnn"`` in the study),
an ensemble and its members, two pipelines with the same trainable mask maker. The runners of one
``compare`` (or one ``train``) are given one :class:`TrainedCache`; each fit of a trainable plugin
goes through :meth:`TrainedCache.fit`, which trains once per key and lets later fits adopt that
training. Outside a cache, ``fit`` always trains: ``clone(est).fit(...)`` is independent.

A plugin takes part by offering two methods (the built-in Keras plugins do, through
``medfuse_plugins._keras.KerasStateMixin``):

* ``training_key(*fit_args) -> str | None``: a digest of everything that decides the trained state
  (the network, the training parameters with the seed, the training arrays); None: never shared;
* ``adopt_training(other) -> self``: take the trained state of ``other``, fitted with the same key.

A script running several studies that should share trainings (e.g. ``bench/run_studies.py``: the
U-Nets of a study and the segmentation comparison on its folds) opens ``with cache.shared():``;
runners built without a cache of their own inside the block use that one (:func:`current`).

The key holds the training inputs, not only the name of the block that asked: two pipelines may
prepare a block's images differently (transforms, masks), and then they must not share.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainedCache:
    """Fitted plugins of one run, by training key; the last ``max_items`` are kept (in memory).

    ``trainings`` counts the fits that trained, ``reuses`` those that adopted an earlier training;
    ``owners`` maps each kept key to the slot that trained it (e.g. ``blocks.cnn``).
    """

    max_items: int = 8
    trainings: int = 0
    reuses: int = 0
    _items: OrderedDict[str, Any] = field(default_factory=OrderedDict, repr=False)
    owners: dict[str, str] = field(default_factory=dict, repr=False)

    def fit(self, plugin: Any, *args: Any, owner: str = "") -> Any:
        """``plugin.fit(*args)``, or ``plugin`` adopting the training of an earlier fit with the same
        ``training_key``; returns the fitted plugin. ``owner`` names the slot, for :attr:`owners`."""
        key_of = getattr(plugin, "training_key", None)
        key = key_of(*args) if callable(key_of) else None
        if key is None:
            return plugin.fit(*args)
        hit = self._items.get(key)
        if hit is not None:
            self._items.move_to_end(key)
            self.reuses += 1
            return plugin.adopt_training(hit)
        fitted = plugin.fit(*args)
        self.trainings += 1
        self._items[key] = fitted
        self.owners[key] = owner
        while len(self._items) > self.max_items:
            old, _ = self._items.popitem(last=False)
            self.owners.pop(old, None)
        return fitted

    @contextlib.contextmanager
    def shared(self) -> Iterator[TrainedCache]:
        """Within the block, :func:`current` is this cache (runners made without one use it)."""
        token = _CURRENT.set(self)
        try:
            yield self
        finally:
            _CURRENT.reset(token)

    def clear(self) -> None:
        """Forget every kept training (the counts stay)."""
        self._items.clear()
        self.owners.clear()

    def __len__(self) -> int:
        return len(self._items)


_CURRENT: ContextVar[TrainedCache | None] = ContextVar("medfuse_trained_cache", default=None)


def current() -> TrainedCache | None:
    """The cache of the innermost ``with cache.shared():`` block, or None."""
    return _CURRENT.get()


def for_run(trained: TrainedCache | None = None) -> TrainedCache:
    """``trained``, else the :func:`current` shared cache, else a new one (one run's own)."""
    if trained is not None:
        return trained
    shared = current()
    return shared if shared is not None else TrainedCache()  # (an empty cache is falsy: no `or`)
