// Owns the tests of src/client-hello.ts: the ClientHello parser against real hellos captured from Node's own TLS
// client (TLS 1.2 and 1.3, re-framed, truncated, fuzzed) and hand-built broken ones, and peekClientHello on real
// sockets, including handing a peeked socket to a real tls.Server and completing the handshake.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Duplex } from 'node:stream'
import { after, before, test } from 'node:test'
import tls from 'node:tls'
import { type PeekResult, parseClientHello, peekClientHello } from '../src/client-hello.js'

const NAME = 'a.example.test'
const KINDS = new Set(['need-more', 'hello', 'not-tls', 'malformed'])

// ---------------------------------------------------------------------------------------------------------------
// Helpers

/** mulberry32: a tiny seeded PRNG so the fuzz cases are the same on every run. */
function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function expectHello(result: PeekResult | { kind: 'timeout' } | { kind: 'closed' }) {
  assert.equal(result.kind, 'hello', `expected a hello, got ${JSON.stringify(result)}`)
  if (result.kind !== 'hello') throw new Error('unreachable')
  return result.info
}

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port))
  })
}

function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()))
}

/**
 * Captures the first TLS record a real Node TLS client sends. Completeness is judged from the record header alone,
 * not from the parser under test, so a parser bug cannot shorten the capture.
 */
async function captureHello(opts: tls.ConnectionOptions): Promise<Buffer> {
  const server = net.createServer()
  const captured = new Promise<Buffer>((resolve, reject) => {
    server.once('connection', (socket) => {
      const chunks: Buffer[] = []
      socket.on('error', () => {})
      socket.on('data', (chunk: Buffer) => {
        chunks.push(chunk)
        const all = Buffer.concat(chunks)
        if (all.length >= 5 && all.length >= 5 + all.readUInt16BE(3)) {
          resolve(all)
          socket.destroy()
        }
      })
      socket.on('close', () => reject(new Error('connection closed before a whole record arrived')))
    })
  })
  const port = await listen(server)
  const client = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...opts })
  client.on('error', () => {})
  try {
    return await captured
  } finally {
    client.destroy()
    await closeServer(server)
  }
}

/** The handshake bytes carried by a sequence of records (an independent, minimal record walk for the tests). */
function handshakeOf(records: Buffer): Buffer {
  const parts: Buffer[] = []
  let pos = 0
  while (pos + 5 <= records.length) {
    const length = records.readUInt16BE(pos + 3)
    parts.push(records.subarray(pos + 5, pos + 5 + length))
    pos += 5 + length
  }
  return Buffer.concat(parts)
}

function record(fragment: Buffer, type = 0x16): Buffer {
  const header = Buffer.from([type, 3, 1, 0, 0])
  header.writeUInt16BE(fragment.length, 3)
  return Buffer.concat([header, fragment])
}

/** Re-frames a handshake message into records whose fragments have the given sizes (the last size repeats). */
function reframe(handshake: Buffer, sizes: number[]): Buffer {
  const out: Buffer[] = []
  let pos = 0
  let i = 0
  while (pos < handshake.length) {
    const size = sizes[Math.min(i, sizes.length - 1)]!
    out.push(record(handshake.subarray(pos, pos + size)))
    pos += size
    i += 1
  }
  return Buffer.concat(out)
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2)
  b.writeUInt16BE(n)
  return b
}

function ext(type: number, data: Buffer): Buffer {
  return Buffer.concat([u16(type), u16(data.length), data])
}

function sniExt(...entries: Array<[number, string]>): Buffer {
  const list = Buffer.concat(
    entries.map(([nameType, name]) => Buffer.concat([Buffer.from([nameType]), u16(name.length), Buffer.from(name)])),
  )
  return ext(0, Buffer.concat([u16(list.length), list]))
}

function alpnExt(...names: string[]): Buffer {
  const list = Buffer.concat(names.map((n) => Buffer.concat([Buffer.from([n.length]), Buffer.from(n)])))
  return ext(16, Buffer.concat([u16(list.length), list]))
}

