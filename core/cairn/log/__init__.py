"""A signed sparse append-only log, byte-compatible with Hypercore 11, stored in SQLite.

- :mod:`~cairn.log.log`: :class:`Log`, opening, reading, writing (append, truncate, clear),
  proofs out (:meth:`Log.proof`, :meth:`Log.range_proof`) and in (:meth:`Log.verify_and_apply`,
  :meth:`Log.verify_and_apply_range`), each change one transaction;
- :mod:`~cairn.log.verify`: the phases a proof is checked in before anything is stored, one
  function each, none of them writing;
- :mod:`~cairn.log.integrity`: the checks of what is on disk, on opening and in
  :meth:`Log.verify_all`.

The tree is :mod:`cairn.merkle`, the proofs :mod:`cairn.proofs` (:func:`range_proof_nodes` and
:func:`verify_range` are re-exported here), the tables :mod:`cairn.storage`.
"""

from cairn.log.log import Applied, Log, VerifyReport
from cairn.proofs import range_proof_nodes, verify_range

__all__ = ["Applied", "Log", "VerifyReport", "range_proof_nodes", "verify_range"]
