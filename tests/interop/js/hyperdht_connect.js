// JS hyperdht connect peers for tests/interop/test_hyperdht_interop.py, one JSON object a line.
//   node tests/interop/js/hyperdht_connect.js   (cwd tests/interop)
// First line in: { "role": "server" | "client" | "testnet", "bootstrap": [[host, port], ...],
//                  "seed": hex32, "remoteKey": hex32 (client), "nodes": N (testnet) }
// testnet: N persistent JS nodes (the first a bootstrapper when bootstrap is empty); prints
//   { ready, bootstrap: [host, port] } and runs until stdin closes.
// server: createServer({ firewall }) listening on keyPair(seed); prints { ready, publicKey },
//   then { firewall: remoteKeyHex, address } for every handshake its firewall hook sees.
// client: dht.connect(remoteKey) with keyPair(seed); prints { reply: bool, noiseBytes,
//   serverAddress } once the PEER_HANDSHAKE reply is in (or { error } when none came); with
//   "waitEnd": true, then a second line { error, ms } or { open, ms }: how the connect ended.
'use strict'

const DHT = require('hyperdht')
const readline = require('readline')

const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')
const buf = (h) => Buffer.from(h, 'hex')

function freePort () {
  const sock = require('dgram').createSocket('udp4')
  return new Promise((resolve, reject) => {
    sock.once('error', reject)
    sock.bind(0, '127.0.0.1', () => {
      const { port } = sock.address()
      sock.close(() => resolve(port))
    })
  })
}

async function main () {
  const rl = readline.createInterface({ input: process.stdin })
  const lines = rl[Symbol.asyncIterator]()
  const cmd = JSON.parse((await lines.next()).value)
  let bootstrap = (cmd.bootstrap || []).map(([host, port]) => ({ host, port }))
  const nodes = []
  if (cmd.role === 'testnet') {
    if (bootstrap.length === 0) {
      const first = DHT.bootstrapper(await freePort(), '127.0.0.1', { host: '127.0.0.1' })
      await first.fullyBootstrapped()
      nodes.push(first)
      bootstrap = [{ host: '127.0.0.1', port: first.address().port }]
    }
    while (nodes.length < cmd.nodes) {
      const node = new DHT({ ephemeral: false, firewalled: false, bootstrap, host: '127.0.0.1', port: [0, 0] })
      await node.fullyBootstrapped()
      nodes.push(node)
    }
    out({ ready: true, bootstrap: [bootstrap[0].host, bootstrap[0].port] })
    for await (const line of lines) if (line.trim() === 'quit') break
    await Promise.all(nodes.map((d) => d.destroy()))
    process.exit(0)
  }
  const dht = new DHT({ bootstrap, host: '127.0.0.1' })
  await dht.fullyBootstrapped()
  const keyPair = DHT.keyPair(buf(cmd.seed))
  if (cmd.role === 'server') {
    const server = dht.createServer({
      firewall (remotePublicKey, payload, address) {
        out({ firewall: remotePublicKey.toString('hex'), address: [address.host, address.port] })
        return false
      }
    })
    server.on('connection', (conn) => conn.on('error', () => {}))
    await server.listen(keyPair)
    out({ ready: true, publicKey: keyPair.publicKey.toString('hex') })
    for await (const line of lines) if (line.trim() === 'quit') break
    await dht.destroy()
    process.exit(0)
  }
  // client: record what the router's peerHandshake returns (the REPLY), then stop
  const router = dht._router
  const original = router.peerHandshake.bind(router)
  let done
  const result = new Promise((resolve) => { done = resolve })
  router.peerHandshake = async (...args) => {
    const res = await original(...args)
    done({ reply: true, noiseBytes: res.noise.length, serverAddress: [res.serverAddress.host, res.serverAddress.port], relayed: res.relayed })
    return res
  }
  const started = Date.now()
  const socket = dht.connect(buf(cmd.remoteKey), { keyPair })
  const end = new Promise((resolve) => {
    socket.on('error', (err) => resolve({ error: err.code || err.message, ms: Date.now() - started }))
    socket.on('open', () => resolve({ open: true, ms: Date.now() - started }))
  })
  end.then((e) => done({ reply: false, ...e }))
  const quit = (async () => { for await (const line of lines) if (line.trim() === 'quit') break })()
  out(await result)
  if (cmd.waitEnd) out(await Promise.race([end, quit.then(() => ({ quit: true }))]))
  socket.destroy()
  await dht.destroy()
  process.exit(0)
}

main().catch((err) => {
  out({ error: String(err && err.stack) })
  process.exit(1)
})
