// IK vectors: hyperdht's own NoiseWrap (noise-handshake IK + the Noise payload codec) with fixed
// static and ephemeral seeds; tests/interop/test_hyperdht_interop.py checks Cairn makes the same bytes.
const NoiseWrap = require('hyperdht/lib/noise-wrap.js')
const curve = require('noise-curve-ed')
const DHT = require('hyperdht')
const b = (h) => Buffer.from(h, 'hex')
cairn.run(async (inp) => {
  const ck = DHT.keyPair(b(inp.client)), sk = DHT.keyPair(b(inp.server))
  const client = new NoiseWrap(ck, sk.publicKey)
  const server = new NoiseWrap(sk, null)
  client.handshake.e = curve.generateKeyPair(b(inp.ce))
  server.handshake.e = curve.generateKeyPair(b(inp.se))
  const m1 = client.send({ error: 0, firewall: 1, holepunch: null, addresses4: [{host: '1.2.3.4', port: 5}], addresses6: [], udx: { reusableSocket: false, id: 7, seq: 0 }, secretStream: {}, relayThrough: null }); const m1h = m1.toString("hex")
  const p1 = server.recv(m1)
  const m2 = server.send({ error: 0, firewall: 0, holepunch: { id: 3, relays: [{ relayAddress: {host: '10.0.0.1', port: 9}, peerAddress: {host: '9.9.9.9', port: 1000}}] }, addresses4: [], addresses6: [], udx: { reusableSocket: true, id: 99, seq: 0 }, secretStream: {}, relayThrough: null, relayAddresses: [{host: '10.0.0.2', port: 10}] }); const m2h = m2.toString("hex")
  client.recv(m2)
  const cf = client.final(), sf = server.final()
  return { m1: m1h, m2: m2h, hash: cf.hash.toString('hex'), tx: cf.tx.toString('hex'), rx: cf.rx.toString('hex'), hp: cf.holepunchSecret.toString('hex'), shp: sf.holepunchSecret.toString('hex') }
})
