// Check 8: ClientHello fuzzing. 100,000 mutated, truncated, re-framed and random hellos go straight into the
// plugin's ClientHello parser (the code that reads untrusted bytes before TLS), and 12,000 more go over real
// sockets to a TLS target in its own process, half of them while a TLS-ALPN-01 challenge is pending (peek on, so
// our parser and the challenge server see them) and half without (Node's TLS sees them). Figures: crashes,
// memory growth of the target, and whether a valid client kept being served during the run.
import assert from 'node:assert/strict'
import type { ChildProcess } from 'node:child_process'
import { connect as netConnect } from 'node:net'
import { after, before, test } from 'node:test'
import { parseClientHello } from '@autotls/fastify-acme/internal'
import { makeTestCertificates } from '@autotls/pebble-harness'
import { captureHello, MUTATIONS, type Mutation, mutate } from './fuzz-corpus.js'
import {
  challengeCertificate,
  figure,
  handshake,
  httpsGet,
  isChallengeCertificate,
  killChild,
  message,
  spawnTs,
  steadyLoad,
} from './helpers.js'

const NAME = 'fuzz.reliability.test'
const PENDING = 'pending-fuzz.reliability.test'
const PARSER_CASES = 100_000
const SOCKET_CASES = 12_000
const CONCURRENCY = 48
const SEED = 20_251_128

let corpus: Buffer[]

before(async () => {
  corpus = await Promise.all([
    captureHello({ servername: NAME, alpn: ['h2', 'http/1.1'] }),
    captureHello({ servername: NAME, alpn: ['http/1.1'], version: 'TLSv1.2' }),
    captureHello({ servername: PENDING, alpn: ['acme-tls/1'], version: 'TLSv1.2' }),
    captureHello({ servername: PENDING, alpn: ['acme-tls/1'], version: 'TLSv1.3' }),
    captureHello({ alpn: ['acme-tls/1'] }),
    captureHello({ servername: NAME }),
  ])
})

test(`check 8a: ${PARSER_CASES} mutated hellos into the parser: never throws, every prefix agrees with the whole`, () => {
  const kinds = { 'need-more': 0, hello: 0, 'not-tls': 0, malformed: 0 } as Record<string, number>
  let prefixChecks = 0
  const started = performance.now()
  for (let i = 0; i < PARSER_CASES; i++) {
    const { bytes } = mutate(corpus, SEED, i)
    const result = parseClientHello(bytes)
    kinds[result.kind] = (kinds[result.kind] ?? 0) + 1
    if (result.kind === 'hello') {
      const { serverName, alpnProtocols } = result.info
      assert.ok(serverName === undefined || (typeof serverName === 'string' && serverName.length > 0))
      assert.ok(alpnProtocols === undefined || alpnProtocols.every((p) => typeof p === 'string' && p.length > 0))
      assert.ok(result.info.helloBytes <= bytes.length)
    }
    // A decision never depends on how much more arrives: every prefix is need-more or the same decision.
    if (i % 50 === 0 && result.kind !== 'need-more') {
      for (let k = 1; k <= 8; k++) {
        const prefix = parseClientHello(bytes.subarray(0, Math.floor((bytes.length * k) / 9)))
        prefixChecks++
        assert.ok(
          prefix.kind === 'need-more' || prefix.kind === result.kind,
          `case ${i}: prefix says ${prefix.kind}, whole says ${result.kind}`,
        )
      }
    }
  }
  const ms = Math.round(performance.now() - started)
  assert.equal(kinds['hello']! + kinds['need-more']! + kinds['not-tls']! + kinds['malformed']!, PARSER_CASES)
  figure(
    `check 8a: ${PARSER_CASES} mutated/truncated/random hellos parsed directly in ${ms} ms: 0 throws; ` +
      `hello ${kinds['hello']}, need-more ${kinds['need-more']}, not-tls ${kinds['not-tls']}, malformed ${kinds['malformed']}; ` +
      `${prefixChecks} prefix-consistency checks passed`,
  )
})

let child: ChildProcess | undefined
after(() => killChild(child))

