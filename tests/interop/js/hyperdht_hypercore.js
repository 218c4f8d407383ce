// A JS hypercore replicated over a JS hyperdht connection by key (the UDX data phase), for
// tests/interop/test_hyperdht_interop.py and tests/integration/gateway/test_gateway_by_key.py.
// One JSON object a line on stdout; run with cwd tests/interop (or NODE_PATH set).
//   node hyperdht_hypercore.js writer HOST:PORT SERVERKEYHEX NOISESEEDHEX CORESEEDHEX
//     a hypercore writer (key pair of CORESEEDHEX, blocks: the hex lines of CAIRN_BLOCKS_FILE)
//     connects by key to SERVERKEYHEX as NOISESEEDHEX's key pair and replicates on it:
//     {"core": keyHex, "length": n}; after a first stdin line ("go") it connects:
//     {"open": true} or {"error": code}; each later stdin line
//     "append HEX" appends that block ({"length": n}); "quit" ends
//     (with CAIRN_STAY_MS set: no stdin, connects at once and stays that long)
//   node hyperdht_hypercore.js key CORESEEDHEX     the key of that writer's core: {"core": hex}
//   node hyperdht_hypercore.js server HOST:PORT NOISESEEDHEX CORESEEDHEX N
//     a hyperdht server on NOISESEEDHEX's key pair serving a hypercore of N blocks "block-i":
//     {"ready": true, "publicKey": hex, "core": keyHex}; {"connection": remoteKeyHex} per
//     connection; runs until stdin closes
'use strict'

const DHT = require('hyperdht')
const Hypercore = require('hypercore')
const crypto = require('hypercore-crypto')
const fs = require('fs')
const os = require('os')
const path = require('path')
const readline = require('readline')

const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')
const buf = (h) => Buffer.from(h, 'hex')

function bootstrapOf (text) {
  return text.split(',').map((a) => {
    const i = a.lastIndexOf(':')
    return { host: a.slice(0, i), port: Number(a.slice(i + 1)) }
  })
}

async function core (seedHex) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cairn-hdc-'))
  const c = new Hypercore(dir, { keyPair: crypto.keyPair(buf(seedHex)) })
  await c.ready()
  return { c, dir }
}

async function writer (boot, serverKey, noiseSeed, coreSeed) {
  const { c, dir } = await core(coreSeed)
  const blocks = []
  if (process.env.CAIRN_BLOCKS_FILE) {
    for (const line of fs.readFileSync(process.env.CAIRN_BLOCKS_FILE, 'utf8').split('\n')) {
      if (line.trim()) blocks.push(buf(line.trim()))
    }
  }
  if (blocks.length) await c.append(blocks)
  out({ core: c.key.toString('hex'), length: c.length })
  const stay = process.env.CAIRN_STAY_MS
  const rl = stay ? null : readline.createInterface({ input: process.stdin })
  const lines = stay ? null : rl[Symbol.asyncIterator]()
  if (lines) await lines.next() // "go": the test has enrolled the core's key
  const dht = new DHT({ bootstrap: bootstrapOf(boot) })
  const socket = dht.connect(buf(serverKey), { keyPair: DHT.keyPair(buf(noiseSeed)) })
  socket.on('error', (err) => out({ error: err.code || err.message }))
  socket.on('open', () => out({ open: true }))
  const stream = c.replicate(socket)
  stream.on('error', () => {})
  if (stay) await new Promise((resolve) => setTimeout(resolve, Number(stay)))
  for (let next = lines ? await lines.next() : { done: true }; !next.done; next = await lines.next()) {
    const [verb, arg] = next.value.trim().split(' ')
    if (verb === 'quit') break
    if (verb === 'append') {
      await c.append(buf(arg))
      out({ length: c.length })
    }
  }
  socket.destroy()
  await dht.destroy({ force: true }).catch(() => {})
  await c.close()
  fs.rmSync(dir, { recursive: true, force: true })
  process.exit(0)
}

async function key (coreSeed) {
  const { c, dir } = await core(coreSeed)
  out({ core: c.key.toString('hex') })
  await c.close()
  fs.rmSync(dir, { recursive: true, force: true })
}

async function server (boot, noiseSeed, coreSeed, n) {
  const { c, dir } = await core(coreSeed)
  const blocks = []
  for (let i = 0; i < Number(n); i++) blocks.push(Buffer.from('block-' + i))
  if (blocks.length) await c.append(blocks)
  const dht = new DHT({ bootstrap: bootstrapOf(boot) })
  const srv = dht.createServer((socket) => {
    out({ connection: socket.remotePublicKey.toString('hex') })
    socket.on('error', () => {})
    const stream = c.replicate(socket)
    stream.on('error', () => {})
  })
  const keyPair = DHT.keyPair(buf(noiseSeed))
  await srv.listen(keyPair)
  out({ ready: true, publicKey: keyPair.publicKey.toString('hex'), core: c.key.toString('hex') })
  const rl = readline.createInterface({ input: process.stdin })
  for await (const line of rl) if (line.trim() === 'quit') break
  await srv.close().catch(() => {})
  await dht.destroy({ force: true }).catch(() => {})
  await c.close()
  fs.rmSync(dir, { recursive: true, force: true })
  process.exit(0)
}

const [verb, ...args] = process.argv.slice(2)
const verbs = { writer, server, key }
if (!verbs[verb]) {
  process.stderr.write(`unknown verb ${verb}: writer or server\n`)
  process.exit(2)
}
verbs[verb](...args).catch((err) => {
  process.stderr.write(String((err && err.stack) || err) + '\n')
  process.exit(1)
})
