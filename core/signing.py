"""Who emitted an event: Ed25519 signatures, one key pair per participant.

Every event a participant emits is signed with its private key; every participant
checks, before it acts, that an event is signed by a key of the registry (the
public keys it knows) and that the key's owner may emit the event's type
(:meth:`agent_coordinator.core.saga.Saga.emitters`). An event that fails either check is
refused with :class:`~agent_coordinator.core.errors.UntrustedEvent`, which the bus
dead-letters at once with the reason.

* **Scheme.** Ed25519 (RFC 8032) over the event's canonical JSON (:meth:`Event.to_json
  <coordinator.events.Event.to_json>`) with ``signingkey`` set and ``signature``
  left out; the signature travels base64-encoded in the ``signature`` extension
  attribute, the key id in ``signingkey``. Ed25519 signatures are deterministic, so
  the same run still gives byte-identical events, and they are per emitter: holding
  the payment agent's key does not let anyone sign as the inventory agent.
* **Keys.** A directory (:func:`keys_directory`: ``$COORDINATOR_EVENT_KEYS``, else
  ``<state dir>/keys``) holds ``<participant>.<fingerprint>.key`` (the private key,
  PKCS#8 PEM, mode 0600) and ``<participant>.<fingerprint>.pub`` (the public key).
  The key id is ``<participant>.<fingerprint>`` (12 hex digits of the SHA-256 of the
  raw public key). A process signs as a participant with that participant's one
  ``.key`` file, and verifies with every ``.pub`` file; a key id it does not know
  makes it read the directory again (new keys appear while workers run).
* **Rotation.** Several public keys of one participant verify side by side. To
  rotate: move the old ``.key`` away and restart the participant's workers (each
  makes a new pair when none is left, or put a new pair in place first); keep the
  old ``.pub`` while events it signed may still be delivered, replayed or resumed.

Key material never appears in events, the event log, messages or logs: only key ids
and file names do. Operator documentation: docs/architecture.md ("Authenticated
events").
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import quote, unquote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent_coordinator.core.errors import CoordinatorError, UntrustedEvent
from agent_coordinator.core.events import Event

__all__ = ["KEYS_ENV", "Keyring", "KeyringError", "keys_directory", "signed_bytes"]

log = logging.getLogger(__name__)

KEYS_ENV: Final = "COORDINATOR_EVENT_KEYS"
"""The environment variable naming the keys directory (default: ``<state dir>/keys``)."""

_PRIVATE: Final = ".key"
_PUBLIC: Final = ".pub"
_LOCK: Final = ".lock"


class KeyringError(CoordinatorError):
    """The keys a process needs are missing or unusable; the message names the file
    or participant and what to do (never key material)."""


def keys_directory(state_dir: Path, environ: Mapping[str, str] | None = None) -> Path:
    """Where a process's keys are: ``$COORDINATOR_EVENT_KEYS`` when set, else
    ``<state_dir>/keys``."""
    explicit = (environ if environ is not None else os.environ).get(KEYS_ENV, "")
    return Path(explicit) if explicit else state_dir / "keys"


def signed_bytes(event: Event) -> bytes:
    """What a signature covers: ``event`` as canonical JSON without ``signature``
    (its ``signingkey`` included, so the key id cannot be swapped)."""
    attributes = event.model_dump(mode="json")
    attributes.pop("signature", None)
    return json.dumps(attributes, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class _PublicKey:
    participant: str
    key: Ed25519PublicKey


@dataclass(frozen=True, slots=True)
class _PrivateKey:
    key_id: str
    key: Ed25519PrivateKey


class Keyring:
    """The private keys of the participants this process signs as, and the public
    keys of every participant it trusts (the registry), by key id.

    Build one with :meth:`open` (a keys directory) or :meth:`ephemeral` (in memory:
    tests, one process). It is an :class:`~agent_coordinator.core.events.EventSigner`. Safe to
    share between the coroutines of one event loop.
    """

    def __init__(self, directory: Path | None = None, *, generate: bool = False) -> None:
        self.directory = directory
        self.generate = generate
        self._private: dict[str, _PrivateKey] = {}  # participant -> its signing key
        self._public: dict[str, _PublicKey] = {}  # key id -> owner and key
        self._scanned: int | None = None  # the directory's mtime (ns) when last read

    def __repr__(self) -> str:
        where = str(self.directory) if self.directory is not None else "memory"
        return f"Keyring({where}: signs as {sorted(self._private)}, trusts {sorted(self._public)})"

    # -- building -----------------------------------------------------------------

    @classmethod
    def open(cls, directory: Path, *, generate: bool = True) -> Keyring:
        """The keyring of ``directory`` (see the module docstring for its files).

        With ``generate`` (the default), :meth:`ensure_signer` makes a missing
        participant's key pair there (and the directory, mode 0700) and logs that its
        public key must reach the other hosts; without, a missing key is an error.
        Raises :class:`KeyringError` for an unreadable directory or key file.
        """
        keyring = cls(directory, generate=generate)
        if directory.exists() or not generate:
            keyring._scan()
        return keyring

    @classmethod
    def ephemeral(cls, participants: Iterable[str]) -> Keyring:
        """A keyring in memory with a fresh key pair for each of ``participants``."""
        keyring = cls()
        for participant in participants:
            keyring._add_pair(participant, Ed25519PrivateKey.generate())
        return keyring

    def trusting(self, participants: Iterable[str] = ()) -> Keyring:
        """A keyring that trusts the same public keys as this one and signs as
        ``participants`` only (in memory): what a process hosting only those holds."""
        other = Keyring()
        other._public = dict(self._public)
        other._private = {p: k for p, k in self._private.items() if p in set(participants)}
        return other

    def key_id(self, participant: str) -> str | None:
        """The id of the key ``participant`` signs with here, or None."""
        private = self._private.get(participant)
        return private.key_id if private is not None else None

    def ensure_signer(self, participant: str) -> str:
        """Make sure this keyring can sign as ``participant`` and return its key id:
        load its private key, or (``generate``) make and store a new pair. Raises
        :class:`KeyringError` naming the file expected when there is none."""
        if participant in self._private:
            return self._private[participant].key_id
        if self.directory is None:
            raise KeyringError(f"this in-memory keyring holds no private key of {participant!r}")
        with self._locked():
            self._scan()
            if participant not in self._private:
                if not self.generate:
                    raise KeyringError(
                        f"no private key of {participant!r} in {self.directory}: put its "
                        f"{_file_stem(participant, '<fingerprint>')}{_PRIVATE} there (and its {_PUBLIC} on every "
                        f"host), or unset {KEYS_ENV} to use keys generated in the state directory"
                    )
                key_id = self._write_pair(participant, Ed25519PrivateKey.generate())
                log.warning(
                    "generated signing key %s for %r in %s; processes on other hosts must get its %s file",
                    key_id,
                    participant,
                    self.directory,
                    _PUBLIC,
                )
        return self._private[participant].key_id

    # -- signing and verifying -----------------------------------------------------

    def sign(self, event: Event, *, as_: str) -> Event:
        """``event`` signed by ``as_`` (any earlier signature replaced). Deterministic.
        Raises :class:`KeyringError` when this keyring cannot sign as ``as_``."""
        private = self._private.get(as_)
        if private is None:
            raise KeyringError(
                f"cannot sign {event.type} {event.id} as {as_!r}: this process holds no private key of {as_!r}"
                f" ({self._where()}); run the participant where its key is"
            )
        unsigned = event.model_copy(update={"signingkey": private.key_id, "signature": None})
        signature = base64.b64encode(private.key.sign(signed_bytes(unsigned))).decode()
        return unsigned.model_copy(update={"signature": signature})

    def verify(self, event: Event) -> str:
        """The participant whose key signed ``event``.

        Raises :class:`UntrustedEvent` when it carries no signature, when its key id
        is not in the registry, or when the signature does not verify (the event was
        changed after signing, or signed by another key)."""
        what = f"{event.type} {event.id} of {event.subject!r} (source {event.source!r})"
        if event.signature is None or event.signingkey is None:
            raise UntrustedEvent(
                f"{what} is not signed: participants act only on events signed by their emitter;"
                " publish events through a coordinator process that holds the emitter's key"
            )
        public = self._public.get(event.signingkey)
        if public is None and self._rescan():
            public = self._public.get(event.signingkey)
        if public is None:
            raise UntrustedEvent(
                f"{what} is signed with key {event.signingkey!r}, which is not in the key registry"
                f" ({self._where()}): copy that emitter's {_PUBLIC} file there, or the key was retired"
            )
        try:
            public.key.verify(base64.b64decode(event.signature, validate=True), signed_bytes(event))
        except (InvalidSignature, binascii.Error, ValueError):
            raise UntrustedEvent(
                f"{what} has a signature that does not verify with key {event.signingkey!r}:"
                " it was changed after signing, or not signed by that key"
            ) from None
        return public.participant

    # -- files ---------------------------------------------------------------------

    def _where(self) -> str:
        return f"keys directory {self.directory}" if self.directory is not None else "an in-memory keyring"

    def _rescan(self) -> bool:
        """Read the directory again if it changed since it was last read; True if it did."""
        if self.directory is None:
            return False
        try:
            changed = self.directory.stat().st_mtime_ns != self._scanned
        except OSError:
            return False
        if changed:
            self._scan()
        return changed

    def _scan(self) -> None:
        assert self.directory is not None
        try:
            mtime = self.directory.stat().st_mtime_ns
            names = sorted(os.listdir(self.directory))
        except OSError as exc:
            raise KeyringError(
                f"cannot read the keys directory {self.directory} ({exc.strerror}); create it, or point"
                f" {KEYS_ENV} at the directory holding the event keys"
            ) from None
        private: dict[str, list[tuple[str, Ed25519PrivateKey]]] = {}
        for name in names:
            path = self.directory / name
            if name.endswith(_PUBLIC):
                participant, key_id = _parse_name(name, _PUBLIC)
                if participant is None or key_id in self._public:
                    continue
                self._public[key_id] = _PublicKey(participant, _load_public(path))
            elif name.endswith(_PRIVATE):
                participant, key_id = _parse_name(name, _PRIVATE)
                if participant is not None:
                    private.setdefault(participant, []).append((key_id, _load_private(path)))
        for participant, keys in private.items():
            if len(keys) > 1:
                raise KeyringError(
                    f"{len(keys)} private keys of {participant!r} in {self.directory}"
                    f" ({', '.join(k for k, _ in keys)}): keep one (move the retired ones away, keep their {_PUBLIC})"
                )
            ((key_id, key),) = keys
            self._private[participant] = _PrivateKey(key_id, key)
            # A private key is trusted as its own public key, even without the .pub file.
            self._public.setdefault(key_id, _PublicKey(participant, key.public_key()))
        self._scanned = mtime

    def _add_pair(self, participant: str, key: Ed25519PrivateKey) -> str:
        key_id = f"{participant}.{_fingerprint(key.public_key())}"
        self._private[participant] = _PrivateKey(key_id, key)
        self._public[key_id] = _PublicKey(participant, key.public_key())
        return key_id

    def _write_pair(self, participant: str, key: Ed25519PrivateKey) -> str:
        assert self.directory is not None
        stem = _file_stem(participant, _fingerprint(key.public_key()))
        private_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        try:
            # The public half first: a reader that sees the private key sees both.
            _write_new(self.directory / f"{stem}{_PUBLIC}", public_pem, 0o644)
            _write_new(self.directory / f"{stem}{_PRIVATE}", private_pem, 0o600)
        except OSError as exc:
            raise KeyringError(
                f"cannot store a new key of {participant!r} in {self.directory} ({exc.strerror});"
                f" make the directory writable, or point {KEYS_ENV} at one holding the keys"
            ) from None
        return self._add_pair(participant, key)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the directory's lock file: two processes of one participant starting
        at once must not both make a key pair."""
        assert self.directory is not None
        try:
            if self.generate:
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            lock = os.open(self.directory / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise KeyringError(
                f"cannot use the keys directory {self.directory} ({exc.strerror}); point {KEYS_ENV} at a"
                " directory this user may write, or create it"
            ) from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
        finally:
            os.close(lock)  # closing releases the lock


def _fingerprint(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:12]


def _file_stem(participant: str, fingerprint: str) -> str:
    # Participant names may hold any character; a file name may not.
    return f"{quote(participant, safe='')}.{fingerprint}"


def _parse_name(name: str, suffix: str) -> tuple[str | None, str]:
    """(participant, key id) of a key file name, or (None, "") for another file."""
    stem = name.removesuffix(suffix)
    encoded, _, fingerprint = stem.rpartition(".")
    if not encoded or len(fingerprint) != 12 or not all(c in "0123456789abcdef" for c in fingerprint):
        return None, ""
    participant = unquote(encoded)
    return participant, f"{participant}.{fingerprint}"


def _load_public(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise KeyringError(f"cannot read the public key {path} ({_reason(exc)}); replace or remove it") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyringError(f"{path} is not an Ed25519 public key; event keys are Ed25519")
    return key


def _load_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise KeyringError(
            f"cannot read the private key {path} ({_reason(exc)}); it must be an unencrypted PKCS#8 PEM file"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyringError(f"{path} is not an Ed25519 private key; event keys are Ed25519")
    return key


def _reason(exc: Exception) -> str:
    # An OSError's strerror, or the parser's complaint -- never the file's content.
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__


def _write_new(path: Path, content: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` and ``content``, never replacing a file, and
    atomically: a process reading the directory meanwhile sees all of it or nothing."""
    draft = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # not a key file name: never read
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(draft, path)  # fails if path exists
    finally:
        draft.unlink()
