'use strict'
// JS hypercore anchor for bench/log.py: the same workload, measured the same way.
//
//   node bench/js/log_anchor.js <dir> <blocks> <single-blocks> <block-size> <seed> <verify-range>
//
// Prints one JSON object: rates (entries/s, blocks/s), seconds and bytes on disk after close.
// Data: block i is bytes [i*size, (i+1)*size) of SHA-256(seed u64le || counter u64le) for counter
// 0, 1, 2, ... concatenated (bench/log.py makes the same bytes).

const path = require('path')
const fs = require('fs')
const crypto = require('crypto')
const { createRequire } = require('module')

const interop = createRequire(path.resolve(__dirname, '../../tests/interop/package.json'))
const Hypercore = interop('hypercore')
const c = createRequire(interop.resolve('hypercore'))('compact-encoding')
const { wire } = interop('hypercore/lib/messages.js')

function makeBlocks (n, size, seed) {
  const total = n * size
  const out = Buffer.alloc(Math.ceil(total / 32) * 32)
  const input = Buffer.alloc(16)
  input.writeBigUInt64LE(BigInt(seed), 0)
  for (let k = 0; k * 32 < total; k++) {
    input.writeBigUInt64LE(BigInt(k), 8)
    crypto.createHash('sha256').update(input).digest().copy(out, k * 32)
  }
  const blocks = new Array(n)
  for (let i = 0; i < n; i++) blocks[i] = out.subarray(i * size, (i + 1) * size)
  return blocks
}

function du (p) {
  const st = fs.statSync(p)
  if (!st.isDirectory()) return st.size
  let sum = 0
  for (const name of fs.readdirSync(p)) sum += du(path.join(p, name))
  return sum
}

const now = () => Number(process.hrtime.bigint()) / 1e9

async function main () {
  const [dir, nArg, singleArg, sizeArg, seedArg, rangeArg] = process.argv.slice(2)
  const n = Number(nArg)
  const singleN = Number(singleArg)
  const size = Number(sizeArg)
  const seed = Number(seedArg)
  const range = Number(rangeArg)
  const blocks = makeBlocks(Math.max(n, singleN), size, seed)
  const res = { hypercore: require(interop.resolve('hypercore/package.json')).version }

  // 1. one awaited append per block
  const singleDir = path.join(dir, 'single')
  let core = new Hypercore(singleDir)
  await core.ready()
  let t = now()
  for (let i = 0; i < singleN; i++) await core.append(blocks[i])
  res.single_s = now() - t
  res.single_rate = singleN / res.single_s
  await core.close()
  res.single_disk = du(singleDir)

  // 2. batches of 1,000
  const batchDir = path.join(dir, 'batched')
  core = new Hypercore(batchDir)
  await core.ready()
  t = now()
  for (let i = 0; i < n; i += 1000) await core.append(blocks.slice(i, Math.min(i + 1000, n)))
  res.batch_s = now() - t
  res.batch_rate = n / res.batch_s
  await core.close()
  res.batch_disk = du(batchDir)

  // 3. sequential get of every block, after reopening
  core = new Hypercore(batchDir)
  await core.ready()
  t = now()
  for (let i = 0; i < n; i++) {
    const b = await core.get(i)
    if (b.length !== size) throw new Error('bad block ' + i)
  }
  res.get_s = now() - t
  res.get_rate = n / res.get_s

  // 4. a fresh replica verifies `range` consecutive blocks from the middle, with proofs.
  // Proofs are made (and their `nodes` hints computed) on a dry-run replica first; only
  // decode(encode(proof)) + applyProof on a second replica in the same state is timed.
  if (range > 0 && n >= range) {
    const first = Math.floor(n / 2) - Math.floor(range / 2)
    const manifest = core.core.header.manifest
    const upgrade = await core.proof({ upgrade: { start: 0, length: n }, block: { index: 0, nodes: 0 } })
    upgrade.request = 0
    upgrade.manifest = manifest
    const upgradeBuf = c.encode(wire.data, upgrade)
    const dry = new Hypercore(path.join(dir, 'replica-dry'), core.key)
    const rep = new Hypercore(path.join(dir, 'replica'), core.key)
    await dry.ready()
    await rep.ready()
    if (!(await dry.applyProof(c.decode(wire.data, upgradeBuf)))) throw new Error('upgrade rejected')
    if (!(await rep.applyProof(c.decode(wire.data, upgradeBuf)))) throw new Error('upgrade rejected')
    const proofs = []
    for (let i = first; i < first + range; i++) {
      const p = await core.proof({ block: { index: i, nodes: await dry.missingNodes(i) } })
      p.request = 0
      if (!(await dry.applyProof(p))) throw new Error('dry proof rejected ' + i)
      proofs.push(p)
    }
    t = now()
    for (const p of proofs) {
      if (!(await rep.applyProof(c.decode(wire.data, c.encode(wire.data, p))))) {
        throw new Error('proof rejected')
      }
    }
    res.verify_s = now() - t
    res.verify_rate = range / res.verify_s
    for (let i = first; i < first + range; i++) {
      if (!(await rep.has(i))) throw new Error('replica lacks block ' + i)
    }
    await dry.close()
    await rep.close()
  }
  await core.close()
  process.stdout.write(JSON.stringify(res) + '\n')
}

main().then(() => process.exit(0), (err) => {
  process.stderr.write((err && err.stack) || String(err))
  process.stderr.write('\n')
  process.exit(1)
})
