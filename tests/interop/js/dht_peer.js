// JS hyperdht nodes for the DHT interop tests, driven over stdin/stdout, one JSON object a line.
//   node tests/interop/js/dht_peer.js   (run with cwd tests/interop)
// First line in: { "nodes": N, "bootstrap": [[host, port], ...] | null }
//   bootstrap null: the first JS node is a persistent bootstrapper the others (and Cairn) use.
// First line out: { "ready": true, "bootstrap": [host, port], "nodes": [[host, port, idHex], ...] }
// Then commands in, one result out each: { "op": ..., "node": i, ... }.
'use strict'

const DHT = require('hyperdht')
const readline = require('readline')

const hex = (b) => (b ? Buffer.from(b).toString('hex') : null)
const buf = (h) => Buffer.from(h, 'hex')

function freePort () {
  // a bootstrapper needs a fixed port: take one the kernel hands out, then give it back
  const sock = require('dgram').createSocket('udp4')
  return new Promise((resolve, reject) => {
    sock.once('error', reject)
    sock.bind(0, '127.0.0.1', () => {
      const { port } = sock.address()
      sock.close(() => resolve(port))
    })
  })
}

async function start ({ nodes: n, bootstrap }) {
  const nodes = []
  let boot
  if (!bootstrap) {
    const first = DHT.bootstrapper(await freePort(), '127.0.0.1', { host: '127.0.0.1' })
    await first.fullyBootstrapped()
    nodes.push(first)
    boot = [{ host: '127.0.0.1', port: first.address().port }]
  } else {
    boot = bootstrap.map(([host, port]) => ({ host, port }))
  }
  while (nodes.length < n) {
    const node = new DHT({ ephemeral: false, firewalled: false, bootstrap: boot, host: '127.0.0.1', port: [0, 0] })
    await node.fullyBootstrapped()
    nodes.push(node)
  }
  return { nodes, boot }
}

async function run (nodes, cmd) {
  const node = nodes[cmd.node || 0]
  switch (cmd.op) {
    case 'mutablePut': {
      const kp = DHT.keyPair(buf(cmd.seed))
      const r = await node.mutablePut(kp, buf(cmd.value), { seq: cmd.seq })
      return { publicKey: hex(kp.publicKey), stored: r.closestNodes.length }
    }
    case 'mutableGet': {
      const r = await node.mutableGet(buf(cmd.publicKey), { seq: cmd.seq || 0, latest: cmd.latest !== false })
      return r ? { seq: r.seq, value: hex(r.value), from: [r.from.host, r.from.port] } : { seq: null }
    }
    case 'immutablePut': {
      const r = await node.immutablePut(buf(cmd.value))
      return { hash: hex(r.hash), stored: r.closestNodes.length }
    }
    case 'immutableGet': {
      const r = await node.immutableGet(buf(cmd.hash))
      return r ? { value: hex(r.value), from: [r.from.host, r.from.port] } : { value: null }
    }
    case 'announce': {
      const kp = DHT.keyPair(buf(cmd.seed))
      const q = node.announce(buf(cmd.topic), kp, [])
      await q.finished()
      return { publicKey: hex(kp.publicKey), stored: q.closestReplies.length }
    }
    case 'lookup': {
      const peers = new Set()
      const from = []
      for await (const data of node.lookup(buf(cmd.topic))) {
        from.push([data.from.host, data.from.port])
        for (const p of data.peers) peers.add(hex(p.publicKey))
      }
      return { peers: [...peers], from }
    }
    case 'findNode': {
      const q = node.findNode(buf(cmd.target))
      await q.finished()
      return { closest: q.closestNodes.map((c) => [c.host, c.port, hex(c.id)]) }
    }
    case 'table': {
      return { nodes: node.table.toArray().map((c) => [c.host, c.port, hex(c.id)]) }
    }
    default:
      throw new Error('unknown op ' + cmd.op)
  }
}

async function main () {
  const rl = readline.createInterface({ input: process.stdin })
  const lines = rl[Symbol.asyncIterator]()
  const first = JSON.parse((await lines.next()).value)
  const { nodes, boot } = await start(first)
  const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')
  out({
    ready: true,
    bootstrap: [boot[0].host, boot[0].port],
    nodes: nodes.map((d) => [d.address().host, d.address().port, hex(d.id)])
  })
  for await (const line of lines) {
    if (!line.trim()) continue
    const cmd = JSON.parse(line)
    if (cmd.op === 'quit') break
    try {
      out(await run(nodes, cmd))
    } catch (err) {
      out({ error: err.message })
    }
  }
  await Promise.all(nodes.map((d) => d.destroy()))
  process.exit(0)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