/** A hand-built ClientHello handshake message; `extensions: null` leaves the extensions block out entirely. */
function helloMessage(extensions: Buffer[] | null, type = 1): Buffer {
  const parts = [u16(0x0303), Buffer.alloc(32, 7), Buffer.from([0]), u16(2), u16(0x1301), Buffer.from([1, 0])]
  if (extensions !== null) {
    const block = Buffer.concat(extensions)
    parts.push(u16(block.length), block)
  }
  const body = Buffer.concat(parts)
  const header = Buffer.from([type, 0, 0, 0])
  header.writeUIntBE(body.length, 1, 3)
  return Buffer.concat([header, body])
}

// ---------------------------------------------------------------------------------------------------------------
// Real hellos and a certificate, captured/generated once

const hellos: Record<string, Buffer> = {}
let tmp = ''
let key = ''
let cert = ''

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'client-hello-test-'))
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-subj',
      `/CN=${NAME}`,
      '-addext',
      `subjectAltName=DNS:${NAME}`,
      '-days',
      '1',
      '-keyout',
      join(tmp, 'key.pem'),
      '-out',
      join(tmp, 'cert.pem'),
    ],
    { stdio: 'ignore' },
  )
  key = readFileSync(join(tmp, 'key.pem'), 'utf8')
  cert = readFileSync(join(tmp, 'cert.pem'), 'utf8')

  for (const version of ['TLSv1.2', 'TLSv1.3'] as const) {
    const v = { minVersion: version, maxVersion: version }
    hellos[`${version} acme`] = await captureHello({ servername: NAME, ALPNProtocols: ['acme-tls/1'], ...v })
    hellos[`${version} h2`] = await captureHello({ servername: NAME, ALPNProtocols: ['h2', 'http/1.1'], ...v })
    // Connecting to an IP with an empty servername sends no server_name extension at all.
    hellos[`${version} no-sni`] = await captureHello({ servername: '', ALPNProtocols: ['acme-tls/1'], ...v })
    hellos[`${version} no-alpn`] = await captureHello({ servername: NAME, ...v })
  }
  hellos['default'] = await captureHello({ servername: NAME, ALPNProtocols: ['acme-tls/1'] })
})

after(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true })
})

function realHello(name: string): Buffer {
  const hello = hellos[name]
  assert.ok(hello, `no captured hello named ${name}`)
  return hello
}

// ---------------------------------------------------------------------------------------------------------------
// Parser: real hellos

test('real Node ClientHellos (TLS 1.2 and 1.3): server name and ALPN list exactly as sent', () => {
  for (const version of ['TLSv1.2', 'TLSv1.3']) {
    const tls13 = version === 'TLSv1.3'
    const cases: Array<[string, string | undefined, string[] | undefined]> = [
      ['acme', NAME, ['acme-tls/1']],
      ['h2', NAME, ['h2', 'http/1.1']],
      ['no-sni', undefined, ['acme-tls/1']],
      ['no-alpn', NAME, undefined],
    ]
    for (const [variant, serverName, alpn] of cases) {
      const bytes = realHello(`${version} ${variant}`)
      // Node sends the whole hello as one record; the multi-record path is exercised by re-framing below.
      assert.equal(bytes.length, 5 + bytes.readUInt16BE(3), `${version} ${variant}: one record`)
      const info = expectHello(parseClientHello(bytes))
      assert.equal(info.serverName, serverName, `${version} ${variant}`)
      assert.deepEqual(info.alpnProtocols, alpn, `${version} ${variant}`)
      assert.equal(info.legacyVersion, 0x0303)
      assert.equal(info.helloBytes, bytes.length)
      if (tls13) assert.deepEqual(info.supportedVersions, [0x0304])
      else assert.equal(info.supportedVersions, undefined)
    }
  }
  const info = expectHello(parseClientHello(realHello('default')))
  assert.deepEqual(info.supportedVersions, [0x0304, 0x0303])
})

test('a hello followed by more records (e.g. ChangeCipherSpec) parses; the trailing bytes are not examined', () => {
  const bytes = realHello('TLSv1.3 acme')
  const trailing = Buffer.concat([bytes, record(Buffer.from([1]), 0x14), Buffer.from('junk')])
  const info = expectHello(parseClientHello(trailing))
  assert.equal(info.serverName, NAME)
  assert.equal(info.helloBytes, bytes.length)
})

