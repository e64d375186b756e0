// ClientHello corpus for the fuzzing checks: real hellos captured from Node's TLS client, and deterministic
// mutators (seeded, so a failure can be replayed) that flip bits, truncate, rewrite length fields, re-frame into
// records, splice, or replace everything with random bytes.
import { createServer } from 'node:net'
import { connect as tlsConnect } from 'node:tls'

/** Captures the first flight (the ClientHello record) a real Node TLS client sends with these options. */
export async function captureHello(options: {
  servername?: string
  alpn?: string[]
  version?: 'TLSv1.2' | 'TLSv1.3'
}): Promise<Buffer> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as { port: number }).port
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      server.once('connection', (socket) => {
        const chunks: Buffer[] = []
        socket.on('data', (chunk: Buffer) => {
          chunks.push(chunk)
          const all = Buffer.concat(chunks)
          if (all.length >= 5 && all.length >= 5 + all.readUInt16BE(3)) {
            resolve(all)
            socket.destroy()
          }
        })
        socket.on('error', () => {})
      })
      const client = tlsConnect({
        host: '127.0.0.1',
        port,
        rejectUnauthorized: false,
        ...(options.servername !== undefined ? { servername: options.servername } : {}),
        ...(options.alpn ? { ALPNProtocols: options.alpn } : {}),
        ...(options.version ? { minVersion: options.version, maxVersion: options.version } : {}),
      })
      client.on('error', () => {})
      client.setTimeout(5000, () => reject(new Error('no ClientHello captured')))
    })
  } finally {
    server.close()
  }
}

/** Mulberry32: a tiny seeded PRNG, so every mutation is reproducible from (seed, index). */
export function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function randomBuffer(rand: () => number, length: number): Buffer {
  const out = Buffer.alloc(length)
  for (let i = 0; i < length; i++) out[i] = Math.floor(rand() * 256)
  return out
}

/** Cuts the handshake payload of a one-record hello into `parts` records. */
export function reframe(hello: Buffer, cuts: number[]): Buffer {
  const body = hello.subarray(5, 5 + hello.readUInt16BE(3))
  const rest = hello.subarray(5 + body.length)
  const points = [...new Set(cuts.filter((c) => c > 0 && c < body.length))].sort((a, b) => a - b)
  const records: Buffer[] = []
  let start = 0
  for (const end of [...points, body.length]) {
    const header = Buffer.from([0x16, hello[1]!, hello[2]!, 0, 0])
    header.writeUInt16BE(end - start, 3)
    records.push(header, body.subarray(start, end))
    start = end
  }
  return Buffer.concat([...records, rest])
}

export const MUTATIONS = [
  'bit flips',
  'truncation',
  'length field rewrite',
  'byte run overwrite',
  're-framed records',
  're-framed + flips',
  'splice / duplicate',
  'random bytes',
  'TLS-looking random',
] as const
export type Mutation = (typeof MUTATIONS)[number]

/** The `index`-th mutation of the corpus: deterministic for (seed, index). */
export function mutate(corpus: Buffer[], seed: number, index: number): { kind: Mutation; bytes: Buffer } {
  const rand = prng(seed * 1_000_003 + index)
  const base = corpus[Math.floor(rand() * corpus.length)]!
  const kind = MUTATIONS[index % MUTATIONS.length]!
  const pick = (n: number) => Math.floor(rand() * n)
  let bytes: Buffer
  switch (kind) {
    case 'bit flips': {
      bytes = Buffer.from(base)
      const flips = 1 + pick(8)
      for (let i = 0; i < flips; i++) {
        const at = pick(bytes.length)
        bytes[at] = bytes[at]! ^ (1 << pick(8))
      }
      break
    }
    case 'truncation':
      bytes = base.subarray(0, pick(base.length))
      break
    case 'length field rewrite': {
      // Record length (3-4), handshake length (6-8), and random 16-bit words where lengths live further in.
      bytes = Buffer.from(base)
      const spots = [3, 6, 7, 8, 43, 44, ...Array.from({ length: 4 }, () => pick(bytes.length - 1))]
      const at = spots[pick(spots.length)]!
      const values = [0, 1, 0xff, 0xffff, 0x4000, bytes.length, pick(0x10000)]
      const value = values[pick(values.length)]!
      if (at + 1 < bytes.length) bytes.writeUInt16BE(value & 0xffff, at)
      break
    }
    case 'byte run overwrite': {
      bytes = Buffer.from(base)
      const at = pick(bytes.length)
      randomBuffer(rand, Math.min(1 + pick(32), bytes.length - at)).copy(bytes, at)
      break
    }
    case 're-framed records':
      bytes = reframe(
        base,
        Array.from({ length: 1 + pick(6) }, () => pick(base.length)),
      )
      break
    case 're-framed + flips': {
      bytes = reframe(base, [pick(base.length), pick(base.length)])
      const at = pick(bytes.length)
      bytes[at] = bytes[at]! ^ (1 << pick(8))
      break
    }
    case 'splice / duplicate': {
      const from = pick(base.length)
      const to = from + pick(base.length - from)
      const at = 5 + pick(base.length - 5)
      bytes = Buffer.concat([base.subarray(0, at), base.subarray(from, to), base.subarray(at)])
      break
    }
    case 'random bytes':
      bytes = randomBuffer(rand, 1 + pick(2048))
      break
    case 'TLS-looking random': {
      const body = randomBuffer(rand, pick(1800))
      const header = Buffer.from([0x16, 0x03, pick(5), 0, 0, 0x01, 0, 0, 0])
      header.writeUInt16BE(body.length + 4, 3)
      header.writeUIntBE(pick(2) ? body.length : pick(0x1000000), 6, 3)
      bytes = Buffer.concat([header, body])
      break
    }
  }
  return { kind, bytes }
}

