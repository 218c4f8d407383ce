"""The log: opening, reading, writing, and proofs out and in, over one :class:`LogStorage`.

A writable log is made from an Ed25519 key pair; a replica is opened from a key alone and only
ever stores what verified to a signed root (the checks are :mod:`cairn.log.verify`). Every
change is one SQLite transaction.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

from cairn import flat_tree
from cairn.bitfield import Bitfield
from cairn.crypto import (
    KeyPair,
    Manifest,
    decode_manifest,
    discovery_key,
    encode_signature,
    leaf_hash,
    manifest_hash,
    sign,
    tree_hash,
    tree_signable,
    tree_signable_compat,
)
from cairn.errors import (
    DamagedBlockError,
    DecodeError,
    ForkError,
    NotAvailableError,
    ReadOnlyError,
    StorageError,
    VerificationError,
)
from cairn.log.integrity import check_head, check_tree
from cairn.log.verify import (
    check_connects,
    check_fork_rules,
    check_seek,
    check_upgrade,
    check_upgrade_signature,
    confirmed_prefix,
    conflicting_node,
    manifest_for,
    start_batch,
)
from cairn.merkle import InvalidRequestError, TreeBatch, root_nodes, seek_block
from cairn.messages import Data, Node, Request, encode_data
from cairn.proofs import (
    block_proof,
    generate_proof,
    range_proof_nodes,
    verify_range,
    verify_tree,
)
from cairn.storage import NODE_STRUCT as _NODE
from cairn.storage import Conn, Head, LogStorage, Meta, SharedDB, SyncMode
from cairn.storage import pack_nodes as pack_node_list

__all__ = ["Applied", "Log", "VerifyReport"]

# the package's name: operators and tests filter the damage and fork messages on "cairn.log"
log = logging.getLogger("cairn.log")

_U64 = struct.Struct("<Q").pack
_EMPTY_TREE = tree_hash([])


@dataclass(frozen=True, slots=True)
class Applied:
    """What a verified proof changed: the new length if it upgraded, the block if one was stored."""

    upgraded: bool
    block: int | None
    length: int
    fork: int


@dataclass(frozen=True, slots=True)
class VerifyReport:
    blocks: int
    nodes: int
    length: int


class Log:
    """One Hypercore 11 log in one SQLite file. Not thread-safe; one writer per file."""

    def __init__(self, storage: LogStorage, meta: Meta, head: Head) -> None:
        self._storage = storage
        self._meta = meta
        self._head = head
        self._roots: list[Node] = root_nodes(storage, head.length) if head.length else []
        self._bitfield = Bitfield()
        # held blocks found damaged by a read since the log was opened, and who to tell
        self.damaged: set[int] = set()
        self.on_damage: Callable[[Log, int], None] | None = None
        check_head(self._storage, self._meta, self._head, self._roots)
        for start, count in storage.block_ranges():
            if start < 0 or start + count > head.length:
                # (a damaged index could otherwise ask for a bitfield of 2**60 bits)
                raise StorageError(f"{storage.path}: a block segment ({start}, {count}) lies "
                                   f"outside the signed length {head.length}")
            self._bitfield.set_range(start, start + count)
        self._contiguous = self._bitfield.first_unset(0)
        storage.holds = self._bitfield.has

    # -- opening ---------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        key_pair: KeyPair,
        *,
        compat: bool = False,
        sync: SyncMode = "normal",
    ) -> Log:
        """A new writable log. Default: Hypercore 11 manifest v1; ``compat``: key = public key."""
        if key_pair.secret_key is None:
            raise ValueError("a writable log needs a secret key")
        manifest = None if compat else Manifest(key_pair.public_key).encode()
        key = key_pair.public_key if compat else manifest_hash(Manifest(key_pair.public_key))
        meta = Meta(key, key_pair.public_key, key_pair.secret_key, manifest, compat, False)
        return cls._init(path, meta, sync)

    @classmethod
    def replica(cls, path: str | os.PathLike[str], key: bytes, *, sync: SyncMode = "normal") -> Log:
        """A new read-only sparse replica of the log with this key."""
        if len(key) != 32:
            raise ValueError(f"a log key is 32 bytes, got {len(key)}")
        return cls._init(path, Meta(key, None, None, None, False, False), sync)

    @classmethod
    def create_in(cls, shared: SharedDB, name: str, key_pair: KeyPair, *,
                  compat: bool = False) -> Log:
        """A new writable log named ``name`` inside a shared database (see
        :class:`cairn.storage.SharedDB`: many logs, one file, one transaction per commit)."""
        if key_pair.secret_key is None:
            raise ValueError("a writable log needs a secret key")
        manifest = None if compat else Manifest(key_pair.public_key).encode()
        key = key_pair.public_key if compat else manifest_hash(Manifest(key_pair.public_key))
        meta = Meta(key, key_pair.public_key, key_pair.secret_key, manifest, compat, False)
        storage = LogStorage(shared.path, create=True, shared=shared, name=name)
        return cls._init_storage(storage, meta)

    @classmethod
    def replica_in(cls, shared: SharedDB, name: str, key: bytes) -> Log:
        """A new read-only sparse replica named ``name`` inside a shared database."""
        if len(key) != 32:
            raise ValueError(f"a log key is 32 bytes, got {len(key)}")
        storage = LogStorage(shared.path, create=True, shared=shared, name=name)
        return cls._init_storage(storage, Meta(key, None, None, None, False, False))

    @classmethod
    def open_in(cls, shared: SharedDB, name: str) -> Log:
        """Open the log named ``name`` of a shared database."""
        storage = LogStorage(shared.path, create=False, shared=shared, name=name)
        try:
            lg = cls(storage, storage.read_meta(), storage.read_head())
        except BaseException:
            storage.close()
            raise
        shared.on_rollback.append(lg.reload)
        return lg

    def reload(self) -> None:
        """Read the log's state from its storage again (after a shared transaction it took
        part in was rolled back)."""
        self._meta = self._storage.read_meta()
        self._head = self._storage.read_head()
        self._roots = root_nodes(self._storage, self._head.length) if self._head.length else []
        self._restore((self._head, self._meta, self._roots, 0))
        self._contiguous = self._bitfield.first_unset(0)

    @classmethod
    def _init(cls, path: str | os.PathLike[str], meta: Meta, sync: SyncMode) -> Log:
        return cls._init_storage(LogStorage(path, create=True, sync=sync), meta)

    @classmethod
    def _init_storage(cls, storage: LogStorage, meta: Meta) -> Log:
        head = Head(0, 0, 0, _EMPTY_TREE, None)
        with storage.transaction() as db:
            storage.put_meta(db, meta)
            storage.put_head(db, head)
        lg = cls(storage, meta, head)
        if storage.shared is not None:
            storage.shared.on_rollback.append(lg.reload)
        return lg

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, sync: SyncMode = "normal") -> Log:
        """Open an existing log, checking its head against its signature."""
        storage = LogStorage(path, create=False, sync=sync)
        try:
            return cls(storage, storage.read_meta(), storage.read_head())
        except BaseException:
            storage.close()
            raise

    def close(self) -> None:
        shared = self._storage.shared
        if shared is not None and self.reload in shared.on_rollback:
            shared.on_rollback.remove(self.reload)
        self._storage.close()

    def __enter__(self) -> Log:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what it is --------------------------------------------------------------------------------

    @property
    def key(self) -> bytes:
        return self._meta.key

    @property
    def discovery_key(self) -> bytes:
        return discovery_key(self._meta.key)

    @property
    def manifest(self) -> bytes | None:
        return self._meta.manifest

    @property
    def compat(self) -> bool:
        return self._meta.compat

    @property
    def writable(self) -> bool:
        return self._meta.secret_key is not None

    @property
    def frozen(self) -> bool:
        return self._meta.frozen

    @property
    def public_key(self) -> bytes | None:
        if self._meta.public_key is not None:
            return self._meta.public_key
        if self._meta.manifest is not None:
            return decode_manifest(self._meta.manifest).public_key
        return self._meta.key if self._meta.compat else None

    @property
    def length(self) -> int:
        return self._head.length

    @property
    def byte_length(self) -> int:
        return self._head.byte_length

    @property
    def fork(self) -> int:
        return self._head.fork

    @property
    def signature(self) -> bytes | None:
        return self._head.signature

    @property
    def contiguous_length(self) -> int:
        return min(self._contiguous, self._head.length)

    @property
    def roots(self) -> list[Node]:
        return list(self._roots)

    @property
    def path(self) -> str:
        return str(self._storage.path)

    def tree_hash(self) -> bytes:
        return self._head.tree_hash

    def has(self, index: int) -> bool:
        return self._bitfield.has(index)

    def get_node(self, index: int) -> Node | None:
        return self._storage.get_node(index)

    def missing_nodes(self, index: int) -> int:
        """The ``nodes`` hint for requesting tree node ``index`` (a block is node 2i).

        How many levels above ``index`` this log lacks before a node it holds or a root, exactly
        as hypercore's ``MerkleTree.missingNodes`` counts them.
        """
        head = 2 * self.length
        ite = flat_tree.Iterator(index)
        if ite.peek_right_span() >= head:
            return 0
        count = 0
        while not ite.contains(head) and self._storage.get_node(ite.index) is None:
            count += 1
            ite.parent()
        return count

    def evidence(self) -> list[tuple[str, str, bytes | None, bytes | None]]:
        return self._storage.evidence()

    # -- reading -----------------------------------------------------------------------------------

    def get(self, index: int) -> bytes:
        """The block at ``index``, checked against its stored hash."""
        if not self._bitfield.has(index):
            raise NotAvailableError(f"block {index} is not held (length {self.length})")
        return self._read_held(index)

    def _read_held(self, index: int) -> bytes:
        """:meth:`get` of a block the bitfield says is held."""
        row = self._storage.get_block(index)
        if row is None:
            raise self._damaged(index, "missing from storage")
        data, digest = row
        if leaf_hash(data) != digest:
            raise self._damaged(index, "hash mismatch")
        return data

    def _damaged(self, index: int, why: str) -> DamagedBlockError:
        """A held block that cannot be read back: said once at warning level (a bad sector
        stays bad: every later read of it fails the same way), remembered in :attr:`damaged`,
        told to :attr:`on_damage`."""
        if index not in self.damaged:
            self.damaged.add(index)
            log.warning("%s: block %d is damaged (%s): its data no longer matches its leaf "
                        "hash, it cannot be served", self.path, index, why)
            if self.on_damage is not None:
                self.on_damage(self, index)
        return DamagedBlockError(f"{self.path}: block {index} is damaged ({why})", index)

    def damaged_blocks(self) -> list[int]:
        """Every held block whose data no longer matches its stored leaf hash (read all of
        them; a segment that cannot be decoded at all raises :class:`StorageError`)."""
        return [idx for idx, data, digest in self._storage.iter_blocks(0, 1 << 62)
                if leaf_hash(data) != digest]

    def held_run(self, start: int, limit: int, least: int = 1) -> list[tuple[int, bytes, bytes]]:
        """Up to ``limit`` blocks held contiguously from ``start``, as (index, data, stored leaf
        hash); none if fewer than ``least`` are. The hash is NOT checked here: this is for a
        consumer that checks it itself in another process (the gateway's ingest worker), so
        the check is not done twice."""
        end = min(self._bitfield.first_unset(start), start + limit, self.length)
        if end - start < max(least, 1):
            return []
        return list(self._storage.iter_blocks(start, end))

    def iter_blocks(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes]]:
        """Held blocks in [start, end) in order, each checked against its hash."""
        stop = self.length if end is None else end
        for idx, data, digest in self._storage.iter_blocks(start, stop):
            if leaf_hash(data) != digest:
                raise self._damaged(idx, "hash mismatch")
            yield idx, data

    def seek(self, byte_offset: int) -> tuple[int, int]:
        """(block index, offset inside it) of a byte offset; needs the tree nodes on the way."""
        if not 0 <= byte_offset <= self.byte_length:
            raise NotAvailableError(f"byte {byte_offset} is outside 0..{self.byte_length}")
        found = seek_block(self._storage, self._roots, byte_offset)
        if found is None:
            raise NotAvailableError(f"tree nodes needed to seek to byte {byte_offset} are not held")
        return found

    # -- writing ----------------------------------------------------------------------------------

    def _secret(self) -> bytes:
        if self._meta.frozen:
            raise ForkError(f"{self.path} is frozen after a fork was detected")
        sk = self._meta.secret_key
        if sk is None:
            raise ReadOnlyError(f"{self.path} is a read-only replica")
        return sk

    def _sign(self, root_hash: bytes, length: int, fork: int) -> bytes:
        sk = self._secret()
        if self._meta.compat:
            return sign(tree_signable_compat(root_hash, length, fork), sk)
        return encode_signature(sign(tree_signable(self._meta.key, root_hash, length, fork), sk))

    def append(self, blocks: Sequence[bytes]) -> int:
        """Append blocks under ONE signature in ONE transaction; durable when it returns.

        Returns the new length.
        """
        self._secret()
        if isinstance(blocks, (bytes, bytearray, memoryview)):
            raise TypeError("append takes a sequence of blocks; wrap a single block in a list")
        if not blocks:
            return self.length
        head = self._head
        n = head.length + len(blocks)
        sizes, leaves, parents, roots = _grow_tree(self._roots, head.length, blocks)
        byte_length = head.byte_length + sum(sizes)
        root_hash = tree_hash(roots)
        new_head = Head(head.fork, n, byte_length, root_hash, self._sign(root_hash, n, head.fork))
        storage = self._storage
        with storage.transaction() as db:
            storage.put_segment(
                db, head.length, sizes, b"".join(leaves), b"".join(blocks), parents
            )
            storage.put_head(db, new_head)
        self._head = new_head
        self._roots = roots
        self._bitfield.set_range(head.length, n)
        if self._contiguous == head.length:
            self._contiguous = self._bitfield.first_unset(head.length)
        return n

    def truncate(self, length: int) -> None:
        """Cut the log to ``length`` blocks and sign the result under a new fork."""
        self._secret()
        head = self._head
        if not 0 <= length <= head.length:
            raise ValueError(f"cannot truncate a log of length {head.length} to {length}")
        roots = root_nodes(self._storage, length) if length else []
        fork = head.fork + 1
        root_hash = tree_hash(roots)
        new_head = Head(
            fork,
            length,
            sum(r.size for r in roots),
            root_hash,
            self._sign(root_hash, length, fork) if length else None,
        )
        storage = self._storage
        with storage.transaction() as db:
            self._delete_from(db, length, head.length)
            storage.put_head(db, new_head)
        self._head = new_head
        self._roots = roots
        self._bitfield.set_range(length, max(head.length, length), False)
        self._contiguous = min(self._contiguous, length)
        self.damaged = {i for i in self.damaged if i < length}

    def _delete_from(self, db: Conn, length: int, old_length: int) -> None:
        """Remove blocks and nodes that reach block ``length`` or beyond."""
        head = 2 * length
        self._storage.split_out(db, length, 1 << 62, keep_leaves=False)
        crossing = []
        ite = flat_tree.Iterator(head)
        top = 2 * max(old_length, 1)
        while ite.factor <= 2 * top:
            ite.parent()
            if ite.index < head and flat_tree.left_span(ite.index) < head:
                crossing.append(ite.index)
        self._storage.delete_nodes(db, head, crossing)

    def clear(self, start: int, end: int) -> int:
        """Drop the data of blocks in [start, end), keeping their tree nodes.

        Returns how many blocks were dropped.
        """
        if self._meta.frozen:
            raise ForkError(f"{self.path} is frozen after a fork was detected")
        if not 0 <= start <= end:
            raise ValueError(f"invalid range {start}..{end}")
        end = min(end, self.length)
        if start >= end:
            return 0
        dropped = sum(1 for i in range(start, end) if self._bitfield.has(i))
        with self._storage.transaction() as db:
            self._storage.split_out(db, start, end, keep_leaves=True)
        self._bitfield.set_range(start, end, False)
        self._contiguous = min(self._contiguous, start)
        self.damaged = {i for i in self.damaged if not start <= i < end}  # no longer held
        return dropped

    def held_ranges(self) -> list[tuple[int, int]]:
        """The runs of blocks whose data this log holds, as (start, end) pairs, in order."""
        out: list[tuple[int, int]] = []
        for start, count in self._storage.block_ranges():
            if out and out[-1][1] == start:
                out[-1] = (out[-1][0], start + count)
            else:
                out.append((start, start + count))
        return out

    def disk_bytes(self) -> int:
        """Bytes of the log's database in use: its pages less those SQLite keeps free for reuse
        (cleared data frees pages; the file does not shrink). The WAL beside it is not counted
        (at most 1 MiB after each checkpoint)."""
        return self._storage.used_bytes()

    # -- proofs ------------------------------------------------------------------------------------

    def proof(self, request: Request) -> Data:
        """The ``data`` message answering ``request``, exactly as JS hypercore makes it."""
        if request.block is not None and not self.has(request.block.index):
            raise InvalidRequestError(f"block {request.block.index} is not held")
        if request.block is not None and request.fork != self.fork:
            # as hypercore does: a block is only sent for the fork the requester asks about
            raise InvalidRequestError(
                f"block request is for fork {request.fork}, log is at fork {self.fork}"
            )
        head = self._head
        block = request.block
        if (block is not None and request.hash is None and request.seek is None
                and request.upgrade is None and head.length):
            # a plain block request (every one a downloader sends after its first): what
            # generate_proof would dispatch to, the block read once
            return block_proof(
                self._storage, head.fork, head.length, block, request.id,
                self._read_held(block.index),
                self._meta.manifest if request.manifest and not self._meta.compat else None)
        return generate_proof(
            self._storage,
            fork=head.fork,
            length=head.length,
            byte_length=head.byte_length,
            roots=self._roots,
            signature=head.signature,
            block=request.block,
            hash=request.hash,
            seek=request.seek,
            upgrade=request.upgrade,
            request_id=request.id,
            value=None if request.block is None else self.get(request.block.index),
            manifest=self._meta.manifest if request.manifest and not self._meta.compat else None,
        )

    def verify_and_apply(self, proof: Data) -> Applied:
        """Verify a proof against this log's key and store what it proves, or raise.

        A proof that does not verify raises :class:`VerificationError` and changes nothing.
        When the writer signed conflicting trees, the evidence is kept, the log freezes and
        :class:`ForkError` is raised.
        """
        if self._meta.frozen:
            raise ForkError(f"{self.path} is frozen after a fork was detected")
        return self._checked(proof)

    def verify_and_apply_many(self, proofs: Iterable[Data]) -> list[Applied]:
        """Verify and store a run of proofs in ONE transaction: all of them, or none.

        Each proof is verified against the log as the ones before it left it. If one fails, the
        whole run is rolled back and :class:`VerificationError` names it. A fork found in the
        run is handled as :meth:`verify_and_apply` does (evidence kept, log frozen).
        """
        if self._meta.frozen:
            raise ForkError(f"{self.path} is frozen after a fork was detected")
        proofs = list(proofs)
        saved = (self._head, self._meta, self._roots, self._contiguous)
        results: list[Applied] = []
        try:
            with self._storage.transaction():
                for k, proof in enumerate(proofs):
                    try:
                        results.append(self._checked(proof))
                    except VerificationError as exc:
                        raise VerificationError(f"proof {k} of {len(proofs)}: {exc}") from exc
        except ForkError:
            self._restore(saved)
            # one at a time, so the evidence of the fork is committed when it raises again
            return [self.verify_and_apply(proof) for proof in proofs]
        except BaseException:
            self._restore(saved)
            raise
        return results

    def _restore(self, saved: tuple[Head, Meta, list[Node], int]) -> None:
        """Put the in-memory state back after a rolled-back transaction."""
        self._head, self._meta, self._roots, self._contiguous = saved
        self._bitfield = Bitfield()
        for start, count in self._storage.block_ranges():
            self._bitfield.set_range(start, start + count)
        self._storage.holds = self._bitfield.has

    def _checked(self, proof: Data) -> Applied:
        try:
            return self._verify_and_apply(proof)
        except (VerificationError, ForkError, StorageError):
            raise
        except (
            DecodeError,
            InvalidRequestError,
            ValueError,
            IndexError,
            OverflowError,
            TypeError,
            struct.error,
        ) as exc:
            raise VerificationError(f"malformed proof: {exc}") from exc

    def _verify_and_apply(self, proof: Data) -> Applied:
        """Check a proof phase by phase (each raises :class:`VerificationError` naming what is
        wrong), then store what it proves with :meth:`_apply`. The checks store nothing of
        the proof; only a fork they find writes (its evidence, and the log frozen)."""
        head = self._head
        fresh = check_fork_rules(proof, head, self._meta.key)
        batch = start_batch(proof, head, self._roots, fresh)
        unverified = verify_tree(proof, batch.nodes)
        manifest, compat = None, self._meta.compat
        if proof.upgrade is not None:
            if check_upgrade(proof, unverified, batch):
                unverified = None
            manifest, compat = manifest_for(self._meta, proof)
            check_upgrade_signature(self._meta, proof, batch, manifest, compat)
        elif head.length == 0:
            raise VerificationError("log has no signed length yet: the proof needs an upgrade")
        if unverified is not None:
            check_connects(self._storage, unverified, fresh)
        if proof.seek is not None and proof.seek.nodes:
            seek = proof.seek
            check_seek(self._storage, head, self._roots, seek.bytes, seek.nodes[0], batch)
        prune_from: int | None = None
        if fresh:
            self._check_conflict(proof, batch)
            if proof.fork == head.fork and batch.length <= head.length:
                return Applied(False, None, head.length, head.fork)  # nothing new
            prune_from = self._prune_point(proof, batch)
        return self._apply(proof, batch, manifest, compat, prune_from)

    def _prune_point(self, proof: Data, batch: TreeBatch) -> int | None:
        """Where an upgrade from 0 leaves the held history: None when it extends all of it;
        on a new fork, the block from which held data is dropped."""
        head = self._head
        prefix = confirmed_prefix(self._storage, head.length, batch)
        if prefix >= head.length:
            return None
        if proof.fork == head.fork:
            raise VerificationError(
                "upgrade from 0 does not connect to the held history; "
                f"ask for an upgrade from {head.length}"
            )
        log.info(
            "%s: fork %d -> %d, dropping held data from block %d",
            self.path,
            head.fork,
            proof.fork,
            prefix,
        )
        return prefix

    def _apply(
        self,
        proof: Data,
        batch: TreeBatch,
        manifest: bytes | None,
        compat: bool,
        prune_from: int | None,
    ) -> Applied:
        """Store what a verified proof proves, in one transaction, and update the state."""
        head = self._head
        up = proof.upgrade
        block_index: int | None = None
        block_value = b""
        if proof.block is not None:
            block_value = proof.block.value or b""
            block_index = proof.block.index
        store_block = block_index is not None and (
            prune_from is not None or not self._bitfield.has(block_index)
        )
        # Leaves without data (siblings, hash proofs) go to `nodes`; the proven block's own leaf
        # lives in its segment.
        own_leaf = -1 if proof.block is None else 2 * proof.block.index
        store_nodes = [n for n in batch.nodes if n.index != own_leaf]

        new_head = head
        new_meta = self._meta
        if batch.upgraded:
            assert up is not None and up.signature is not None
            new_head = Head(proof.fork, batch.length, batch.byte_length, batch.hash(), up.signature)
            if new_meta.manifest is None and not new_meta.compat:
                new_meta = replace(new_meta, manifest=manifest, compat=compat)
        storage = self._storage
        with storage.transaction() as db:
            if prune_from is not None:
                self._delete_from(db, prune_from, head.length)
            storage.put_nodes(db, store_nodes)
            if store_block:
                assert block_index is not None
                storage.put_segment(
                    db, block_index, [len(block_value)], leaf_hash(block_value), block_value, b""
                )
            if new_head is not head:
                storage.put_head(db, new_head)
            if new_meta is not self._meta:
                storage.put_meta(db, new_meta)
        if prune_from is not None:
            self._bitfield.set_range(prune_from, max(head.length, prune_from), False)
            self._contiguous = min(self._contiguous, prune_from)
        self._head = new_head
        self._meta = new_meta
        if batch.upgraded:
            self._roots = list(batch.roots)
        if block_index is not None:
            self._bitfield.set(block_index)
            if block_index == self._contiguous:
                self._contiguous = self._bitfield.first_unset(block_index)
        return Applied(batch.upgraded, block_index, new_head.length, new_head.fork)

    def _check_conflict(self, proof: Data, batch: TreeBatch) -> None:
        """Every node of a fully remote proof that this log also holds must be the same node:
        else the writer signed two trees, and the log freezes."""
        n = conflicting_node(self._storage, batch)
        if n is not None:
            self._freeze(
                proof,
                f"node {n.index} differs between the held tree "
                f"(fork {self.fork}, length {self.length}) and a signed tree "
                f"(fork {proof.fork}, length {batch.length})",
            )

    def _freeze(self, proof: Data, detail: str) -> None:
        head = self._head
        local = head.tree_hash + _U64(head.length) + _U64(head.fork) + (head.signature or b"")
        with self._storage.transaction() as db:
            self._storage.put_evidence(db, "fork", detail, local, encode_data(proof))
            self._meta = replace(self._meta, frozen=True)
            self._storage.put_meta(db, self._meta)
        log.error("%s: fork detected: %s", self.path, detail)
        raise ForkError(f"fork detected: {detail}")

    def range_proof(
        self, start: int, end: int, length: int | None = None
    ) -> tuple[list[bytes], list[Node]]:
        """Blocks [start, end) and the nodes that prove them against the roots at ``length``."""
        length = self.length if length is None else length
        if not 0 <= start < end <= length <= self.length:
            raise InvalidRequestError(f"range {start}..{end} is outside length {length}")
        values = [self.get(i) for i in range(start, end)]
        return values, range_proof_nodes(self._storage.get_node, length, start, end)

    def verify_and_apply_range(
        self, start: int, values: Sequence[bytes], proof: Sequence[Node]
    ) -> int:
        """Store a contiguous run of blocks proven by one range proof, in one transaction.

        The proof is checked against this log's signed roots; blocks already held are checked
        too and not stored twice. Returns how many blocks were stored.
        """
        if self._meta.frozen:
            raise ForkError(f"{self.path} is frozen after a fork was detected")
        if not self.length:
            raise VerificationError("log has no signed length yet")
        try:
            leaves, made = verify_range(self._roots, self.length, start, values, proof)
        except (ValueError, IndexError, TypeError, OverflowError, struct.error) as exc:
            raise VerificationError(f"malformed range proof: {exc}") from exc
        end = start + len(values)
        runs = self._missing_runs(start, end)
        if not runs:
            return 0
        in_run, loose = _place_nodes(made, runs, start, end)
        storage = self._storage
        with storage.transaction() as db:
            for a, b in runs:
                j, k = a - start, b - start
                storage.put_segment(
                    db,
                    a,
                    [len(v) for v in values[j:k]],
                    b"".join(leaves[j:k]),
                    b"".join(values[j:k]),
                    pack_node_list(in_run[a]),
                )
            storage.put_nodes(db, loose)
        stored = 0
        for a, b in runs:
            self._bitfield.set_range(a, b)
            stored += b - a
        if self._contiguous >= start:
            self._contiguous = self._bitfield.first_unset(self._contiguous)
        return stored

    def _missing_runs(self, start: int, end: int) -> list[tuple[int, int]]:
        """The runs of blocks in [start, end) this log does not hold, as (start, end) pairs."""
        runs: list[tuple[int, int]] = []
        i = start
        while i < end:
            if self._bitfield.has(i):
                i += 1
                continue
            j = i
            while j < end and not self._bitfield.has(j):
                j += 1
            runs.append((i, j))
            i = j
        return runs

    # -- checking everything ---------------------------------------------------------------

    def verify_all(self, damaged: Iterable[int] = ()) -> VerifyReport:
        """Re-verify every held block and node up to the signed head, then the head.

        Raises :class:`StorageError` naming the first bad block or node. Blocks listed in
        ``damaged`` (found by :meth:`damaged_blocks`) are not checked against their data: the
        rest of the tree is checked with their stored leaf hashes.
        """
        blocks, nodes = check_tree(self._storage, self.length, damaged)
        check_head(self._storage, self._meta, self._head, self._roots)
        return VerifyReport(blocks, nodes, self.length)


def _grow_tree(
    roots: Sequence[Node], length: int, blocks: Sequence[bytes]
) -> tuple[list[int], list[bytes], bytes, list[Node]]:
    """Blocks appended to a tree of ``length`` blocks with these roots: their sizes, their
    leaf hashes, the parent nodes made (packed as stored) and the new roots.

    The hot loop keeps the roots as parallel lists of sizes and hashes and packs parent nodes
    straight into bytes: no per-node objects.
    """
    n = length
    root_sizes = [r.size for r in roots]
    root_hashes = [r.hash for r in roots]
    sizes: list[int] = []
    leaves: list[bytes] = []
    parents = bytearray()
    blake = hashlib.blake2b
    pack_node = _NODE.pack
    leaf_prefix: dict[int, bytes] = {}
    for value in blocks:
        if type(value) is not bytes:
            raise TypeError(f"block {n} is {type(value).__name__}, not bytes")
        size = len(value)
        prefix = leaf_prefix.get(size)
        if prefix is None:
            prefix = leaf_prefix[size] = b"\x00" + _U64(size)
        h = blake(prefix + value, digest_size=32).digest()
        sizes.append(size)
        leaves.append(h)
        n += 1
        if n & 1:
            root_sizes.append(size)
            root_hashes.append(h)
            continue
        idx = 2 * n - 2
        k = n
        d = 0
        while not k & 1:
            size += root_sizes.pop()
            h = blake(b"\x01" + _U64(size) + root_hashes.pop() + h, digest_size=32).digest()
            idx -= 1 << d
            d += 1
            k >>= 1
            parents += pack_node(idx, size, h)
        root_sizes.append(size)
        root_hashes.append(h)
    grown = [
        Node(i, sz, hh)
        for i, sz, hh in zip(flat_tree.full_roots(2 * n), root_sizes, root_hashes, strict=True)
    ]
    return sizes, leaves, bytes(parents), grown


def _place_nodes(
    made: Sequence[Node], runs: Sequence[tuple[int, int]], start: int, end: int
) -> tuple[dict[int, list[Node]], list[Node]]:
    """Where a range proof's nodes are stored: parents whose last block is in a new run go in
    that run's segment (by the run's start); the rest (proof siblings, nodes reaching past the
    run) go to ``nodes``."""
    in_run: dict[int, list[Node]] = {a: [] for a, _ in runs}
    loose: list[Node] = []
    for n in made:
        if not n.index & 1:
            if not start <= n.index // 2 < end:
                loose.append(n)
            continue
        last = flat_tree.right_span(n.index) // 2
        for a, b in runs:
            if a <= last < b:
                in_run[a].append(n)
                break
        else:
            loose.append(n)
    return in_run, loose