test('a real hello re-framed into 2 and into many records parses identically; every prefix is need-more', () => {
  for (const name of ['TLSv1.2 acme', 'TLSv1.3 h2', 'default']) {
    const original = realHello(name)
    const expected = expectHello(parseClientHello(original))
    const handshake = handshakeOf(original)
    const framings = {
      two: reframe(handshake, [Math.floor(handshake.length / 2)]),
      // Splits the 4-byte handshake header itself across records.
      headerSplit: reframe(handshake, [1, 2, 1, 100]),
      tiny: reframe(handshake, [3]),
      single: reframe(handshake, [1]),
      mixed: reframe(handshake, [5, 1, 17, 2, 64, 7, 1000]),
    }
    for (const [framing, bytes] of Object.entries(framings)) {
      const info = expectHello(parseClientHello(bytes))
      assert.deepEqual({ ...info, helloBytes: 0 }, { ...expected, helloBytes: 0 }, `${name} ${framing}`)
      assert.equal(info.helloBytes, bytes.length, `${name} ${framing}`)
      // Fed one byte at a time: the parser is pure, so that is every prefix of the stream.
      for (let n = 0; n < bytes.length; n++) {
        const result = parseClientHello(bytes.subarray(0, n))
        assert.equal(result.kind, 'need-more', `${name} ${framing}: prefix of ${n}/${bytes.length}`)
      }
    }
  }
})

test('every truncation of every real hello is need-more, never a hello', () => {
  for (const [name, bytes] of Object.entries(hellos)) {
    for (let n = 0; n < bytes.length; n++) {
      assert.equal(parseClientHello(bytes.subarray(0, n)).kind, 'need-more', `${name}: prefix of ${n}`)
    }
  }
})

// ---------------------------------------------------------------------------------------------------------------
// Parser: fuzzing

test('10,000 random buffers: never throws, always one of the four kinds', () => {
  const random = prng(0x5eed)
  const counts: Record<string, number> = {}
  for (let i = 0; i < 10_000; i++) {
    const length = Math.floor(random() * 600)
    const bytes = Buffer.alloc(length)
    for (let j = 0; j < length; j++) bytes[j] = Math.floor(random() * 256)
    // Two thirds of the cases start with a plausible record and handshake header, so the fuzz reaches the body
    // parser instead of stopping at the first byte.
    const shape = i % 3
    if (shape >= 1 && length >= 5) {
      bytes[0] = 0x16
      bytes[1] = 3
      bytes.writeUInt16BE(Math.min(length - 5, 16640), 3)
    }
    if (shape === 2 && length >= 9) {
      bytes[5] = 1
      bytes.writeUIntBE(Math.max(0, length - 9), 6, 3)
    }
    let result: PeekResult | undefined
    assert.doesNotThrow(() => {
      result = parseClientHello(bytes)
    })
    assert.ok(result && KINDS.has(result.kind), `case ${i}: ${JSON.stringify(result)}`)
    counts[result.kind] = (counts[result.kind] ?? 0) + 1
  }
  // The shapes above must actually reach past the first byte, or the fuzz proves little.
  assert.ok((counts['malformed'] ?? 0) > 1000, JSON.stringify(counts))
  assert.ok((counts['not-tls'] ?? 0) > 1000, JSON.stringify(counts))
})

