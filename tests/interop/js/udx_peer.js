// JS udx-native (and secret-stream + hypercore over it) for the UDX interop tests and bench
// (run with cwd tests/interop). Every mode binds a UDP socket on 127.0.0.1:0, prints
// {"port"}, then reads one stdin line {"port": <the Cairn side's port>}, connects stream
// <localId> to <remoteId> there and prints {"connected": true}.
//   node js/udx_peer.js sink   <localId> <remoteId>
//     read until the peer ends, end too; on close print {"bytes", "sha256", "seconds"}
//   node js/udx_peer.js source <localId> <remoteId> <bytes>
//     write <bytes> random bytes and end; read the peer's bytes until it ends; on close print
//     {"bytes", "sha256", "received", "seconds"}
//   node js/udx_peer.js pair <bytes>
//     JS to JS on two sockets in this process (the anchor): print {"bytes", "seconds"}
//   node js/udx_peer.js hypercore-read <localId> <remoteId> <keyHex> <blocks>
//     secret-stream (initiator) over the stream, replicate the hypercore <keyHex>, download
//     blocks [0, blocks), print {"blocks", "seconds", "length", "sha256"} (of all blocks)
//   node js/udx_peer.js hypercore-serve <localId> <remoteId> <blocks> <blockSize>
//     a JS writer of <blocks> random blocks (its first line also has "key"), serving over
//     secret-stream (responder) on the stream until stdin ends
//   node js/udx_peer.js hypercore-pair <blocks> <blockSize>
//     JS writer and JS reader in this process over UDX (the anchor of bench/udx.py): the clock
//     runs from the connect to the last block verified; print {"blocks", "seconds"}
'use strict'

const UDX = require('udx-native')
const crypto = require('crypto')
const readline = require('readline')

function firstLine () {
  return new Promise((resolve) => {
    const rl = readline.createInterface({ input: process.stdin })
    rl.once('line', (line) => { rl.close(); resolve(JSON.parse(line)) })
  })
}

function out (value) {
  return new Promise((resolve) => process.stdout.write(JSON.stringify(value) + '\n', resolve))
}

async function connected (localId, remoteId, extra = {}) {
  const udx = new UDX()
  const socket = udx.createSocket()
  socket.bind(0, '127.0.0.1')
  await out({ port: socket.address().port, ...extra })
  const { port } = await firstLine()
  const stream = udx.createStream(Number(localId))
  stream.connect(socket, Number(remoteId), port, '127.0.0.1')
  await out({ connected: true })
  return { socket, stream }
}

function drain (stream) {
  const hash = crypto.createHash('sha256')
  let bytes = 0
  stream.on('data', (data) => { hash.update(data); bytes += data.length })
  return () => ({ bytes, sha256: hash.digest('hex') })
}

async function sink ([localId, remoteId]) {
  const { socket, stream } = await connected(localId, remoteId)
  const started = process.hrtime.bigint()
  const result = drain(stream)
  stream.on('end', () => stream.end())
  await new Promise((resolve) => stream.on('close', resolve))
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  await out({ ...result(), seconds })
  await socket.close()
}

async function source ([localId, remoteId, bytesArg]) {
  const { socket, stream } = await connected(localId, remoteId)
  const total = Number(bytesArg)
  const hash = crypto.createHash('sha256')
  const chunks = [] // made before the clock starts: the timing is the stream's
  for (let made = 0; made < total; made += 65536) {
    chunks.push(crypto.randomBytes(Math.min(65536, total - made)))
    hash.update(chunks[chunks.length - 1])
  }
  const started = process.hrtime.bigint()
  const received = drain(stream)
  let sent = 0
  for (const chunk of chunks) {
    sent += chunk.length
    if (!stream.write(chunk)) await new Promise((resolve) => stream.once('drain', resolve))
  }
  stream.end()
  await new Promise((resolve) => stream.on('close', resolve))
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  await out({ bytes: sent, sha256: hash.digest('hex'), received: received(), seconds })
  await socket.close()
}

async function pair ([bytesArg]) {
  const udx = new UDX()
  const a = udx.createSocket()
  const b = udx.createSocket()
  a.bind(0, '127.0.0.1')
  b.bind(0, '127.0.0.1')
  const sa = udx.createStream(1)
  const sb = udx.createStream(2)
  sa.connect(a, 2, b.address().port, '127.0.0.1')
  sb.connect(b, 1, a.address().port, '127.0.0.1')
  const total = Number(bytesArg)
  const chunk = crypto.randomBytes(65536)
  const started = process.hrtime.bigint()
  const result = drain(sb)
  sb.on('end', () => sb.end())
  const closed = new Promise((resolve) => sb.on('close', resolve))
  let sent = 0
  while (sent < total) {
    const piece = chunk.subarray(0, Math.min(chunk.length, total - sent))
    sent += piece.length
    if (!sa.write(piece)) await new Promise((resolve) => sa.once('drain', resolve))
  }
  sa.end()
  await closed
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  await out({ bytes: result().bytes, seconds })
  await a.close()
  await b.close()
}

