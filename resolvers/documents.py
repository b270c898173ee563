"""GraphQL documents registered by clients (automatic persisted queries), by SHA-256 hash.

Beside the upstream cache and chosen by the same ``CACHE_URL``: in process (cachetools: an
LRU bounded in bytes), or on the cache's Redis, where every replica finds what a client
registered with any of them. Anyone may register a document, so both are bounded: entries
expire DOCUMENT_TTL_S after their last use, documents over MAX_DOCUMENT_BYTES are not kept
(they still run, sent in full each time), and the in-process store holds MEMORY_BYTES.
A store that fails is a store that does not know the document: the client sends it again.
"""

import logging
import sys
import time
from collections.abc import Callable

from cachetools import TLRUCache
from redis.asyncio import Redis

from resolvers.cache import CacheBackend, RedisCache

log = logging.getLogger(__name__)

DOCUMENT_TTL_S = 3600.0
"""How long a document stays after it was last registered or used: a frontend sends its
few documents again and again, which keeps them; one nobody uses goes within the hour."""
MAX_DOCUMENT_BYTES = 64 * 1024
"""The largest document kept, in UTF-8 bytes: the frontend's are a few KiB."""
MEMORY_BYTES = 8 * 1024 * 1024
"""What the in-process store may hold: thousands of documents of frontend size."""

_HASH_BYTES = sys.getsizeof("0" * 64)


def _size(text: str) -> int:
    return _HASH_BYTES + sys.getsizeof(text)


def _fits(text: str) -> bool:
    return len(text.encode("utf-8", "surrogatepass")) <= MAX_DOCUMENT_BYTES


class MemoryDocuments:
    """Documents in this process, least recently used going first beyond ``max_bytes``;
    expired on ``timer`` when read or written, with no timer of their own."""

    def __init__(
        self,
        max_bytes: int = MEMORY_BYTES,
        ttl_s: float = DOCUMENT_TTL_S,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._documents: TLRUCache[str, str, float] = TLRUCache(
            max_bytes, lambda _hash, _text, now: now + ttl_s, timer, _size
        )

    async def get(self, sha256: str) -> str | None:
        self._documents.expire()
        text = self._documents.get(sha256)
        if text is not None:
            self._documents[sha256] = text  # used: its lifetime starts again
        return text

    async def put(self, sha256: str, text: str) -> None:
        if _fits(text):
            self._documents[sha256] = text


class RedisDocuments:
    """Documents on Redis under ``provgraph:document:<sha256>``, shared by every replica;
    reading one renews its lifetime (GETEX)."""

    PREFIX = f"{RedisCache.NAMESPACE}:document:"

    def __init__(self, client: Redis, ttl_s: float = DOCUMENT_TTL_S) -> None:
        self.client = client
        self._ttl_ms = int(ttl_s * 1000)

    async def get(self, sha256: str) -> str | None:
        try:
            data = await self.client.getex(self.PREFIX + sha256, px=self._ttl_ms)
        except Exception as error:
            log.warning("reading a persisted document failed (%s)", type(error).__name__)
            return None
        if isinstance(data, bytes):
            return data.decode("utf-8", "surrogatepass")
        return data

    async def put(self, sha256: str, text: str) -> None:
        if not _fits(text):
            return
        data = text.encode("utf-8", "surrogatepass")
        try:
            await self.client.set(self.PREFIX + sha256, data, px=self._ttl_ms)
        except Exception as error:
            log.warning("storing a persisted document failed (%s)", type(error).__name__)


DocumentStore = MemoryDocuments | RedisDocuments


def document_store(backend: CacheBackend) -> DocumentStore:
    """Where the cache lives: on its Redis (the cache owns and closes the client), or in
    this process."""
    if isinstance(backend, RedisCache):
        return RedisDocuments(backend.client)
    return MemoryDocuments()
