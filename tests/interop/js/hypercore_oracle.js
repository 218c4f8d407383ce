'use strict'
// The JS side of tests/interop/test_log_interop.py: real hypercore 11 cores, built from the same
// seeds and blocks as Cairn's logs, answering the same requests and checking Cairn's signatures.
//
// Load it from a harness script (cwd tests/interop) and call one command with the stdin JSON:
//
//   cairn.run((input) => require('./js/hypercore_oracle.js').run(input))
//
// Binary values cross as hex. Each command keeps its cores in one temporary directory under
// os.tmpdir() and removes it when done.
//
// Commands (input.command):
//
// build    { cores: [{ seed, compat, stages: [{ append: [hex], truncate: n|null,
//                                               requests: [hex wire.request] }] }] }
//   Each core is a fresh writable Hypercore (`{ keyPair }`, plus `compat: true` in compat mode).
//   Per stage: append the blocks (one append call, so one signature), or truncate, then answer
//   every request exactly as lib/replicator.js does (_getProof, ProofRequest.fulfill,
//   wireData.send) and encode the `data` message with lib/messages.js wire.data.
//   -> [{ key, discoveryKey, compat, manifest (as sent on the wire: null in compat mode),
//         headerManifest, stages: [{ length, byteLength, fork, treeHash, signature,
//                                    answers: [{ data: hex } | { error: code }] }] }]
//
// verify   { seed, compat, blocks: [hex], checks: [{ treeHash, length, fork, signature }],
//            proofs: [hex wire.data] }
//   Builds the core from the blocks itself, then judges each check twice: with
//   hypercore-crypto's verify over a signable JS builds (lib/caps.js) and with the core's own
//   lib/verifier.js Verifier. Then a fresh read-only replica (key only) is fed the proofs one by
//   one through Core.verify, as the replicator does with a received data message.
//   -> { key, treeHash, signature, length, byteLength, checks: [{ crypto, verifier }],
//        proofs: [{ ok, error, length, block }] }

const Hypercore = require('hypercore')
const crypto = require('hypercore-crypto')
const c = require('compact-encoding')
const b4a = require('b4a')
const fs = require('fs')
const os = require('os')
const path = require('path')
const { MerkleTree } = require('hypercore/lib/merkle-tree')
const messages = require('hypercore/lib/messages')
const caps = require('hypercore/lib/caps')
const multisig = require('hypercore/lib/multisig')

const hex = (buf) => (buf ? b4a.toString(buf, 'hex') : null)
const unhex = (s) => b4a.from(s, 'hex')

