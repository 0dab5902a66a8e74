"""Signed checkpoints: an HMAC in the stored text, so a row changed without the key is refused.

The signature lives in the text a store keeps, not in a store's columns, so every store
(in memory, SQLite, a server database) keeps it and gives it back without knowing:

* the document (`Checkpoint.data`) becomes ``{"signature":"hmac-sha256:<hex>",`` followed
  by the document's own text after its ``{``: still one JSON object with the same fields
  (readers that ignore the new one, like the CLI, read it as before). The MAC covers the
  run id and the document's text byte for byte (its state, frontier, status, segment,
  pipeline hash...);
* each part (`Checkpoint.parts`, e.g. a map's items) becomes
  ``{"signature":"hmac-sha256:<hex>","part":<text>}``, its MAC covering the run id, the
  part's key and its text.

A signature is checked on the text as stored, before anything parses it, with
`hmac.compare_digest`, against the signing key and then each verification key (key
rotation). Not covered: the attempt counters a store keeps beside the document
(``keeps_attempts``; they only number attempts, and count against ``max_retries``), and
*which* of the run's own signed checkpoints a row holds: whoever can write the store can
put back an older one of the same run (or delete it).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from justpipe.durable.store import CheckpointSignatureError

if TYPE_CHECKING:
    from justpipe.durable.store import Checkpoint

__all__ = ["MIN_KEY_BYTES", "CheckpointSigner"]

MIN_KEY_BYTES = 16
"""The shortest key accepted (``secrets.token_bytes(32)`` makes a good one)."""

_SCHEME = "hmac-sha256:"
_DOCUMENT_HEAD = '{"signature":"' + _SCHEME
_PART_HEAD = _DOCUMENT_HEAD
_PART_BODY = '","part":'
_DIGEST = re.compile(r"[0-9a-f]{64}\Z")
_HEX_LEN = 64


class CheckpointSigner:
    """Signs checkpoints with one key and verifies them against it and older ones."""

    __slots__ = ("_keys",)

    def __init__(self, keys: tuple[bytes, ...]) -> None:
        self._keys = keys  # the signing key first

    def __repr__(self) -> str:
        return f"signed ({len(self._keys)} key{'s' if len(self._keys) > 1 else ''})"

    @classmethod
    def create(
        cls, signing_key: bytes | str | None, verify_keys: Iterable[bytes | str]
    ) -> CheckpointSigner | None:
        """A signer for `StateSerializer(signing_key=..., verify_keys=...)`, None without a key."""
        if isinstance(verify_keys, (str, bytes, bytearray)) or not isinstance(
            verify_keys, Iterable
        ):
            raise TypeError(
                "StateSerializer(verify_keys=...) must be a list of keys (bytes or str), got "
                f"a {type(verify_keys).__name__}"
            )
        older = [
            _key(key, f"StateSerializer(verify_keys=...)[{index}]")
            for index, key in enumerate(verify_keys)
        ]
        if signing_key is None:
            if older:
                raise ValueError(
                    "StateSerializer(verify_keys=...) needs signing_key=... as well: the "
                    "checkpoints a run writes are signed with it."
                )
            return None
        return cls((_key(signing_key, "StateSerializer(signing_key=...)"), *older))

    # ------------------------------------------------------------------ writing

    def sign(self, checkpoint: Checkpoint) -> Checkpoint:
        run_id = checkpoint.run_id
        text = checkpoint.data
        if not text.startswith('{"') or not text.endswith("}"):
            raise ValueError("only a checkpoint document that is a non-empty JSON object is signed")
        digest = self._mac(self._keys[0], "checkpoint", run_id, "", text)
        data = f'{_DOCUMENT_HEAD}{digest}",{text[1:]}'
        parts = checkpoint.parts
        if parts:
            parts = {
                key: None if part is None else self._sign_part(run_id, key, part)
                for key, part in parts.items()
            }
        return _with(checkpoint, data, parts)

    def _sign_part(self, run_id: str, key: str, text: str) -> str:
        digest = self._mac(self._keys[0], "part", run_id, key, text)
        return f"{_PART_HEAD}{digest}{_PART_BODY}{text}}}"

    # ------------------------------------------------------------------ reading

    @staticmethod
    def unsigned(checkpoint: Checkpoint, signer: CheckpointSigner | None) -> Checkpoint:
        """`checkpoint` with its signatures checked (by `signer`, if any) and removed."""
        run_id = checkpoint.run_id
        data = _split_document(checkpoint.data)
        if data is None:
            if signer is not None:
                raise CheckpointSignatureError(
                    f"run {run_id!r}: its checkpoint is not signed, and this pipe's serializer "
                    "requires signatures (signing_key=...): refusing it. It was written "
                    "without the key, or changed by someone who does not have it."
                )
            text = checkpoint.data
        else:
            digest, text = data
            if signer is not None:
                signer._check(
                    digest, "checkpoint", run_id, "", text, f"run {run_id!r}: its checkpoint"
                )
        parts: Mapping[str, str | None] | None = checkpoint.parts
        if parts:
            parts = {
                key: None if part is None else _unsigned_part(signer, run_id, key, part)
                for key, part in parts.items()
            }
        if text is checkpoint.data and parts is checkpoint.parts:
            return checkpoint
        return _with(checkpoint, text, parts)

    def _check(self, digest: str, kind: str, run_id: str, key: str, text: str, what: str) -> None:
        for secret in self._keys:
            if hmac.compare_digest(self._mac(secret, kind, run_id, key, text), digest):
                return
        raise CheckpointSignatureError(
            f"{what} has a signature that matches none of this serializer's keys: refusing "
            "it. It was changed after it was written, or signed with a key this pipe does "
            "not have (list an older key in StateSerializer(verify_keys=[...]))."
        )

    @staticmethod
    def _mac(secret: bytes, kind: str, run_id: str, key: str, text: str) -> str:
        # what is signed, unambiguously: the kind, the run id and the part key, each with its
        # length, then the text
        message = f"{kind}\n{len(run_id)}:{run_id}\n{len(key)}:{key}\n{text}"
        return hmac.digest(secret, message.encode("utf-8", "surrogatepass"), "sha256").hex()


def _with(checkpoint: Checkpoint, data: str, parts: Mapping[str, str | None] | None) -> Checkpoint:
    """`checkpoint` with other text (built directly: `dataclasses.replace` costs more)."""
    c = checkpoint
    return type(c)(
        c.run_id,
        c.pipe_name,
        c.pipeline_hash,
        c.status,
        c.segment,
        data,
        c.updated_at,
        c.attempts,
        parts,
    )


def _unsigned_part(signer: CheckpointSigner | None, run_id: str, key: str, part: str) -> str:
    found = _split_part(part)
    what = f"run {run_id!r}: its checkpoint's part {key!r}"
    if found is None:
        if signer is not None:
            raise CheckpointSignatureError(
                f"{what} is not signed, and this pipe's serializer requires signatures: "
                "refusing it."
            )
        return part
    digest, text = found
    if signer is not None:
        signer._check(digest, "part", run_id, key, text, what)
    return text


def _split_document(data: str) -> tuple[str, str] | None:
    """(digest, the document as it was signed), or None when `data` carries no signature."""
    if not isinstance(data, str) or not data.startswith(_DOCUMENT_HEAD):
        return None
    start = len(_DOCUMENT_HEAD)
    digest = data[start : start + _HEX_LEN]
    rest = data[start + _HEX_LEN :]
    if not _DIGEST.match(digest) or not rest.startswith('",'):
        return None
    return digest, "{" + rest[2:]


def _split_part(part: str) -> tuple[str, str] | None:
    if not isinstance(part, str) or not part.startswith(_PART_HEAD) or not part.endswith("}"):
        return None
    start = len(_PART_HEAD)
    digest = part[start : start + _HEX_LEN]
    rest = part[start + _HEX_LEN :]
    if not _DIGEST.match(digest) or not rest.startswith(_PART_BODY):
        return None
    return digest, rest[len(_PART_BODY) : -1]


def _key(key: object, parameter: str) -> bytes:
    if isinstance(key, str):
        raw = key.encode("utf-8")
    elif isinstance(key, (bytes, bytearray)):
        raw = bytes(key)
    else:
        raise TypeError(f"{parameter} must be bytes or str, got a {type(key).__name__}")
    if len(raw) < MIN_KEY_BYTES:
        raise ValueError(
            f"{parameter} must be at least {MIN_KEY_BYTES} bytes, got {len(raw)}: use a random "
            "key, e.g. secrets.token_bytes(32), kept out of the store."
        )
    return raw
