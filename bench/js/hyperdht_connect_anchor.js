// The JS anchor of bench/hyperdht_connect.py: a testnet of N hyperdht nodes on 127.0.0.1, one
// JS server, and CONNECTS connects from one JS client node (a fresh client key each time).
//   node bench/js/hyperdht_connect_anchor.js <nodes> <connects>
// Prints one JSON object: handshake_ms (connect() until the PEER_HANDSHAKE REPLY is in: FIND_PEER
// + relay + IK, what Cairn's handshake_by_key measures) and open_ms (until the encrypted stream
// is open, UDX included), each { median_ms, p99_ms, n }, and ok.
'use strict'

const path = require('path')
const interop = path.join(__dirname, '..', '..', 'tests', 'interop', 'node_modules')
const DHT = require(path.join(interop, 'hyperdht'))
const createTestnet = require(path.join(interop, 'hyperdht', 'testnet'))

function stats (xs) {
  const s = [...xs].sort((a, b) => a - b)
  const at = (q) => s[Math.min(s.length - 1, Math.floor(q * s.length))]
  return { median_ms: at(0.5), p99_ms: at(0.99), n: s.length }
}

async function main () {
  const n = Number(process.argv[2] || 10)
  const connects = Number(process.argv[3] || 100)
  const testnet = await createTestnet(n, { host: '127.0.0.1' })
  const serverNode = testnet.createNode()
  const server = serverNode.createServer((conn) => conn.on('error', () => {}))
  const serverKeys = DHT.keyPair(Buffer.alloc(32, 1))
  await server.listen(serverKeys)
  const client = testnet.createNode()
  await client.fullyBootstrapped()
  const original = client._router.peerHandshake.bind(client._router)
  let handshakeAt = 0
  client._router.peerHandshake = async (...args) => {
    const res = await original(...args)
    if (!handshakeAt) handshakeAt = performance.now()
    return res
  }
  const hs = []
  const open = []
  let ok = 0
  for (let i = 0; i < connects; i++) {
    const keyPair = DHT.keyPair()
    handshakeAt = 0
    const start = performance.now()
    const socket = client.connect(serverKeys.publicKey, { keyPair })
    try {
      await new Promise((resolve, reject) => {
        socket.once('open', resolve)
        socket.once('error', reject)
      })
      open.push(performance.now() - start)
      hs.push(handshakeAt - start)
      ok++
    } catch {}
    socket.destroy()
  }
  process.stdout.write(JSON.stringify({ handshake_ms: stats(hs), open_ms: stats(open), ok, rss_mib: process.memoryUsage().rss / 1048576 }) + '\n')
  await client.destroy()
  await serverNode.destroy()
  await testnet.destroy()
  process.exit(0)
}

main().catch((err) => { console.error(err); process.exit(1) })
