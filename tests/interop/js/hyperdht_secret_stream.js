// secret-stream keyed by a hyperdht IK (no second Noise), as hyperdht runs it on UDX: JS is the
// server end. In: the IK result (hash, tx, rx, publicKey, remotePublicKey as hex) and the bytes
// Cairn's end wrote (its header frame and a message). Out: what JS wrote (its header frame and
// a reply) and the messages it read.
const NoiseSecretStream = require('@hyperswarm/secret-stream')
const { Duplex } = require('streamx')
const b = (h) => Buffer.from(h, 'hex')
cairn.run(async (inp) => {
  const written = []
  const raw = new Duplex({ write (data, cb) { written.push(Buffer.from(data)); cb() } })
  const s = new NoiseSecretStream(false, null, { autoStart: false })
  const got = []
  s.on('data', (d) => got.push(d.toString()))
  const errors = []
  s.on('error', (e) => errors.push(String(e)))
  s.start(raw, { handshake: { hash: b(inp.hash), tx: b(inp.tx), rx: b(inp.rx), publicKey: b(inp.publicKey), remotePublicKey: b(inp.remotePublicKey) } })
  await new Promise((resolve) => s.once('open', resolve))
  raw.push(b(inp.bytes))
  s.write(Buffer.from('hello from js'))
  await new Promise((resolve) => setTimeout(resolve, 100))
  s.destroy()
  return { bytes: Buffer.concat(written).toString('hex'), got, errors }
})
