"""Persisted queries at /graphql: Apollo's automatic persisted queries (APQ), and trusted
documents.

A request may name its document by hash instead of sending it: in
``extensions.persistedQuery`` (``{"version": 1, "sha256Hash": ...}``, Apollo's APQ), or in a
top-level ``documentId`` (``sha256:<hash>`` or ``<hash>``, as GraphQL Code Generator's
persisted documents and GraphQL Yoga have it). A hash is the SHA-256 of the document's
UTF-8 text, in 64 lowercase hexadecimal digits. What a name finds, PERSISTED_QUERIES says:

- ``apq``: a document of the manifest, or one a client registered by sending it in full
  with its hash (checked against the text, then stored); an unknown one is
  ``PersistedQueryNotFound``, on which Apollo's PersistedQueryLink sends the document
  with its hash. Any document runs.
- ``only``: a document of the manifest (PERSISTED_DOCUMENTS), the only ones that run,
  whether named or sent in full; nothing is registered.
- ``off``: nothing: a name alone is ``PersistedQueryNotSupported``, on which Apollo's link
  sends documents in full from then on; a hash beside a document is ignored.

The manifest is the JSON object GraphQL Code Generator's client preset writes with
``persistedDocuments: true``: each document's hash to its text. ``provgraph documents``
writes ours from the frontend's documents in ``tests/queries``.
"""

import hashlib
import json
import re
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

from cross_web import AsyncHTTPRequestAdapter
from graphql import GraphQLError
from strawberry.http import GraphQLRequestData
from strawberry.types import ExecutionResult, SubscriptionExecutionResult
from strawberry.types.execution import PreExecutionError

from models.errors import ErrorCode
from resolvers.cache import CacheBackend
from resolvers.documents import DocumentStore, document_store
from server.settings import Settings

COMMITTED_MANIFEST = Path(__file__).with_name("persisted-documents.json")
"""The manifest of the frontend's documents, the default of PERSISTED_DOCUMENTS."""
APQ_VERSION = 1

_HASH = re.compile(r"[0-9a-f]{64}")
_HASH_RULE = "64 lowercase hexadecimal digits (the SHA-256 of the document's UTF-8 text)"
_TRUSTED_ONLY = "This server runs only trusted documents (PERSISTED_QUERIES=only)"

NOT_FOUND = "PersistedQueryNotFound"
NOT_SUPPORTED = "PersistedQueryNotSupported"
"""The messages Apollo's PersistedQueryLink matches on (beside the codes) to send the
document in full."""


def document_hash(document: str) -> str:
    return hashlib.sha256(document.encode("utf-8", "surrogatepass")).hexdigest()


def manifest_of(directory: Path) -> dict[str, str]:
    """Each ``*.graphql`` file's text under its hash, in the order of the file names."""
    documents = [path.read_text(encoding="utf-8") for path in sorted(directory.glob("*.graphql"))]
    if not documents:
        raise ValueError(f"no .graphql files in {directory}")
    return {document_hash(document): document for document in documents}


def manifest_json(manifest: Mapping[str, str]) -> str:
    return json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"


def read_manifest(path: Path) -> dict[str, str]:
    """The manifest at ``path``; a ValueError says what is wrong with it."""
    where = f"PERSISTED_DOCUMENTS: {path}"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ValueError(f"{where} cannot be read ({error.strerror or error})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{where} is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{where} is not JSON ({error.msg}, line {error.lineno})") from None
    if not isinstance(data, dict) or not all(isinstance(text, str) for text in data.values()):
        raise ValueError(
            f"{where} is not a JSON object of documents by their SHA-256 hashes (the "
            "persisted-documents.json GraphQL Code Generator writes)"
        )
    if not data:
        raise ValueError(f"{where} lists no documents: with PERSISTED_QUERIES=only none would run")
    for key, document in data.items():
        if document_hash(document) != key:
            raise ValueError(f"{where}: the document under {key!r} does not have that hash")
    return data


def trusted_documents(settings: Settings) -> dict[str, str]:
    """The manifest's documents, which names find unless PERSISTED_QUERIES=off (empty
    then); a ValueError when the manifest cannot be used."""
    if settings.persisted_queries == "off":
        return {}
    return read_manifest(settings.persisted_documents or COMMITTED_MANIFEST)


def _refused(message: str, code: ErrorCode) -> GraphQLError:
    return GraphQLError(message, extensions={"code": code})


def _bad(message: str) -> GraphQLError:
    return _refused(message, ErrorCode.BAD_USER_INPUT)


class _Refused(Exception):
    def __init__(self, error: GraphQLError) -> None:
        self.error = error


Requested = GraphQLRequestData | list[GraphQLRequestData]
"""An operation as the view read it, or a batch of them."""
Refusal = ExecutionResult | SubscriptionExecutionResult
"""The answer to an operation refused before it ran."""


async def _refused_stream(error: GraphQLError) -> AsyncGenerator[ExecutionResult, None]:
    """A stream of the one error refusing an operation, as a stream answers a document
    that does not parse (SSE, multipart, WebSocket)."""
    yield PreExecutionError(data=None, errors=[error])


def _refusal(error: GraphQLError, streamed: bool) -> Refusal:
    """What the view answers for an operation refused before it ran."""
    if not streamed:
        return PreExecutionError(data=None, errors=[error])
    # Strawberry's protocol for streams wants __aiter__ to return the protocol itself,
    # where typeshed has an async generator's return AsyncIterator: Strawberry's views
    # return the schema's async generators as this type all the same.
    return cast(SubscriptionExecutionResult, _refused_stream(error))


