// JS hypercore as a gateway that edges dial (issue 19): it listens, and reads from whoever
// connects (the dialling side serves; replication is symmetric).
//   node js/hypercore_listen_reader.js <keyHex> <start> <end>
//     listen on 127.0.0.1:0, print {"port"}; on the first connection replicate as the Noise
//     responder, download blocks [start, end) of that log, print {"length", "blocks"} (hex)
'use strict'

const Hypercore = require('hypercore')
const net = require('net')
const os = require('os')
const path = require('path')
const fs = require('fs')

async function main ([keyHex, startArg, endArg]) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cairn-hc-'))
  const core = new Hypercore(dir, Buffer.from(keyHex, 'hex'))
  await core.ready()
  const connected = new Promise((resolve) => {
    const server = net.createServer((socket) => {
      const stream = core.replicate(false)
      socket.pipe(stream).pipe(socket)
      socket.on('error', () => {})
      stream.on('error', () => {})
      server.close()
      resolve(socket)
    })
    server.listen(0, '127.0.0.1', () => {
      process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n')
    })
  })
  const socket = await connected
  await core.update({ wait: true })
  const blocks = []
  for (let i = Number(startArg); i < Number(endArg); i++) {
    blocks.push((await core.get(i, { timeout: 10000 })).toString('hex'))
  }
  process.stdout.write(JSON.stringify({ length: core.length, blocks }) + '\n')
  socket.destroy()
  await core.close()
  fs.rmSync(dir, { recursive: true, force: true })
}

main(process.argv.slice(2)).catch((err) => {
  console.error(err)
  process.exit(1)
})