async function withTmp(fn) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cairn-oracle-'))
  try {
    return await fn(dir)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

async function writer(dir, name, seed, compat) {
  const opts = { keyPair: crypto.keyPair(unhex(seed)) }
  if (compat) opts.compat = true
  const core = new Hypercore(path.join(dir, name), opts)
  await core.ready()
  return core
}

function head(core) {
  const state = core.core.state
  return {
    length: state.length,
    byteLength: state.byteLength,
    fork: state.fork,
    treeHash: hex(MerkleTree.hash(state)),
    signature: hex(state.signature)
  }
}

// lib/replicator.js Peer._handleRequest / _getProof / _fulfillRequest, minus the network.
async function answer(core, requestBytes) {
  const msg = c.decode(messages.wire.request, unhex(requestBytes))
  const state = core.core.state
  if (msg.fork !== state.fork) return { error: 'NOT_AVAILABLE' }
  const batch = core.core.storage.read(state.fork)
  let block = null
  if (msg.block) {
    if (!core.core.bitfield.get(msg.block.index)) {
      batch.destroy()
      return { error: 'NOT_AVAILABLE' } // the replicator answers noData
    }
    block = batch.getBlock(msg.block.index)
    block.catch(() => {})
  }
  const manifest = msg.manifest && !core.core.compat ? core.core.header.manifest : null
  let proof
  try {
    proof = await MerkleTree.proof(state, batch, msg)
  } catch (err) {
    batch.destroy()
    return { error: err.code || String(err.message) }
  }
  batch.tryFlush()
  let settled
  let value
  try {
    ;[settled, value] = await Promise.all([proof.settle(), block])
  } catch (err) {
    return { error: err.code || String(err.message) }
  }
  if (manifest) settled.manifest = manifest
  if (!value && settled.block) return { error: 'NOT_AVAILABLE' }
  if (value) settled.block.value = value
  const data = c.encode(messages.wire.data, {
    request: msg.id,
    fork: msg.fork,
    block: settled.block,
    hash: settled.hash,
    seek: settled.seek,
    upgrade: settled.upgrade,
    manifest: settled.manifest
  })
  return { data: hex(data) }
}

async function build({ cores }) {
  return withTmp(async (dir) => {
    const out = []
    for (let n = 0; n < cores.length; n++) {
      const spec = cores[n]
      const core = await writer(dir, 'core-' + n, spec.seed, spec.compat)
      const result = {
        key: hex(core.key),
        discoveryKey: hex(core.discoveryKey),
        compat: core.core.compat,
        manifest: core.core.compat ? null : hex(c.encode(messages.manifest, core.core.header.manifest)),
        headerManifest: hex(c.encode(messages.manifest, core.core.header.manifest)),
        stages: []
      }
      for (const stage of spec.stages) {
        if (stage.truncate !== null && stage.truncate !== undefined) {
          await core.truncate(stage.truncate)
        }
        if (stage.append && stage.append.length) await core.append(stage.append.map(unhex))
        const answers = []
        for (const req of stage.requests || []) answers.push(await answer(core, req))
        result.stages.push({ ...head(core), answers })
      }
      await core.close()
      out.push(result)
    }
    return out
  })
}

function batchLike(treeHash, length, fork) {
  return {
    length,
    fork,
    hash: () => treeHash,
    signable: (ns) => caps.treeSignable(ns, treeHash, length, fork),
    signableCompat: (noHeader) => caps.treeSignableCompat(treeHash, length, fork, noHeader)
  }
}

function rawSignature(signature, compat) {
  if (compat) return signature
  try {
    return multisig.inflate(signature).proofs[0].signature
  } catch {
    return b4a.alloc(64)
  }
}

async function verify({ seed, compat, blocks, checks, proofs }) {
  return withTmp(async (dir) => {
    const core = await writer(dir, 'writer', seed, compat)
    await core.append(blocks.map(unhex))
    const publicKey = core.keyPair.publicKey
    const result = { key: hex(core.key), ...head(core), checks: [], proofs: [] }
    for (const check of checks) {
      const treeHash = unhex(check.treeHash)
      const signature = unhex(check.signature)
      const signable = compat
        ? caps.treeSignableCompat(treeHash, check.length, check.fork)
        : caps.treeSignable(core.key, treeHash, check.length, check.fork)
      const viaCrypto = crypto.verify(signable, rawSignature(signature, compat), publicKey)
      let viaVerifier
      try {
        viaVerifier = core.core.verifier.verify(batchLike(treeHash, check.length, check.fork), signature)
      } catch {
        viaVerifier = false
      }
      result.checks.push({ crypto: !!viaCrypto, verifier: !!viaVerifier })
    }
    await core.close()

    const replica = new Hypercore(path.join(dir, 'replica'), core.key)
    await replica.ready()
    for (const bytes of proofs) {
      const proof = c.decode(messages.wire.data, unhex(bytes))
      let ok = false
      let error = null
      try {
        ok = await replica.core.verify(proof, null)
      } catch (err) {
        error = err.code || String(err.message)
      }
      let block = null
      if (ok && proof.block) block = hex(await replica.get(proof.block.index, { wait: false }))
      result.proofs.push({ ok: !!ok, error, length: replica.length, block })
    }
    await replica.close()
    return result
  })
}

const commands = { build, verify }

exports.run = function run(input) {
  const command = commands[input.command]
  if (!command) throw new Error('unknown command ' + input.command)
  return command(input)
}