async function hypercoreRead ([localId, remoteId, keyHex, blocksArg]) {
  const Hypercore = require('hypercore')
  const fs = require('fs')
  const os = require('os')
  const path = require('path')
  const SecretStream = require('@hyperswarm/secret-stream')
  const { socket, stream } = await connected(localId, remoteId)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cairn-udx-'))
  const core = new Hypercore(dir, Buffer.from(keyHex, 'hex'))
  await core.ready()
  const started = process.hrtime.bigint()
  const secret = new SecretStream(true, stream)
  core.replicate(secret)
  const blocks = Number(blocksArg)
  const hash = crypto.createHash('sha256')
  await core.download({ start: 0, end: blocks }).done()
  for (let i = 0; i < blocks; i++) hash.update(await core.get(i))
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  await out({ blocks, seconds, length: core.length, sha256: hash.digest('hex') })
  secret.destroy()
  await core.close()
  await socket.close()
  fs.rmSync(dir, { recursive: true, force: true })
}

async function hypercoreServe ([localId, remoteId, blocksArg, sizeArg]) {
  const Hypercore = require('hypercore')
  const SecretStream = require('@hyperswarm/secret-stream')
  const fs = require('fs')
  const os = require('os')
  const path = require('path')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cairn-udx-'))
  const n = Number(blocksArg)
  const core = new Hypercore(dir)
  await core.ready()
  for (let i = 0; i < n; i += 1000) {
    const batch = []
    for (let j = i; j < Math.min(i + 1000, n); j++) batch.push(crypto.randomBytes(Number(sizeArg)))
    await core.append(batch)
  }
  const { socket, stream } = await connected(localId, remoteId, { key: core.key.toString('hex') })
  const secret = new SecretStream(false, stream)
  secret.on('error', () => {})
  core.replicate(secret)
  await new Promise((resolve) => { process.stdin.on('end', resolve); process.stdin.resume() })
  secret.destroy()
  await core.close()
  await socket.close()
  fs.rmSync(dir, { recursive: true, force: true })
}

async function hypercorePair ([blocksArg, sizeArg]) {
  const Hypercore = require('hypercore')
  const SecretStream = require('@hyperswarm/secret-stream')
  const fs = require('fs')
  const os = require('os')
  const path = require('path')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cairn-udx-'))
  const n = Number(blocksArg)
  const writer = new Hypercore(path.join(dir, 'w'))
  await writer.ready()
  for (let i = 0; i < n; i += 1000) {
    const batch = []
    for (let j = i; j < Math.min(i + 1000, n); j++) batch.push(crypto.randomBytes(Number(sizeArg)))
    await writer.append(batch)
  }
  const reader = new Hypercore(path.join(dir, 'r'), writer.key)
  await reader.ready()
  const udx = new UDX()
  const a = udx.createSocket()
  const b = udx.createSocket()
  a.bind(0, '127.0.0.1')
  b.bind(0, '127.0.0.1')
  const started = process.hrtime.bigint()
  const sa = udx.createStream(1)
  const sb = udx.createStream(2)
  sa.connect(a, 2, b.address().port, '127.0.0.1')
  sb.connect(b, 1, a.address().port, '127.0.0.1')
  const ta = new SecretStream(false, sa)
  const tb = new SecretStream(true, sb)
  writer.replicate(ta)
  reader.replicate(tb)
  await reader.update({ wait: true })
  await reader.download({ start: 0, end: n }).done()
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  await out({ blocks: n, seconds, length: reader.length })
  ta.destroy()
  tb.destroy()
  await reader.close()
  await writer.close()
  await a.close()
  await b.close()
  fs.rmSync(dir, { recursive: true, force: true })
}

const modes = {
  sink,
  source,
  pair,
  'hypercore-read': hypercoreRead,
  'hypercore-serve': hypercoreServe,
  'hypercore-pair': hypercorePair
}
const [mode, ...args] = process.argv.slice(2)
modes[mode](args).then(() => process.exit(0), (err) => {
  process.stderr.write(String((err && err.stack) || err) + '\n', () => process.exit(1))
})