test('10,000 bit-flipped real hellos: never throws; flips inside the random field change nothing', () => {
  const random = prng(42)
  const sources = [
    realHello('TLSv1.2 acme'),
    realHello('TLSv1.3 h2'),
    realHello('default'),
    reframe(handshakeOf(realHello('TLSv1.3 acme')), [7, 50]),
  ]
  const counts: Record<string, number> = {}
  for (let i = 0; i < 10_000; i++) {
    const source = sources[i % sources.length]!
    const bytes = Buffer.from(source)
    const flips = 1 + Math.floor(random() * 3)
    let onlyRandomField = i % sources.length !== 3
    for (let f = 0; f < flips; f++) {
      const at = Math.floor(random() * bytes.length)
      bytes[at]! ^= 1 << Math.floor(random() * 8)
      // Record header (5) + handshake header (4) + legacy_version (2), then 32 bytes of random.
      if (at < 11 || at >= 43) onlyRandomField = false
    }
    let result: PeekResult | undefined
    assert.doesNotThrow(() => {
      result = parseClientHello(bytes)
    })
    assert.ok(result && KINDS.has(result.kind), `case ${i}: ${JSON.stringify(result)}`)
    counts[result.kind] = (counts[result.kind] ?? 0) + 1
    if (onlyRandomField) assert.deepEqual(result, parseClientHello(source), `case ${i}`)
  }
  assert.ok((counts['hello'] ?? 0) > 1000, JSON.stringify(counts))
  assert.ok((counts['malformed'] ?? 0) > 1000, JSON.stringify(counts))
})

// ---------------------------------------------------------------------------------------------------------------
// Parser: specific inputs

test('not TLS: plain HTTP and an SSLv2-style hello are decided on the first byte', () => {
  const http = parseClientHello(Buffer.from('GET / HTTP/1.1\r\n'))
  assert.equal(http.kind, 'not-tls')
  assert.equal(parseClientHello(Buffer.from('G')).kind, 'not-tls')
  assert.equal(parseClientHello(Buffer.from([0x80, 0x2e, 0x01, 0x03, 0x01])).kind, 'not-tls')
  assert.equal(parseClientHello(Buffer.alloc(0)).kind, 'need-more')
  assert.equal(parseClientHello(Buffer.from([0x16])).kind, 'need-more')
  assert.equal(parseClientHello(Buffer.from([0x16, 0x02])).kind, 'malformed')
})

test('oversized: a declared 1 MB handshake is malformed as soon as its header is in; the cap counts every byte', () => {
  const header = Buffer.from([0x16, 3, 1, 0x40, 0x00, 1, 0x10, 0x00, 0x00])
  for (let n = 0; n < header.length; n++) assert.equal(parseClientHello(header.subarray(0, n)).kind, 'need-more')
  const result = parseClientHello(header)
  assert.equal(result.kind, 'malformed')
  assert.match(result.kind === 'malformed' ? result.reason : '', /declared ClientHello length/)

  // The cap includes record headers: a real hello framed one byte per record needs six times its size.
  const tiny = reframe(handshakeOf(realHello('TLSv1.3 acme')), [1])
  assert.equal(parseClientHello(tiny, tiny.length).kind, 'hello')
  const capped = parseClientHello(tiny, tiny.length - 1)
  assert.equal(capped.kind, 'malformed')
  assert.match(capped.kind === 'malformed' ? capped.reason : '', /exceeds/)
  // The declared-length check is a lower bound, so a one-record hello just over the cap is rejected up front.
  const real = realHello('TLSv1.3 acme')
  assert.equal(parseClientHello(real.subarray(0, 9), real.length - 1).kind, 'malformed')
  assert.equal(parseClientHello(real, real.length).kind, 'hello')
})

