"""A writer, a sparse replica and their proofs, held against a plain list by hypothesis."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cairn import crypto
from cairn.errors import NotAvailableError
from cairn.log import Log
from cairn.merkle import InvalidRequestError
from cairn.messages import Request, RequestBlock, RequestUpgrade, decode_data, encode_data

block_values = st.binary(min_size=0, max_size=40)


class LogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="cairn-stateful-"))
        self.writer = Log.create(self.dir / "w.db", crypto.key_pair(bytes([1]) * 32))
        self.replica = Log.replica(self.dir / "r.db", self.writer.key)
        self.model: list[bytes] = []
        self.cleared: set[int] = set()
        self.fetched: set[int] = set()

    def teardown(self) -> None:
        self.writer.close()
        self.replica.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(values=st.lists(block_values, min_size=1, max_size=20))
    def append(self, values: list[bytes]) -> None:
        assert self.writer.append(values) == len(self.model) + len(values)
        self.model.extend(values)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def replicate_block(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.model) - 1))
        upgrade = None
        if self.replica.length < self.writer.length:
            upgrade = RequestUpgrade(self.replica.length, self.writer.length - self.replica.length)
        hint = self.replica.missing_nodes(2 * i) if self.replica.length else 0
        req = Request(block=RequestBlock(i, hint), upgrade=upgrade, manifest=True)
        if i in self.cleared:
            try:
                self.writer.proof(req)
            except InvalidRequestError:
                return
            raise AssertionError(f"a proof was made for cleared block {i}")
        wire = encode_data(self.writer.proof(req))
        applied = self.replica.verify_and_apply(decode_data(wire))
        assert applied.block == i and applied.length == len(self.model)
        self.fetched.add(i)
        assert self.replica.get(i) == self.model[i]

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def clear(self, data: st.DataObject) -> None:
        start = data.draw(st.integers(0, len(self.model) - 1))
        end = data.draw(st.integers(start, len(self.model)))
        self.writer.clear(start, end)
        self.cleared.update(range(start, end))

    @rule()
    def reopen(self) -> None:
        self.writer.close()
        self.writer = Log.open(self.dir / "w.db")
        self.replica.close()
        self.replica = Log.open(self.dir / "r.db")

    @rule()
    def verify_everything(self) -> None:
        assert self.writer.verify_all().length == len(self.model)
        self.replica.verify_all()

    @invariant()
    def writer_matches_model(self) -> None:
        assert self.writer.length == len(self.model)
        assert self.writer.byte_length == sum(len(b) for b in self.model)
        for i, value in enumerate(self.model):
            if i in self.cleared:
                assert not self.writer.has(i)
            else:
                assert self.writer.get(i) == value

    @invariant()
    def replica_holds_only_true_blocks(self) -> None:
        assert self.replica.length <= self.writer.length
        for i in range(self.replica.length):
            if i in self.fetched:
                assert self.replica.get(i) == self.model[i]
            else:
                assert not self.replica.has(i)
                try:
                    self.replica.get(i)
                except NotAvailableError:
                    continue
                raise AssertionError(f"replica returned block {i} it never fetched")


LogMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
TestLogMachine = LogMachine.TestCase
