"""Stream key pairs derived from a primary seed are the ones corestore 7 derives."""

from __future__ import annotations

import random
from pathlib import Path

from cairn.crypto import derive_stream_key_pair
from tests.interop.harness import run_node

_CORESTORE = """
cairn.run(async ({ cases }) => {
  const Corestore = require('corestore')
  const fs = require('fs'), os = require('os'), path = require('path')
  const out = []
  for (const { seed, names } of cases) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cairn-corestore-'))
    const store = new Corestore(dir, { primaryKey: Buffer.from(seed, 'hex'), unsafe: true })
    await store.ready()
    for (const name of names) {
      const kp = await store.createKeyPair(name)
      out.push({ seed, name, publicKey: kp.publicKey.toString('hex'),
                 secretKey: kp.secretKey.toString('hex') })
    }
    await store.close()
    fs.rmSync(dir, { recursive: true, force: true })
  }
  return out
})
"""


def test_derivation_matches_corestore(node_path: Path, interop_dir: Path) -> None:
    rng = random.Random(77)
    names = ["temperature", "humidity", "vibration/x", "ünïcode-stream", "a" * 200]
    cases = [{"seed": rng.randbytes(32).hex(), "names": names} for _ in range(5)]
    result = run_node(_CORESTORE, {"cases": cases}, node=str(node_path))
    assert isinstance(result, list) and len(result) == 25
    for row in result:
        kp = derive_stream_key_pair(bytes.fromhex(row["seed"]), row["name"])
        assert kp.public_key.hex() == row["publicKey"], row["name"]
        assert kp.secret_key is not None and kp.secret_key.hex() == row["secretKey"]