test('hand-built hellos: minimal, unusual and broken', () => {
  const parse = (message: Buffer) => parseClientHello(record(message))
  const malformed = (message: Buffer, why: RegExp, label: string) => {
    const result = parse(message)
    assert.equal(result.kind, 'malformed', label)
    assert.match(result.kind === 'malformed' ? result.reason : '', why, label)
  }

  // No extensions block at all is legal (a minimal pre-TLS-1.2 hello).
  const minimal = expectHello(parse(helloMessage(null)))
  assert.equal(minimal.serverName, undefined)
  assert.equal(minimal.alpnProtocols, undefined)
  assert.equal(minimal.supportedVersions, undefined)
  assert.deepEqual(expectHello(parse(helloMessage([]))).alpnProtocols, undefined)

  // The first host_name wins; other name types are skipped.
  const sni = expectHello(parse(helloMessage([sniExt([1, 'other'], [0, 'B.Example.Test'], [0, 'second'])])))
  assert.equal(sni.serverName, 'B.Example.Test')
  const both = expectHello(
    parse(helloMessage([ext(0xaaaa, Buffer.alloc(3)), alpnExt('acme-tls/1'), sniExt([0, NAME])])),
  )
  assert.equal(both.serverName, NAME)
  assert.deepEqual(both.alpnProtocols, ['acme-tls/1'])

  malformed(helloMessage([alpnExt('h2', '')]), /empty ALPN/, 'empty protocol name')
  malformed(helloMessage([ext(16, Buffer.from([0, 0]))]), /protocol_name_list/, 'empty ALPN list')
  malformed(helloMessage([ext(16, Buffer.from([0, 9, 2, 0x68, 0x32]))]), /protocol_name_list/, 'ALPN list too long')
  malformed(helloMessage([ext(16, Buffer.from([0, 3, 5, 0x68, 0x32]))]), /protocol name/, 'ALPN name overruns')
  malformed(helloMessage([ext(0, Buffer.from([0, 5, 0, 0, 9, 0x61, 0x62]))]), /server_name/, 'SNI name overruns')
  malformed(helloMessage([sniExt([0, ''])]), /empty host_name/, 'empty host_name')
  malformed(helloMessage([sniExt([0, 'a\0b'])]), /NUL/, 'NUL in host_name')
  malformed(helloMessage([sniExt([0, NAME]), sniExt([0, 'evil.test'])]), /duplicate/, 'two SNI extensions')
  malformed(helloMessage([ext(43, Buffer.from([3, 3, 4, 3]))]), /supported_versions/, 'odd supported_versions')

  // Extension lengths that disagree with the block.
  const overrun = helloMessage([ext(16, Buffer.from([0, 3, 2, 0x68, 0x32]))])
  overrun.writeUInt16BE(overrun.readUInt16BE(overrun.length - 7) + 4, overrun.length - 7)
  malformed(overrun, /extension data/, 'extension longer than the block')
  const withTrailing = helloMessage([alpnExt('h2')])
  const grown = Buffer.concat([withTrailing, Buffer.from([0])])
  grown.writeUIntBE(grown.length - 4, 1, 3)
  malformed(grown, /extensions length/, 'byte after the extensions block')

  malformed(helloMessage(null, 2), /not ClientHello/, 'ServerHello')
  malformed(Buffer.from([1, 0, 0, 3, 3, 3, 0]), /random/, 'body shorter than its fields')
})

test('record framing: other record types, empty and oversized records are malformed', () => {
  const handshake = handshakeOf(realHello('TLSv1.2 acme'))
  const split = reframe(handshake, [40])
  const alert = Buffer.concat([split.subarray(0, 45), record(Buffer.from([2, 40]), 0x15), split.subarray(45)])
  assert.equal(parseClientHello(alert).kind, 'malformed')
  const empty = Buffer.concat([split.subarray(0, 45), record(Buffer.alloc(0)), split.subarray(45)])
  assert.equal(parseClientHello(empty).kind, 'malformed')
  const badVersion = Buffer.from(split)
  badVersion[46] = 2
  assert.equal(parseClientHello(badVersion).kind, 'malformed')
  assert.equal(parseClientHello(Buffer.from([0x16, 3, 1, 0x41, 0x01])).kind, 'malformed')
  assert.equal(parseClientHello(Buffer.from([0x16, 3, 1, 0x41, 0x00])).kind, 'need-more')
})

// ---------------------------------------------------------------------------------------------------------------
// peekClientHello on real sockets

const LISTENER_EVENTS = ['data', 'end', 'error', 'close', 'readable'] as const

function listenerCounts(socket: net.Socket): number[] {
  return LISTENER_EVENTS.map((e) => socket.listenerCount(e))
}

/** A net.Server whose connections are handed to `onSocket`; resolves the first connection's outcome. */
async function withPeekServer<T>(
  onSocket: (socket: net.Socket) => Promise<T>,
  client: (port: number) => void | Promise<void>,
  serverOpts: net.ServerOpts = {},
): Promise<T> {
  const server = net.createServer(serverOpts)
  let accepted: net.Socket | undefined
  const outcome = new Promise<T>((resolve, reject) => {
    server.once('connection', (socket) => {
      accepted = socket
      onSocket(socket).then(resolve, reject)
    })
  })
  const port = await listen(server)
  try {
    await client(port)
    return await outcome
  } catch (err) {
    // server.close() waits for open connections: a failed assertion must not turn into a hung test file.
    accepted?.destroy()
    throw err
  } finally {
    await closeServer(server)
  }
}