/**
 * Grows a captured one-record hello to `size` bytes with a padding extension (RFC 7685, type 21) appended to its
 * extensions, fixing the three length fields. Post-quantum key shares (X25519MLKEM768) make real hellos ~1.7 KB.
 */
export function padHello(hello: Buffer, size: number): Buffer {
  let pos = 5 + 4 + 2 + 32
  pos += 1 + hello[pos]!
  pos += 2 + hello.readUInt16BE(pos)
  pos += 1 + hello[pos]!
  const extensionsAt = pos
  const padding = size - hello.length - 4
  if (padding < 0) throw new RangeError(`hello is already ${hello.length} bytes`)
  const extension = Buffer.alloc(4 + padding)
  extension.writeUInt16BE(21, 0)
  extension.writeUInt16BE(padding, 2)
  const out = Buffer.concat([hello, extension])
  out.writeUInt16BE(hello.readUInt16BE(extensionsAt) + extension.length, extensionsAt)
  out.writeUIntBE(hello.readUIntBE(6, 3) + extension.length, 6, 3)
  out.writeUInt16BE(hello.readUInt16BE(3) + extension.length, 3)
  return out
}

/**
 * Replaces the server_name extension of a captured one-record hello with one carrying exactly `name` (raw bytes,
 * so odd bytes, empty names and IP literals can be sent), or removes it (`undefined`). Fixes every length field.
 */
export function withServerName(hello: Buffer, name: Buffer | undefined): Buffer {
  let pos = 5 + 4 + 2 + 32
  pos += 1 + hello[pos]!
  pos += 2 + hello.readUInt16BE(pos)
  pos += 1 + hello[pos]!
  const head = hello.subarray(5 + 4, pos)
  const end = pos + 2 + hello.readUInt16BE(pos)
  const extensions: Buffer[] = []
  if (name !== undefined) {
    const ext = Buffer.alloc(4 + 2 + 3 + name.length)
    ext.writeUInt16BE(0, 0)
    ext.writeUInt16BE(2 + 3 + name.length, 2)
    ext.writeUInt16BE(3 + name.length, 4)
    ext[6] = 0
    ext.writeUInt16BE(name.length, 7)
    name.copy(ext, 9)
    extensions.push(ext)
  }
  for (let at = pos + 2; at < end; ) {
    const type = hello.readUInt16BE(at)
    const length = hello.readUInt16BE(at + 2)
    if (type !== 0) extensions.push(hello.subarray(at, at + 4 + length))
    at += 4 + length
  }
  const extBlock = Buffer.concat(extensions)
  const extLength = Buffer.alloc(2)
  extLength.writeUInt16BE(extBlock.length)
  const body = Buffer.concat([head, extLength, extBlock])
  const header = Buffer.from([0x16, hello[1]!, hello[2]!, 0, 0, 0x01, 0, 0, 0])
  header.writeUInt16BE(body.length + 4, 3)
  header.writeUIntBE(body.length, 6, 3)
  return Buffer.concat([header, body])
}
