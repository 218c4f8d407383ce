'use strict'
// JS hypercore side of bench/replication.py: a writer served over TCP and fresh readers, each
// `core.replicate(isInitiator)` (Noise over @hyperswarm/secret-stream) piped to a net socket.
//
//   node bench/js/replication_anchor.js serve <dir> <blocks> <block-size> <seed> <key-seed-hex>
//     make a core in <dir> with the seeded blocks (appended in arrays of 1,000), serve it on
//     127.0.0.1:0 and print {"port", "key", "append_s"}; serve until stdin ends (or a line "quit"),
//     then print {"maxrss_kb"} and exit.
//   node bench/js/replication_anchor.js read <dir> <host> <port> <key-hex> <start> <end>
//     a fresh core in <dir>; the clock starts before connecting and stops when blocks
//     [start, end) are all downloaded and verified (`core.download({start, end}).done()`, after
//     `core.update({wait: true})` so the length is known). Prints {"seconds", "blocks", "length",
//     "sha256" (of the blocks, read back after the clock stopped), "maxrss_kb"}.
//   node bench/js/replication_anchor.js pair <dir> <blocks> <block-size> <seed>
//     writer and reader in ONE process (over TCP on 127.0.0.1), full download: the set-up of the
//     anchor figure in docs (shared/reference/anchors.md). Prints {"seconds", "blocks", "rate"}.
//
// Data: block i is bytes [i*size, (i+1)*size) of SHA-256(seed u64le || counter u64le) for counter
// 0, 1, 2, ... concatenated (bench/replication.py and bench/log.py make the same bytes).

const path = require('path')
const fs = require('fs')
const net = require('net')
const crypto = require('crypto')
const readline = require('readline')
const { createRequire } = require('module')

const interop = createRequire(path.resolve(__dirname, '../../tests/interop/package.json'))
const Hypercore = interop('hypercore')
const hcrypto = createRequire(interop.resolve('hypercore'))('hypercore-crypto')

const now = () => Number(process.hrtime.bigint()) / 1e9
const maxrss = () => process.resourceUsage().maxRSS // kB

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

async function writer (dir, n, size, seed, keySeed) {
  const core = new Hypercore(dir, { keyPair: hcrypto.keyPair(keySeed) })
  await core.ready()
  const blocks = makeBlocks(n, size, seed)
  const t = now()
  for (let i = 0; i < n; i += 1000) await core.append(blocks.slice(i, Math.min(i + 1000, n)))
  const appendS = now() - t
  const sockets = new Set()
  const server = net.createServer((socket) => {
    sockets.add(socket)
    const stream = core.replicate(false)
    socket.pipe(stream).pipe(socket)
    socket.on('error', () => {})
    stream.on('error', () => {})
    socket.on('close', () => sockets.delete(socket))
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const close = async () => {
    server.close()
    for (const s of sockets) s.destroy()
    await core.close()
  }
  return { core, port: server.address().port, appendS, close }
}

async function fetchRange (dir, host, port, key, start, end) {
  const core = new Hypercore(dir, key)
  await core.ready()
  const t = now()
  const socket = net.connect(port, host)
  const stream = core.replicate(true)
  socket.pipe(stream).pipe(socket)
  socket.on('error', () => {})
  stream.on('error', () => {})
  await core.update({ wait: true })
  if (core.length < end) throw new Error(`remote length ${core.length} < ${end}`)
  await core.download({ start, end }).done()
  const seconds = now() - t
  if (!(await core.has(start, end))) throw new Error(`blocks [${start}, ${end}) not all stored`)
  const hash = crypto.createHash('sha256')
  for (let i = start; i < end; i++) hash.update(await core.get(i, { wait: false }))
  const res = { seconds, blocks: end - start, length: core.length, sha256: hash.digest('hex') }
  socket.destroy()
  await core.close()
  return res
}

async function serve ([dir, nArg, sizeArg, seedArg, keySeedHex]) {
  const w = await writer(dir, Number(nArg), Number(sizeArg), Number(seedArg),
    Buffer.from(keySeedHex, 'hex'))
  process.stdout.write(JSON.stringify({
    port: w.port,
    key: w.core.key.toString('hex'),
    append_s: w.appendS,
    hypercore: require(interop.resolve('hypercore/package.json')).version
  }) + '\n')
  const rl = readline.createInterface({ input: process.stdin })
  for await (const line of rl) {
    if (line.trim() === 'quit') break
  }
  await w.close()
  return { maxrss_kb: maxrss() }
}

async function read ([dir, host, port, keyHex, startArg, endArg]) {
  const res = await fetchRange(dir, host, Number(port), Buffer.from(keyHex, 'hex'),
    Number(startArg), Number(endArg))
  return { ...res, maxrss_kb: maxrss() }
}

async function pair ([dir, nArg, sizeArg, seedArg]) {
  const n = Number(nArg)
  const w = await writer(path.join(dir, 'writer'), n, Number(sizeArg), Number(seedArg),
    crypto.createHash('sha256').update('pair').digest())
  const res = await fetchRange(path.join(dir, 'reader'), '127.0.0.1', w.port, w.core.key, 0, n)
  await w.close()
  return { ...res, rate: n / res.seconds, maxrss_kb: maxrss() }
}

const modes = { serve, read, pair }
const [mode, ...args] = process.argv.slice(2)
if (!modes[mode]) {
  process.stderr.write('usage: replication_anchor.js serve|read|pair ...\n')
  process.exit(2)
}
modes[mode](args).then((out) => {
  process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(0))
}, (err) => {
  process.stderr.write(String((err && err.stack) || err) + '\n', () => process.exit(1))
})
