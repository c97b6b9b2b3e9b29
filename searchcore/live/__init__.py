"""A live shop: catalog edits that reach search at once, survive crashes, never lose each
other when several processes write at once, and cost what they change.

- :mod:`.shop`: :class:`LiveShop`, the writers (add, update, remove, compact), committing each
  change as one record of the index folder's change log;
- :mod:`.state`: a folder's snapshot with its log replayed, and one change applied to a view;
- :mod:`.follow`: :class:`Follower`, which keeps a serving engine (the app) on the newest
  committed state;
- :mod:`.check`: :func:`check_invariants`, what ``searchcore catalog check`` reports.
"""

from searchcore.catalog import REMOVED
from searchcore.live.check import check_invariants
from searchcore.live.follow import Follower
from searchcore.live.shop import COMPACT_EVERY, LIVE_DIR, PHOTO_GRACE_S, LiveShop

__all__ = [
    "COMPACT_EVERY",
    "LIVE_DIR",
    "PHOTO_GRACE_S",
    "REMOVED",
    "Follower",
    "LiveShop",
    "check_invariants",
]
