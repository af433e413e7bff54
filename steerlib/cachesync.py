"""Objects that follow a KV cache's batch changes: one mechanism for rollouts and head patching.

The rollout loop shares each prompt's prefill across its samples (``batch_repeat_interleave``) and
drops finished rows (``batch_select_indices``). Anything else that holds one entry per batch row
during generation (the routing of a :class:`~steerlib.steering.SteeringHandle`, the private cache
of a patched attention pass) registers here as a *follower* of the model's cache and is reindexed
with it, instead of being reindexed by hand.

A follower is any object with ``batch_repeat_interleave(repeats)`` and
``batch_select_indices(indices)`` methods.

Example:
    >>> class Rows:
    ...     def __init__(self): self.rows = [0, 1]
    ...     def batch_repeat_interleave(self, k): self.rows = [r for r in self.rows for _ in range(k)]
    ...     def batch_select_indices(self, idx): self.rows = [self.rows[int(i)] for i in idx]
    >>> class Cache:
    ...     def batch_repeat_interleave(self, k): pass
    ...     def batch_select_indices(self, idx): pass
    >>> cache, rows = Cache(), Rows()
    >>> follow(cache, rows)
    >>> cache.batch_repeat_interleave(2); cache.batch_select_indices([0, 3]); rows.rows
    [0, 1]
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["Follower", "follow", "followers"]

_ATTR = "_steerlib_followers"


class Follower(Protocol):
    """Something with one entry per batch row that must be reindexed with the cache."""

    def batch_repeat_interleave(self, repeats: int) -> None: ...

    def batch_select_indices(self, indices: Any) -> None: ...


def followers(cache: Any) -> list[Follower]:
    """The followers registered on ``cache`` (empty if none)."""
    return list(getattr(cache, _ATTR, []))


def follow(cache: Any, follower: Follower) -> None:
    """Reindex ``follower`` whenever ``cache`` repeats or selects batch rows (idempotent per object)."""
    registered = getattr(cache, _ATTR, None)
    if registered is None:
        registered = []
        rep, sel = cache.batch_repeat_interleave, cache.batch_select_indices

        def repeat(repeats: int) -> None:
            rep(repeats)
            for f in registered:
                f.batch_repeat_interleave(repeats)

        def select(indices: Any) -> None:
            sel(indices)
            for f in registered:
                f.batch_select_indices(indices)

        cache.batch_repeat_interleave, cache.batch_select_indices = repeat, select
        setattr(cache, _ATTR, registered)
    if not any(f is follower for f in registered):
        registered.append(follower)
