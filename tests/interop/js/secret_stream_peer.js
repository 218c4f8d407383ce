// A JS @hyperswarm/secret-stream peer for the secret-stream / Protomux interop tests, over TCP.
//   node tests/interop/js/secret_stream_peer.js   (run with cwd tests/interop)
// First line in: { "role": "server" | "client", "port": P (client only), "seed": hex32,
//                  "scenario": "echo" | "protomux" }
// Lines out, one JSON object each:
//   { "listening": port }                        (server, before anything else)
//   { "handshake": { hash, publicKey, remotePublicKey, isInitiator } }
//   echo:     { "data": hex } for every message ({ "size": n } over 256 bytes), { "empty": true }
//             for an empty one
//             (it answers "echo:" + data; on "bye" it ends the stream)
//   protomux: { "opened": hex }, { "message": hex }, { "closed": true }
//   { "error": message } if the stream failed, and { "done": true } when the stream closed.
'use strict'

const net = require('net')
const readline = require('readline')
const SecretStream = require('@hyperswarm/secret-stream')
const Protomux = require('protomux')
const c = require('compact-encoding')

const hex = (b) => Buffer.from(b).toString('hex')
const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

function echo (stream) {
  stream.on('data', (data) => {
    if (data.byteLength === 0) {
      say({ empty: true })
      return
    }
    say(data.byteLength <= 256 ? { data: hex(data) } : { size: data.byteLength })
    if (data.toString() === 'bye') {
      stream.end()
      return
    }
    stream.write(Buffer.concat([Buffer.from('echo:'), data]))
  })
  // sent before Cairn's header can have arrived: Cairn must take data as soon as it has the keys
  stream.sendKeepAlive()
  stream.write(Buffer.from('hello from js'))
  stream.write(Buffer.alloc(200000, 7))
}

function protomux (stream) {
  const mux = new Protomux(stream)
  const channel = mux.createChannel({
    protocol: 'cairn/interop',
    id: Buffer.from('channel-id'),
    handshake: c.raw,
    onopen (handshake) {
      say({ opened: hex(handshake) })
    },
    onclose () {
      say({ closed: true })
    },
    messages: [
      {
        encoding: c.raw,
        onmessage (m) {
          say({ message: hex(m) })
          if (m.toString() === 'bye') channel.close()
        }
      }
    ]
  })
  const message = channel.messages[0]
  channel.open(Buffer.from('js handshake'))
  // one plain message, then two corked into a batch, all before Cairn opens its side
  message.send(Buffer.from('hello from js'))
  channel.cork()
  message.send(Buffer.from('batch one'))
  message.send(Buffer.from('batch two'))
  channel.uncork()
}

function run (stream, scenario) {
  stream.on('error', (err) => say({ error: String(err && err.message) }))
  stream.on('close', () => {
    say({ done: true })
    setImmediate(() => process.exit(0))
  })
  stream.on('connect', () => {
    say({
      handshake: {
        hash: hex(stream.handshakeHash),
        publicKey: hex(stream.publicKey),
        remotePublicKey: hex(stream.remotePublicKey),
        isInitiator: stream.isInitiator
      }
    })
    if (scenario === 'echo') echo(stream)
    else protomux(stream)
  })
}

const rl = readline.createInterface({ input: process.stdin })
rl.once('line', (line) => {
  const { role, port, seed, scenario } = JSON.parse(line)
  const keyPair = SecretStream.keyPair(Buffer.from(seed, 'hex'))
  if (role === 'server') {
    const server = net.createServer((socket) => {
      server.close()
      run(new SecretStream(false, socket, { keyPair }), scenario)
    })
    server.listen(0, '127.0.0.1', () => say({ listening: server.address().port }))
  } else {
    const socket = net.connect(port, '127.0.0.1')
    run(new SecretStream(true, socket, { keyPair }), scenario)
  }
})
// the test closing our stdin means it is done with us
rl.on('close', () => setTimeout(() => process.exit(0), 2000).unref())
