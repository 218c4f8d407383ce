// The JS anchor of bench/dht.py: N hyperdht (dht-rpc) nodes in one process on 127.0.0.1, then
// OPS operations of each kind from random nodes, before and after killing 30% of the nodes.
//   node bench/js/dht_anchor.js <nodes> <ops> <seed>
// Prints one JSON object: per measure { median_ms, p99_ms, msgs, ok, n } plus rss_mib.
'use strict'

const path = require('path')
const interop = path.join(__dirname, '..', '..', 'tests', 'interop', 'node_modules')
const DHT = require(path.join(interop, 'hyperdht'))
const crypto = require(path.join(interop, 'hypercore-crypto'))

function rng (seed) {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function stats (xs) {
  const s = [...xs].sort((a, b) => a - b)
  const at = (q) => s[Math.min(s.length - 1, Math.floor(q * s.length))]
  return { median_ms: at(0.5), p99_ms: at(0.99), n: s.length }
}

function totalRequests (nodes) {
  let t = 0
  for (const n of nodes) if (!n.destroyed) t += n.io.stats.requests.total
  return t
}

async function measure (name, nodes, ops, rand, fn, parallel = 1) {
  // `parallel` operations at a time (the churn measures run 10 at once, as the anchors did)
  const times = []
  let ok = 0
  const before = totalRequests(nodes)
  for (let i = 0; i < ops; i += parallel) {
    const wave = []
    for (let j = i; j < Math.min(ops, i + parallel); j++) {
      const alive = nodes.filter((n) => !n.destroyed)
      const node = alive[Math.floor(rand() * alive.length)]
      wave.push((async () => {
        const t = process.hrtime.bigint()
        let good = false
        try {
          good = await fn(node, j)
        } catch {
          good = false
        }
        times.push(Number(process.hrtime.bigint() - t) / 1e6)
        if (good) ok++
      })())
    }
    await Promise.all(wave)
  }
  const msgs = (totalRequests(nodes) - before) / ops
  return { name, ...stats(times), msgs, ok }
}

function xorCmp (target) {
  return (a, b) => {
    for (let i = 0; i < 32; i++) {
      const x = a[i] ^ target[i]
      const y = b[i] ^ target[i]
      if (x !== y) return x - y
    }
    return 0
  }
}

async function main () {
  const [nArg, opsArg, seedArg] = process.argv.slice(2)
  const N = Number(nArg || 100)
  const OPS = Number(opsArg || 200)
  const rand = rng(Number(seedArg || 1))
  const nodes = []
  const first = new DHT({ ephemeral: false, firewalled: false, bootstrap: [], host: '127.0.0.1', port: 0 })
  await first.fullyBootstrapped()
  const bootstrap = [{ host: '127.0.0.1', port: first.address().port }]
  nodes.push(first)
  while (nodes.length < N) {
    // bootstrap in batches: each node's own bootstrap mostly waits on timers, not CPU
    const batch = []
    for (let i = 0; i < 25 && nodes.length + batch.length < N; i++) {
      batch.push(new DHT({ ephemeral: false, firewalled: false, bootstrap, host: '127.0.0.1' }))
    }
    await Promise.all(batch.map((n) => n.fullyBootstrapped()))
    nodes.push(...batch)
  }
  // let the routing tables settle the way a long-running network's would
  for (const n of nodes) n.refresh()
  await new Promise((resolve) => setTimeout(resolve, 2000))
  const out = { nodes: N, ops: OPS, measures: [] }

  const keys = []
  for (let i = 0; i < OPS; i++) keys.push(DHT.keyPair(crypto.randomBytes(32)))
  const value = Buffer.alloc(64, 7)
  const topics = keys.map((k) => crypto.data(k.publicKey))

  const findNode = (churned) => async (node) => {
    const target = crypto.randomBytes(32)
    const q = node.findNode(target)
    await q.finished()
    const found = q.closestNodes.map((n) => n.id).filter(Boolean)
    const all = nodes.filter((n) => !n.destroyed && n.id).map((n) => n.id).sort(xorCmp(target))
    const truth = new Set(all.slice(0, 20).map((b) => b.toString('hex')))
    let hit = 0
    for (const id of found.slice(0, 20)) if (truth.has(id.toString('hex'))) hit++
    recall.push(hit / Math.min(20, truth.size))
    return found.length > 0
  }
  let recall = []
  out.measures.push({ ...(await measure('find_node', nodes, OPS, rand, findNode(false))), recall: avg(recall) })
  out.measures.push(await measure('mutable_put', nodes, OPS, rand, async (node, i) => {
    const r = await node.mutablePut(keys[i], value, { seq: 1 })
    return r.closestNodes.length > 0
  }))
  out.measures.push(await measure('mutable_get_latest', nodes, OPS, rand, async (node, i) => {
    const r = await node.mutableGet(keys[i].publicKey, { latest: true })
    return !!r && r.seq === 1
  }))
  out.measures.push(await measure('mutable_get', nodes, OPS, rand, async (node, i) => {
    const r = await node.mutableGet(keys[i].publicKey, { latest: false, seq: 1 })
    return !!r && r.seq === 1
  }))
  out.measures.push(await measure('announce', nodes, OPS, rand, async (node, i) => {
    await node.announce(topics[i], keys[i], []).finished()
    return true
  }))
  out.measures.push(await measure('lookup', nodes, OPS, rand, async (node, i) => {
    for await (const data of node.lookup(topics[i])) {
      if (data.peers.some((p) => p.publicKey.equals(keys[i].publicKey))) return true
    }
    return false
  }))
  out.rss_mib = process.memoryUsage().rss / 1048576

  // kill 30% of the nodes without warning (never the first: it is the bootstrap node)
  const victims = nodes.slice(1).sort(() => rand() - 0.5).slice(0, Math.floor(0.3 * N))
  for (const v of victims) {
    v.io.serverSocket.close()
    v.io.clientSocket.close()
    v.destroyed = true
  }
  recall = []
  out.measures.push({ ...(await measure('find_node_churn', nodes, OPS, rand, findNode(true), 10)), recall: avg(recall) })
  out.measures.push(await measure('mutable_get_churn', nodes, OPS, rand, async (node, i) => {
    const r = await node.mutableGet(keys[i].publicKey, { latest: false, seq: 1 })
    return !!r && r.seq === 1
  }, 10))
  process.stdout.write(JSON.stringify(out) + '\n')
  process.exit(0)
}

function avg (xs) {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