/** Active ref'd timers: the peek's timer must be gone once it has resolved, whichever way. */
function activeTimers(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length
}

/**
 * A stream for tls.connect({ socket }) that writes everything to a TCP connection one byte per event-loop turn, so
 * the peer's ClientHello arrives in many small 'data' events.
 */
function trickle(raw: net.Socket): Duplex {
  raw.setNoDelay(true)
  const duplex = new Duplex({
    read() {
      raw.resume()
    },
    write(chunk: Buffer, _encoding, callback) {
      let i = 0
      const step = () => {
        if (i >= chunk.length) return callback()
        raw.write(chunk.subarray(i, i + 1))
        i += 1
        setImmediate(step)
      }
      step()
    },
    final(callback) {
      raw.end()
      callback()
    },
    destroy(err, callback) {
      raw.destroy()
      callback(err)
    },
  })
  raw.on('data', (chunk: Buffer) => {
    if (!duplex.push(chunk)) raw.pause()
  })
  raw.on('end', () => duplex.push(null))
  raw.on('error', (err) => duplex.destroy(err))
  return duplex
}

test('peekClientHello: a trickled or whole real hello is peeked, put back, and a real tls.Server completes', async () => {
  for (const version of ['TLSv1.2', 'TLSv1.3'] as const) {
    for (const slow of [true, false]) {
      const label = `${version} ${slow ? 'trickled' : 'whole'}`
      const tlsServer = tls.createServer({ key, cert, ALPNProtocols: ['acme-tls/1'] })
      tlsServer.on('secureConnection', (s) => s.end(`pong ${s.alpnProtocol} ${s.servername}`))
      tlsServer.on('tlsClientError', () => {})
      let clientDone: Promise<{ alpn: string | false | null; reply: string }> | undefined

      const { result, dataEvents } = await withPeekServer(
        async (socket) => {
          const baseline = listenerCounts(socket)
          // Count 'data' events without adding a listener that would change what the peek sees.
          let dataEvents = 0
          const emit = socket.emit
          socket.emit = function (this: net.Socket, event: string | symbol, ...args: unknown[]) {
            if (event === 'data') dataEvents += 1
            return Reflect.apply(emit, this, [event, ...args]) as boolean
          } as typeof socket.emit
          const timers = activeTimers()
          const peek = peekClientHello(socket, { timeoutMs: 5000 })
          assert.equal(activeTimers(), timers + 1, `${label}: the peek has its timer`)
          const result = await peek
          socket.emit = emit
          assert.equal(activeTimers(), timers, `${label}: the peek timer is cleared`)
          assert.deepEqual(listenerCounts(socket), baseline, `${label}: our listeners are gone`)
          assert.equal(socket.isPaused(), true, `${label}: left paused`)
          assert.ok(socket.readableLength > 0, `${label}: the hello is back in the buffer`)
          tlsServer.emit('connection', socket)
          return { result, dataEvents }
        },
        (port) => {
          const raw = net.connect(port, '127.0.0.1')
          clientDone = new Promise((resolve, reject) => {
            const client = tls.connect({
              ...(slow ? { socket: trickle(raw) } : { socket: raw }),
              servername: NAME,
              ALPNProtocols: ['acme-tls/1'],
              ca: cert,
              minVersion: version,
              maxVersion: version,
            })
            const chunks: Buffer[] = []
            client.on('error', reject)
            client.on('secureConnect', () => {
              client.on('data', (c: Buffer) => chunks.push(c))
              client.on('end', () => {
                resolve({ alpn: client.alpnProtocol, reply: Buffer.concat(chunks).toString() })
                client.destroy()
              })
            })
          })
        },
      )
      const info = expectHello(result)
      assert.equal(info.serverName, NAME, label)
      assert.deepEqual(info.alpnProtocols, ['acme-tls/1'], label)
      if (slow) assert.ok(dataEvents > 1, `${label}: the hello arrived in ${dataEvents} data event(s)`)
      const { alpn, reply } = await clientDone!
      assert.equal(alpn, 'acme-tls/1', label)
      assert.equal(reply, `pong acme-tls/1 ${NAME}`, label)
    }
  }
})

