"""Which workflow chains may already have records in the store, in bounded memory.

The auditor keeps the heads of the chains it writes in memory (an LRU in AuditChain.workflows). A
workflow it holds no head for is either new (its first record: no look-up needed) or has records
stored (written before a restart, before its head was evicted, or by another replica before a
rebalance): those are remembered here, so only they cost a store look-up, once each.
"""

from __future__ import annotations

import hashlib


class MaybeStored:
    """A Bloom filter of workflow ids: no false negatives; a false positive costs one needless look-up.

    2^23 bits (1 MiB) and 7 hashes: about 1 % false positives at 800,000 workflows; past that the rate
    grows (more look-ups, never a wrong head), memory does not.
    """

    def __init__(self, bits: int = 1 << 23, hashes: int = 7) -> None:
        self._bits = bits
        self._hashes = hashes
        self._array = bytearray(bits // 8)

    def _positions(self, key: str) -> list[int]:
        digest = hashlib.blake2b(key.encode("utf-8", errors="surrogatepass"), digest_size=16).digest()
        h1 = int.from_bytes(digest[:8], "little")
        h2 = int.from_bytes(digest[8:], "little") | 1
        return [(h1 + i * h2) % self._bits for i in range(self._hashes)]

    def add(self, key: str) -> None:
        for p in self._positions(key):
            self._array[p >> 3] |= 1 << (p & 7)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        return all(self._array[p >> 3] & (1 << (p & 7)) for p in self._positions(key))
