// The JS oracle in the NAT lab (tests/lab/test_lab_hyperdht.py): npm hyperdht and dht-rpc from
// tests/interop/node_modules (NODE_PATH). One JSON object a line on stdout.
//
//   node hyperdht_lab.js testnet SIZE HOST           a testnet of SIZE persistent nodes on HOST:
//                                                    {"bootstrap": ["HOST:PORT"]}, runs until killed
//   node hyperdht_lab.js server BOOTSTRAP SEEDHEX    a hyperdht server listening on the key pair of
//                                                    SEEDHEX: {"ready": true, "publicKey": hex};
//                                                    echoes what a client writes, prefixed "echo:"
//   node hyperdht_lab.js open BOOTSTRAP KEYHEX MS [SEEDHEX]  connects to KEYHEX (as SEEDHEX's key
//                                                    pair), once the Noise handshake completes:
//                                                    {"ok": true, "remotePublicKey": hex, "ms": N}
//   node hyperdht_lab.js client BOOTSTRAP KEYHEX MS  connects to KEYHEX, writes "ping", waits for
//                                                    the echo: {"ok": true, "echo": ..., "ms": N} or
//                                                    {"ok": false, "error": code or message}
//   node hyperdht_lab.js bench BOOTSTRAP KEYHEX N    N connections one after the other, each timed
//                                                    to its handshake: {"ms": [...], "failed": n}
//   node hyperdht_lab.js echobench BOOTSTRAP KEYHEX N  the same, each timed to the echo of "ping"
// BOOTSTRAP is a comma-separated list of HOST:PORT.
'use strict'

const DHT = require('hyperdht')
const createTestnet = require('hyperdht/testnet')
const b4a = require('b4a')

function out (value) {
  process.stdout.write(JSON.stringify(value) + '\n')
}

function bootstrapOf (text) {
  return text.split(',').map((a) => {
    const i = a.lastIndexOf(':')
    return { host: a.slice(0, i), port: Number(a.slice(i + 1)) }
  })
}

async function testnet (size, host) {
  const net = await createTestnet(Number(size), { host })
  out({ bootstrap: net.bootstrap.map((b) => `${b.host}:${b.port}`) })
  const stop = () => process.exit(0) // (the lab is torn down: no goodbyes needed)
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}

async function server (bootstrap, seedHex) {
  const dht = new DHT({ bootstrap: bootstrapOf(bootstrap) })
  const keyPair = DHT.keyPair(b4a.from(seedHex, 'hex'))
  const srv = dht.createServer((socket) => {
    socket.on('data', (data) => socket.write(b4a.concat([b4a.from('echo:'), data])))
    socket.on('error', () => {})
    out({ connection: b4a.toString(socket.remotePublicKey, 'hex') })
  })
  await srv.listen(keyPair)
  out({ ready: true, publicKey: b4a.toString(keyPair.publicKey, 'hex') })
  const stop = () => process.exit(0)
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}

async function client (bootstrap, keyHex, ms) {
  const started = Date.now()
  const dht = new DHT({ bootstrap: bootstrapOf(bootstrap) })
  const timer = setTimeout(() => finish({ ok: false, error: `no echo within ${ms} ms` }), Number(ms))
  let done = false
  async function finish (result) {
    if (done) return
    done = true
    clearTimeout(timer)
    out(result)
    await dht.destroy({ force: true }).catch(() => {})
    process.exit(0)
  }
  const socket = dht.connect(b4a.from(keyHex, 'hex'))
  socket.on('error', (err) => finish({ ok: false, error: err.code || err.message }))
  socket.on('open', () => socket.write(b4a.from('ping')))
  socket.on('data', (data) => {
    finish({ ok: true, echo: b4a.toString(data), ms: Date.now() - started })
  })
}