test('peekClientHello: a silent client times out after timeoutMs; listeners removed, bytes-free socket paused', async () => {
  let client: net.Socket | undefined
  const { result, elapsed } = await withPeekServer(
    async (socket) => {
      const baseline = listenerCounts(socket)
      const started = performance.now()
      const result = await peekClientHello(socket, { timeoutMs: 200 })
      const elapsed = performance.now() - started
      assert.deepEqual(listenerCounts(socket), baseline)
      assert.equal(socket.isPaused(), true)
      socket.destroy()
      return { result, elapsed }
    },
    (port) => {
      client = net.connect(port, '127.0.0.1')
      client.on('error', () => {})
    },
  )
  client?.destroy()
  assert.deepEqual(result, { kind: 'timeout' })
  assert.ok(elapsed >= 190, `timed out after ${elapsed} ms`)
})

test('peekClientHello: a client that closes, before or during its hello, gives closed', async () => {
  const partial = realHello('TLSv1.3 acme').subarray(0, 50)
  for (const send of [Buffer.alloc(0), partial]) {
    const result = await withPeekServer(
      async (socket) => {
        const baseline = listenerCounts(socket)
        const timers = activeTimers()
        const result = await peekClientHello(socket, { timeoutMs: 5000 })
        assert.deepEqual(listenerCounts(socket), baseline)
        assert.equal(activeTimers(), timers, 'the peek timer is cleared')
        socket.destroy()
        return result
      },
      (port) => {
        const client = net.connect(port, '127.0.0.1', () => client.end(send))
        client.on('error', () => {})
      },
    )
    assert.deepEqual(result, { kind: 'closed' }, `after sending ${send.length} bytes`)
  }
  // A socket that is already gone is reported without waiting for the timeout.
  const gone = new net.Socket()
  gone.destroy()
  assert.deepEqual(await peekClientHello(gone, { timeoutMs: 5000 }), { kind: 'closed' })
})

test('peekClientHello: plain HTTP is not-tls and every byte read is put back, even on a socket paused on connect', async () => {
  const request = Buffer.from(`GET / HTTP/1.1\r\nHost: ${NAME}\r\n\r\n`)
  let client: net.Socket | undefined
  const { result, replay } = await withPeekServer(
    async (socket) => {
      const timers = activeTimers()
      const result = await peekClientHello(socket, { timeoutMs: 5000 })
      assert.equal(activeTimers(), timers, 'the peek timer is cleared')
      const replay = await new Promise<Buffer>((resolve) => {
        const chunks: Buffer[] = []
        socket.on('data', (c: Buffer) => {
          chunks.push(c)
          if (Buffer.concat(chunks).length >= request.length) resolve(Buffer.concat(chunks))
        })
        // The peek leaves the socket explicitly paused, and adding a 'data' listener does not undo that.
        socket.resume()
      })
      socket.destroy()
      return { result, replay }
    },
    (port) => {
      client = net.connect(port, '127.0.0.1', () => client?.write(request))
      client.on('error', () => {})
    },
    { pauseOnConnect: true },
  )
  client?.destroy()
  assert.equal(result.kind, 'not-tls')
  assert.deepEqual(replay, request)
})

test('peekClientHello: a hello over maxBytes is malformed and still put back', async () => {
  const hello = realHello('default')
  let client: net.Socket | undefined
  const { result, buffered } = await withPeekServer(
    async (socket) => {
      const result = await peekClientHello(socket, { timeoutMs: 5000, maxBytes: 100 })
      const buffered = socket.readableLength
      socket.destroy()
      return { result, buffered }
    },
    (port) => {
      client = net.connect(port, '127.0.0.1', () => client?.write(hello))
      client.on('error', () => {})
    },
  )
  client?.destroy()
  assert.equal(result.kind, 'malformed')
  assert.ok(buffered > 0)
})