def _apq_hash(extension: object) -> str:
    if not isinstance(extension, dict):
        raise _Refused(_bad("extensions.persistedQuery must be an object: {version, sha256Hash}."))
    version = extension.get("version")
    if type(version) is not int or version != APQ_VERSION:
        raise _Refused(
            _bad(
                f"extensions.persistedQuery.version {json.dumps(version)} is not supported: "
                f"{APQ_VERSION} is."
            )
        )
    sha256 = extension.get("sha256Hash")
    if not isinstance(sha256, str) or not _HASH.fullmatch(sha256):
        raise _Refused(_bad(f"extensions.persistedQuery.sha256Hash must be {_HASH_RULE}."))
    return sha256


def _document_id_hash(document_id: object) -> str:
    sha256 = document_id.removeprefix("sha256:") if isinstance(document_id, str) else None
    if sha256 is None or not _HASH.fullmatch(sha256):
        raise _Refused(_bad(f"documentId must be sha256:<hash> or <hash>, the hash {_HASH_RULE}."))
    return sha256


async def _document_id(
    request: AsyncHTTPRequestAdapter, decode: Callable[[bytes], object]
) -> object:
    """The request's top-level ``documentId``, which Strawberry does not read: a GET
    parameter, or a member of the JSON body (which the view has read and checked before)."""
    if request.method == "GET":
        return request.query_params.get("documentId")
    body = decode(await request.get_body())
    return body.get("documentId") if isinstance(body, dict) else None


@dataclass(frozen=True)
class PersistedQueries:
    """What names of documents find, and which documents run (PERSISTED_QUERIES)."""

    store: DocumentStore | None
    """Documents clients register (``apq``); None: none are registered."""
    trusted: Mapping[str, str]
    """The manifest's documents by hash, which a name finds first (``apq``, ``only``)."""
    trusted_only: bool
    """Only the manifest's documents run (``only``)."""

    def untrusted(self, query: str | None) -> GraphQLError | None:
        """Why ``query`` may not run, or None when it may."""
        if not self.trusted_only or query is None or document_hash(query) in self.trusted:
            return None
        return _refused(
            f"{_TRUSTED_ONLY}, and this document is not one of them: send the documentId "
            "of a document in its manifest.",
            ErrorCode.PERSISTED_QUERY_NOT_ALLOWED,
        )

    def refused(self, query: str | None) -> AsyncGenerator[ExecutionResult, None] | None:
        """For an operation the schema streams (WebSockets, SSE's single connection mode),
        which comes with its document in full: the stream refusing ``query``, or None when
        it may run."""
        error = self.untrusted(query)
        return None if error is None else _refused_stream(error)

    async def resolve(
        self,
        request: Requested,
        request_adapter: AsyncHTTPRequestAdapter,
        decode: Callable[[bytes], object],
    ) -> Requested | Refusal:
        """The request with the documents it names, to run; or the answer refusing it (a
        batch as a whole, should batching be turned on)."""
        try:
            if isinstance(request, list):
                return [await self._resolve(item, request_adapter, decode) for item in request]
            return await self._resolve(request, request_adapter, decode)
        except _Refused as refused:
            streamed = not isinstance(request, list) and request.protocol != "http"
            return _refusal(refused.error, streamed)

    async def _resolve(
        self,
        request: GraphQLRequestData,
        request_adapter: AsyncHTTPRequestAdapter,
        decode: Callable[[bytes], object],
    ) -> GraphQLRequestData:
        extension: object = (request.extensions or {}).get("persistedQuery")
        if request.query is not None:
            if extension is not None and (self.store is not None or self.trusted_only):
                sha256 = _apq_hash(extension)
                if document_hash(request.query) != sha256:
                    raise _Refused(
                        _bad(
                            "extensions.persistedQuery.sha256Hash is not the hash of the "
                            f"document sent: it must be {_HASH_RULE}."
                        )
                    )
                if self.store is not None:
                    await self.store.put(sha256, request.query)
            if (untrusted := self.untrusted(request.query)) is not None:
                raise _Refused(untrusted)
            return request
        named = await _document_id(request_adapter, decode)
        if extension is None and named is None:
            return request  # Strawberry says that no document was sent
        hashes = {_apq_hash(extension)} if extension is not None else set()
        if named is not None:
            hashes.add(_document_id_hash(named))
        if len(hashes) > 1:
            raise _Refused(
                _bad("documentId and extensions.persistedQuery name different documents.")
            )
        (sha256,) = hashes
        return replace(request, query=await self._find(sha256))

    async def _find(self, sha256: str) -> str:
        # The frontend's own documents are found without registering them first: a
        # client built with persisted documents sends nothing but their ids.
        if (trusted := self.trusted.get(sha256)) is not None:
            return trusted
        if self.trusted_only:
            raise _Refused(
                _refused(
                    f"{_TRUSTED_ONLY}, and none has the hash {sha256}.",
                    ErrorCode.PERSISTED_QUERY_NOT_ALLOWED,
                )
            )
        if self.store is None:
            raise _Refused(_refused(NOT_SUPPORTED, ErrorCode.PERSISTED_QUERY_NOT_SUPPORTED))
        found = await self.store.get(sha256)
        if found is None:
            raise _Refused(_refused(NOT_FOUND, ErrorCode.PERSISTED_QUERY_NOT_FOUND))
        return found


def persisted_queries(settings: Settings, backend: CacheBackend) -> PersistedQueries:
    """As PERSISTED_QUERIES sets them up; documents are registered beside the cache."""
    registering = settings.persisted_queries == "apq"
    return PersistedQueries(
        store=document_store(backend) if registering else None,
        trusted=trusted_documents(settings),
        trusted_only=settings.persisted_queries == "only",
    )