// open BOOTSTRAP KEYHEX MS [SEEDHEX]: connects to KEYHEX (with the key pair of SEEDHEX, if
// given) and reports the Noise handshake's result once it completes:
// {"ok": true, "remotePublicKey": hex, "ms": N} or {"ok": false, "error": ...}
async function open (bootstrap, keyHex, ms, seedHex) {
  const started = Date.now()
  const dht = new DHT({ bootstrap: bootstrapOf(bootstrap) })
  const keyPair = seedHex ? DHT.keyPair(b4a.from(seedHex, 'hex')) : undefined
  let done = false
  const timer = setTimeout(() => finish({ ok: false, error: `not open within ${ms} ms` }), Number(ms))
  async function finish (result) {
    if (done) return
    done = true
    clearTimeout(timer)
    out(result)
    await dht.destroy({ force: true }).catch(() => {})
    process.exit(0)
  }
  const socket = dht.connect(b4a.from(keyHex, 'hex'), { keyPair })
  socket.on('error', (err) => finish({ ok: false, error: err.code || err.message }))
  socket.on('handshake', () => finish({
    ok: true, remotePublicKey: b4a.toString(socket.remotePublicKey, 'hex'), ms: Date.now() - started
  }))
}

// bench BOOTSTRAP KEYHEX N: one DHT node bootstrapped once, then N connections to KEYHEX one
// after the other, each timed from connect() to its Noise handshake and closed:
// {"ms": [...], "failed": n}
async function bench (bootstrap, keyHex, n) {
  const dht = new DHT({ bootstrap: bootstrapOf(bootstrap) })
  await dht.fullyBootstrapped()
  const ms = []
  let failed = 0
  for (let i = 0; i < Number(n); i++) {
    const started = process.hrtime.bigint()
    const ok = await new Promise((resolve) => {
      const socket = dht.connect(b4a.from(keyHex, 'hex'))
      const timer = setTimeout(() => { socket.destroy(); resolve(false) }, 10000)
      socket.on('error', () => { clearTimeout(timer); resolve(false) })
      socket.on('handshake', () => {
        clearTimeout(timer)
        ms.push(Number(process.hrtime.bigint() - started) / 1e6)
        socket.on('close', () => resolve(true))
        socket.destroy()
      })
    })
    if (!ok) failed++
  }
  out({ ms, failed })
  await dht.destroy({ force: true }).catch(() => {})
  process.exit(0)
}

// echobench BOOTSTRAP KEYHEX N: one DHT node bootstrapped once, then N connections to KEYHEX
// one after the other (a fresh key pair each), each timed from connect() to the echo of "ping"
// (the data path works both ways) and closed: {"ms": [...], "failed": n, "errors": [...]}
async function echobench (bootstrap, keyHex, n) {
  const dht = new DHT({ bootstrap: bootstrapOf(bootstrap) })
  await dht.fullyBootstrapped()
  const ms = []
  const errors = []
  let failed = 0
  for (let i = 0; i < Number(n); i++) {
    const started = process.hrtime.bigint()
    const ok = await new Promise((resolve) => {
      const socket = dht.connect(b4a.from(keyHex, 'hex'), { keyPair: DHT.keyPair() })
      const timer = setTimeout(() => { errors.push('timeout'); socket.destroy(); resolve(false) }, 15000)
      socket.on('error', (err) => { clearTimeout(timer); errors.push(err.code || err.message); resolve(false) })
      socket.on('open', () => socket.write(b4a.from('ping')))
      socket.on('data', () => {
        clearTimeout(timer)
        ms.push(Number(process.hrtime.bigint() - started) / 1e6)
        socket.on('close', () => resolve(true))
        socket.destroy()
      })
    })
    if (!ok) failed++
  }
  out({ ms, failed, errors: errors.slice(0, 5) })
  await dht.destroy({ force: true }).catch(() => {})
  process.exit(0)
}

const [verb, ...args] = process.argv.slice(2)
const verbs = { testnet, server, client, open, bench, echobench }
if (!verbs[verb]) {
  process.stderr.write(`unknown verb ${verb}: testnet, server or client\n`)
  process.exit(2)
}
verbs[verb](...args).catch((err) => {
  process.stderr.write(String((err && err.stack) || err) + '\n')
  process.exit(1)
})
