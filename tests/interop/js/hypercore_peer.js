// JS hypercore over TCP for the replication interop tests (run with cwd tests/interop).
//   node js/hypercore_peer.js read  <host> <port> <keyHex> <start> <end>
//     connect to a Cairn server, download blocks [start, end), print them (hex) as JSON
//     (with CAIRN_TAIL set, first print {"following": length}, then wait for the blocks)
//   node js/hypercore_peer.js write <seedHex> <blocks> [<extra>]
//     make a log from the seed with <blocks> blocks "block-i", serve it on 127.0.0.1:0,
//     print {"port", "key"}; then on each stdin line, append <extra> more blocks and print
//     {"length"} (with CAIRN_BLOCKS_FILE set, the first blocks are that file's lines, in hex)
'use strict'

const Hypercore = require('hypercore')
const net = require('net')
const os = require('os')
const path = require('path')
const fs = require('fs')
const readline = require('readline')

function tmp () {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'cairn-hc-'))
}

async function read ([host, port, keyHex, startArg, endArg]) {
  const dir = tmp()
  const core = new Hypercore(dir, Buffer.from(keyHex, 'hex'))
  await core.ready()
  const socket = net.connect(Number(port), host)
  const stream = core.replicate(true)
  socket.pipe(stream).pipe(socket)
  const start = Number(startArg)
  const end = Number(endArg)
  await core.update({ wait: true })
  if (process.env.CAIRN_TAIL) {
    // tell the test we follow from here, then wait for blocks that do not exist yet
    process.stdout.write(JSON.stringify({ following: core.length }) + '\n')
  }
  const blocks = []
  for (let i = start; i < end; i++) blocks.push((await core.get(i, { timeout: 10000 })).toString('hex'))
  const out = { length: core.length, blocks, contiguous: core.contiguousLength }
  process.stdout.write(JSON.stringify(out) + '\n')
  socket.destroy()
  await core.close()
  fs.rmSync(dir, { recursive: true, force: true })
}

async function write ([seedHex, nArg, extraArg]) {
  const dir = tmp()
  const crypto = require('hypercore-crypto')
  const keyPair = crypto.keyPair(Buffer.from(seedHex, 'hex'))
  const core = new Hypercore(dir, { keyPair })
  await core.ready()
  const batch = []
  if (process.env.CAIRN_BLOCKS_FILE) {
    // the blocks to append: one hex string a line (frames made by the test)
    for (const line of fs.readFileSync(process.env.CAIRN_BLOCKS_FILE, 'utf8').split('\n')) {
      if (line.trim()) batch.push(Buffer.from(line.trim(), 'hex'))
    }
  } else {
    const n = Number(nArg)
    for (let i = 0; i < n; i++) batch.push(Buffer.from('block-' + i))
  }
  if (batch.length) await core.append(batch)
  const server = net.createServer((socket) => {
    const stream = core.replicate(false)
    socket.pipe(stream).pipe(socket)
    socket.on('error', () => {})
    stream.on('error', () => {})
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  process.stdout.write(JSON.stringify({ port: server.address().port, key: core.key.toString('hex') }) + '\n')
  const rl = readline.createInterface({ input: process.stdin })
  for await (const line of rl) {
    if (line.trim() === 'quit') break
    const more = []
    const extra = Number(extraArg || 10)
    for (let i = 0; i < extra; i++) more.push(Buffer.from('block-' + (core.length + i)))
    await core.append(more)
    process.stdout.write(JSON.stringify({ length: core.length }) + '\n')
  }
  server.close()
  await core.close()
  fs.rmSync(dir, { recursive: true, force: true })
  process.exit(0)
}

const [mode, ...args] = process.argv.slice(2)
const run = mode === 'read' ? read : write
run(args).catch((err) => {
  console.error(err)
  process.exit(1)
})
