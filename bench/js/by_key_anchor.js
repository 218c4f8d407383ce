// The JS anchor of bench/by_key.py: replication over a hyperdht connection by key, JS <- JS.
//   node bench/js/by_key_anchor.js N SIZE     (cwd tests/interop, or NODE_PATH set)
// One node process: a 4-node hyperdht testnet on 127.0.0.1, a server on a key pair with a
// hypercore of N blocks of SIZE bytes replicated on each connection, a client that connects by
// key and downloads every block into a fresh hypercore. Prints one JSON line:
// {"connect_ms": time to the connection's open, "seconds": open to the last block, "blocks": N}
'use strict'

const DHT = require('hyperdht')
const createTestnet = require('hyperdht/testnet')
const Hypercore = require('hypercore')
const fs = require('fs')
const os = require('os')
const path = require('path')

async function main (n, size) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cairn-bykey-'))
  const testnet = await createTestnet(4, { host: '127.0.0.1' })
  const writer = new Hypercore(path.join(dir, 'w'))
  await writer.ready()
  const block = Buffer.alloc(size, 7)
  for (let i = 0; i < n; i += 1000) {
    const batch = []
    for (let j = i; j < Math.min(n, i + 1000); j++) batch.push(Buffer.concat([Buffer.from(String(j)), block]).subarray(0, size))
    await writer.append(batch)
  }
  const a = new DHT({ bootstrap: testnet.bootstrap, host: '127.0.0.1' })
  const b = new DHT({ bootstrap: testnet.bootstrap, host: '127.0.0.1' })
  const server = a.createServer((socket) => {
    socket.on('error', () => {})
    writer.replicate(socket).on('error', () => {})
  })
  const keyPair = DHT.keyPair()
  await server.listen(keyPair)
  const reader = new Hypercore(path.join(dir, 'r'), writer.key)
  await reader.ready()
  const t0 = process.hrtime.bigint()
  const socket = b.connect(keyPair.publicKey)
  socket.on('error', () => {})
  reader.replicate(socket).on('error', () => {})
  await new Promise((resolve) => socket.once('open', resolve))
  const t1 = process.hrtime.bigint()
  await reader.update({ wait: true })
  await reader.download({ start: 0, end: n }).done()
  const t2 = process.hrtime.bigint()
  process.stdout.write(JSON.stringify({
    connect_ms: Number(t1 - t0) / 1e6, seconds: Number(t2 - t1) / 1e9, blocks: reader.contiguousLength
  }) + '\n')
  socket.destroy()
  await server.close()
  await a.destroy()
  await b.destroy()
  await testnet.destroy()
  await reader.close()
  await writer.close()
  fs.rmSync(dir, { recursive: true, force: true })
}

main(Number(process.argv[2]), Number(process.argv[3])).catch((err) => {
  process.stderr.write(String((err && err.stack) || err) + '\n')
  process.exit(1)
})