test(`check 8b: ${SOCKET_CASES} fuzzed hellos over real sockets: 0 crashes, bounded memory, valid clients served`, async () => {
  const certs = await makeTestCertificates({ names: [NAME] })
  child = spawnTs('test/reliability/fixtures/tls-target.ts', [], { NODE_OPTIONS: '--expose-gc' })
  let stderr = ''
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString()
  })
  child.send({
    name: NAME,
    pending: PENDING,
    pair: { key: certs.key, cert: certs.cert },
    challenge: await challengeCertificate(PENDING),
    peekTimeoutMs: 1000,
    handshakeTimeoutMs: 2000,
  })
  const { port } = await message<{ port: number }>(child, (m) => 'port' in m)
  const memory = () =>
    message<{ rss: number; heap: number }>(
      child!,
      (m) => 'rss' in m,
      10_000,
      () => child!.send({ cmd: 'rss' }),
    )
  const challenge = (on: boolean) =>
    message<{ challenge: boolean }>(
      child!,
      (m) => 'challenge' in m,
      10_000,
      () => child!.send({ cmd: 'challenge', on }),
    )

  const load = steadyLoad(() => httpsGet(port, NAME, certs.caCert), 25)
  const outcome = { serverClosed: 0, resetByServer: 0, leftOpen: 0 }
  const perKind = new Map<Mutation, number>()
  const fire = (bytes: Buffer): Promise<void> =>
    new Promise((resolve) => {
      const socket = netConnect(port, '127.0.0.1')
      const timer = setTimeout(() => {
        outcome.leftOpen++
        socket.destroy()
      }, 5000)
      socket.on('connect', () => {
        socket.write(bytes)
        socket.end()
      })
      socket.on('error', () => {
        outcome.resetByServer++
      })
      socket.on('close', () => {
        clearTimeout(timer)
        outcome.serverClosed++
        resolve()
      })
      socket.resume()
    })
  const runBatch = async (from: number, to: number) => {
    let next = from
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < to) {
          const { kind, bytes } = mutate(corpus, SEED + 1, next++)
          perKind.set(kind, (perKind.get(kind) ?? 0) + 1)
          await fire(bytes)
        }
      }),
    )
  }

  // Warm up (JIT, TLS contexts, pools), then take the baseline.
  await runBatch(0, 500)
  const start = await memory()
  const started = Date.now()
  await challenge(true)
  await runBatch(500, SOCKET_CASES / 2)
  const stats = (
    await message<{ stats: Record<string, number> }>(
      child,
      (m) => 'stats' in m,
      10_000,
      () => child!.send({ cmd: 'stats' }),
    )
  ).stats
  // A validator is still answered after the fuzzing, while the challenge is pending.
  const validator = await handshake({ port, servername: PENDING, alpn: ['acme-tls/1'], version: 'TLSv1.2' })
  assert.ok(validator.ok && isChallengeCertificate(validator.cert), 'validator not answered after fuzzing')
  await challenge(false)
  await runBatch(SOCKET_CASES / 2, SOCKET_CASES)
  const seconds = (Date.now() - started) / 1000
  const end = await memory()
  const served = await load.stop()

  assert.equal(child.exitCode, null, `the target died: ${stderr}`)
  assert.equal(child.signalCode, null)
  assert.doesNotMatch(stderr, /uncaught|unhandled|FATAL|Error:/i, stderr)
  assert.equal(served.failed, 0, `valid clients failed during fuzzing: ${served.errors.join('; ')}`)
  assert.equal(outcome.leftOpen, 0, 'the server left fuzzed connections open past 5 s')
  // RSS moves with the allocator (it went up and down by ~20 MB between identical batches in longer runs); the
  // heap after a GC is what a leak would grow.
  const growth = end.rss - start.rss
  const heapGrowth = end.heap - start.heap
  assert.ok(heapGrowth < 16, `heap grew by ${heapGrowth.toFixed(1)} MB`)
  assert.ok(growth < 96, `RSS grew by ${growth.toFixed(1)} MB`)
  figure(
    `check 8b: ${SOCKET_CASES} fuzzed hellos over real sockets (${CONCURRENCY} concurrent, ${Math.round(SOCKET_CASES / seconds)}/s; ` +
      `${SOCKET_CASES / 2} with the peek on: peeked ${stats['peeked']}, rejected ${stats['rejected']}, diverted ${stats['diverted']}, passed to TLS ${(stats['peeked'] ?? 0) - (stats['rejected'] ?? 0) - (stats['diverted'] ?? 0) - (stats['closedEarly'] ?? 0) - (stats['timeouts'] ?? 0)}): ` +
      `0 crashes, ${outcome.serverClosed} closed by the server, 0 left open; target RSS ${start.rss.toFixed(1)} -> ${end.rss.toFixed(1)} MB ` +
      `(${growth >= 0 ? '+' : ''}${growth.toFixed(1)} MB), heap after GC ${start.heap.toFixed(1)} -> ${end.heap.toFixed(1)} MB; valid clients ${served.ok}/${served.ok + served.failed} ok; ` +
      `mutations: ${MUTATIONS.map((k) => `${k} ${perKind.get(k) ?? 0}`).join(', ')}`,
  )
})
