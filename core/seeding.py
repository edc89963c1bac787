"""Seeds derived from several integers (run seed, epoch, step, rank ...), stable across processes.

Python's ``hash()`` is salted per process, so it cannot give ranks or a resumed run the same stream;
a short blake2b digest can. Every per-epoch / per-step / per-rank seed in the project comes from here.
"""

from __future__ import annotations

import hashlib


def mix_seed(*parts: int) -> int:
    """A 63-bit seed that depends on every integer in ``parts`` and on their order.

    Example: ``torch.Generator().manual_seed(mix_seed(seed, epoch))``.
    """
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)
