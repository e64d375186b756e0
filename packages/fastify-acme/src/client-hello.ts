// Owns reading the TLS ClientHello off a raw TCP socket before Node's TLS stack sees it: a pure, bounds-checked
// parser (server name, ALPN list, versions) and a helper that peeks at a net.Socket and puts every byte back.
// Why: TLS-ALPN-01 must be answered on the normal TLS port, and neither SNICallback nor ALPNCallback sees both the
// name and the offered ALPN list before the certificate is chosen (under TLS 1.2), so routing happens before TLS.
import type { Socket } from 'node:net'

export interface ClientHelloInfo {
  /** host_name from the server_name extension (type 0), as sent (bytes read as latin1); undefined if absent. */
  serverName: string | undefined
  /** Protocol names from the ALPN extension (16), in the client's order; undefined if absent. */
  alpnProtocols: string[] | undefined
  /** ClientHello.legacy_version, e.g. 0x0303 (TLS 1.3 clients send 0x0303 too). */
  legacyVersion: number
  /** Versions from supported_versions (43), e.g. [0x0304, 0x0303]; undefined if absent (a pre-1.3 client). */
  supportedVersions: number[] | undefined
  /** Bytes of the stream taken up to the last byte of the ClientHello message (record headers included). */
  helloBytes: number
}

export type PeekResult =
  | { kind: 'need-more' }
  | { kind: 'hello'; info: ClientHelloInfo }
  /** The first byte is not a TLS handshake record (0x16): plain HTTP, SSLv2, garbage. Left for TLS to fail. */
  | { kind: 'not-tls'; reason: string }
  /** Started like TLS but is broken, or would need more than maxBytes. */
  | { kind: 'malformed'; reason: string }

export interface PeekOptions {
  timeoutMs: number
  maxBytes?: number
}

/** Default cap on the bytes examined. Real hellos are 200–2000 bytes; post-quantum key shares push them past 1.5 KB. */
const DEFAULT_MAX_BYTES = 64 * 1024
const RECORD_HEADER_LENGTH = 5
const CONTENT_TYPE_HANDSHAKE = 0x16
const HANDSHAKE_CLIENT_HELLO = 1
const HANDSHAKE_HEADER_LENGTH = 4
/** TLSCiphertext limit; a plaintext hello record never needs more, so anything larger is not a sane peer. */
const MAX_RECORD_LENGTH = 16384 + 256
const EXT_SERVER_NAME = 0
const EXT_ALPN = 16
const EXT_SUPPORTED_VERSIONS = 43
const NAME_TYPE_HOST_NAME = 0

/** Thrown only inside this module to unwind a failed bounds or sanity check; never escapes. */
class MalformedHello extends Error {}

/** Bounds-checked reader over a byte range: every read checks what is left before touching the buffer. */
class Cursor {
  private pos: number
  constructor(
    private readonly buf: Buffer,
    start = 0,
    private readonly end = buf.length,
  ) {
    this.pos = start
  }

  remaining(): number {
    return this.end - this.pos
  }

  private need(n: number, what: string): void {
    if (n > this.remaining()) throw new MalformedHello(`${what}: needs ${n} bytes, ${this.remaining()} left`)
  }

  u8(what: string): number {
    this.need(1, what)
    const v = this.buf[this.pos]!
    this.pos += 1
    return v
  }

  u16(what: string): number {
    this.need(2, what)
    const v = this.buf.readUInt16BE(this.pos)
    this.pos += 2
    return v
  }

  bytes(n: number, what: string): Buffer {
    this.need(n, what)
    const v = this.buf.subarray(this.pos, this.pos + n)
    this.pos += n
    return v
  }

  /** A cursor over the next n bytes, so a nested structure cannot read past its own declared length. */
  sub(n: number, what: string): Cursor {
    this.need(n, what)
    const c = new Cursor(this.buf, this.pos, this.pos + n)
    this.pos += n
    return c
  }
}

function parseServerName(c: Cursor): string | undefined {
  const listLength = c.u16('server_name_list length')
  if (listLength === 0 || listLength !== c.remaining()) throw new MalformedHello('server_name_list length mismatch')
  let hostName: string | undefined
  // Other name types were never deployed; skip them but still bounds-check every entry.
  while (c.remaining() > 0) {
    const nameType = c.u8('server_name name_type')
    const nameLength = c.u16('server_name length')
    const name = c.bytes(nameLength, 'server_name')
    if (nameType !== NAME_TYPE_HOST_NAME || hostName !== undefined) continue
    if (nameLength === 0) throw new MalformedHello('empty host_name')
    // OpenSSL rejects a NUL in the name; a name that differs from what TLS will see must not route anything.
    if (name.includes(0)) throw new MalformedHello('NUL byte in host_name')
    hostName = name.toString('latin1')
  }
  return hostName
}

function parseAlpn(c: Cursor): string[] {
  const listLength = c.u16('protocol_name_list length')
  if (listLength < 2 || listLength !== c.remaining()) throw new MalformedHello('protocol_name_list length mismatch')
  const protocols: string[] = []
  while (c.remaining() > 0) {
    const nameLength = c.u8('protocol name length')
    if (nameLength === 0) throw new MalformedHello('empty ALPN protocol name')
    protocols.push(c.bytes(nameLength, 'protocol name').toString('latin1'))
  }
  return protocols
}

function parseSupportedVersions(c: Cursor): number[] {
  const listLength = c.u8('supported_versions length')
  if (listLength < 2 || listLength % 2 !== 0 || listLength !== c.remaining()) {
    throw new MalformedHello('supported_versions length mismatch')
  }
  const versions: number[] = []
  while (c.remaining() > 0) versions.push(c.u16('supported version'))
  return versions
}

/** Parses the ClientHello body (after the 4-byte handshake header); throws MalformedHello. */
function parseClientHelloBody(body: Buffer, helloBytes: number): ClientHelloInfo {
  const c = new Cursor(body)
  const legacyVersion = c.u16('legacy_version')
  c.bytes(32, 'random')
  const sessionIdLength = c.u8('legacy_session_id length')
  if (sessionIdLength > 32) throw new MalformedHello('legacy_session_id longer than 32 bytes')
  c.bytes(sessionIdLength, 'legacy_session_id')
  const cipherSuitesLength = c.u16('cipher_suites length')
  if (cipherSuitesLength < 2 || cipherSuitesLength % 2 !== 0) throw new MalformedHello('bad cipher_suites length')
  c.bytes(cipherSuitesLength, 'cipher_suites')
  const compressionLength = c.u8('compression_methods length')
  if (compressionLength < 1) throw new MalformedHello('empty compression_methods')
  c.bytes(compressionLength, 'compression_methods')

  const info: ClientHelloInfo = {
    serverName: undefined,
    alpnProtocols: undefined,
    legacyVersion,
    supportedVersions: undefined,
    helloBytes,
  }
  // A hello may legally end here (no extensions at all: old or minimal clients).
  if (c.remaining() === 0) return info

  const extensionsLength = c.u16('extensions length')
  if (extensionsLength !== c.remaining()) throw new MalformedHello('extensions length does not fill the hello')
  const seen = new Set<number>()
  while (c.remaining() > 0) {
    const type = c.u16('extension type')
    const length = c.u16('extension length')
    const ext = c.sub(length, 'extension data')
    // Duplicates are forbidden (RFC 8446 4.2); accepting them would let the first and last copies disagree.
    if (seen.has(type)) throw new MalformedHello(`duplicate extension ${type}`)
    seen.add(type)
    if (type === EXT_SERVER_NAME) info.serverName = parseServerName(ext)
    else if (type === EXT_ALPN) info.alpnProtocols = parseAlpn(ext)
    else if (type === EXT_SUPPORTED_VERSIONS) info.supportedVersions = parseSupportedVersions(ext)
  }
  return info
}

/**
 * Incremental reassembly of the ClientHello handshake message from consecutive handshake records. Consumes each
 * byte once, so feeding a socket one byte per 'data' event stays linear (re-parsing from the start would be
 * quadratic in the number of records, which a hostile client controls).
 */
class ClientHelloReader {
  private examined = 0
  private readonly header = Buffer.alloc(RECORD_HEADER_LENGTH)
  private headerFill = 0
  private fragmentLeft = 0
  private readonly handshake: Buffer[] = []
  private handshakeLength = 0
  /** Header + body length of the handshake message, once its 4-byte header has been read. */
  private handshakeTotal = -1
  private result: PeekResult = { kind: 'need-more' }

  constructor(private readonly maxBytes: number) {}

  push(chunk: Buffer): PeekResult {
    try {
      this.consume(chunk)
    } catch (err) {
      this.result = {
        kind: 'malformed',
        reason: err instanceof MalformedHello ? err.message : `parser error: ${String(err)}`,
      }
    }
    return this.result
  }

  private consume(chunk: Buffer): void {
    let pos = 0
    while (this.result.kind === 'need-more' && pos < chunk.length) {
      if (this.fragmentLeft === 0) {
        const take = Math.min(RECORD_HEADER_LENGTH - this.headerFill, chunk.length - pos)
        chunk.copy(this.header, this.headerFill, pos, pos + take)
        pos += take
        this.headerFill += take
        this.examined += take
        if (this.overCap()) return
        this.checkRecordHeader()
      } else {
        // Never take bytes past the end of the hello: whatever follows (a ChangeCipherSpec record, 0-RTT data)
        // belongs to TLS, not to us.
        const wanted =
          this.handshakeTotal < 0
            ? HANDSHAKE_HEADER_LENGTH - this.handshakeLength
            : this.handshakeTotal - this.handshakeLength
        const take = Math.min(this.fragmentLeft, chunk.length - pos, wanted)
        this.handshake.push(chunk.subarray(pos, pos + take))
        pos += take
        this.fragmentLeft -= take
        this.handshakeLength += take
        this.examined += take
        if (this.overCap()) return
        this.checkHandshake()
      }
    }
  }

  /** Checked before interpreting the bytes just taken, so a hello completing past the cap is not a 'hello'. */
  private overCap(): boolean {
    if (this.examined <= this.maxBytes) return false
    this.fail(`ClientHello exceeds ${this.maxBytes} bytes`)
    return true
  }

  /** Checks whatever part of the record header has arrived, so garbage is rejected on its first byte. */
  private checkRecordHeader(): void {
    const isFirstRecord = this.examined <= RECORD_HEADER_LENGTH
    if (this.headerFill >= 1 && this.header[0] !== CONTENT_TYPE_HANDSHAKE) {
      if (isFirstRecord) {
        this.result = {
          kind: 'not-tls',
          reason: `first byte 0x${this.header[0]!.toString(16).padStart(2, '0')} is not a TLS handshake record`,
        }
      } else {
        this.fail(`record of type ${this.header[0]} before the ClientHello was complete`)
      }
      return
    }
    if (this.headerFill >= 2 && this.header[1] !== 3) {
      this.fail(`record version major ${this.header[1]} is not 3`)
      return
    }
    if (this.headerFill < RECORD_HEADER_LENGTH) return
    const length = this.header.readUInt16BE(3)
    // Empty handshake fragments are forbidden (RFC 5246 6.2.1) and would let a client stall us for free.
    if (length === 0) {
      this.fail('empty handshake record')
      return
    }
    if (length > MAX_RECORD_LENGTH) {
      this.fail(`record length ${length} exceeds ${MAX_RECORD_LENGTH}`)
      return
    }
    this.headerFill = 0
    this.fragmentLeft = length
  }

  private checkHandshake(): void {
    if (this.handshakeTotal < 0) {
      if (this.handshakeLength < HANDSHAKE_HEADER_LENGTH) return
      const header = Buffer.concat(this.handshake, HANDSHAKE_HEADER_LENGTH)
      if (header[0] !== HANDSHAKE_CLIENT_HELLO) {
        this.fail(`handshake message type ${header[0]} is not ClientHello`)
        return
      }
      this.handshakeTotal = HANDSHAKE_HEADER_LENGTH + header.readUIntBE(1, 3)
      // Decide from the declared length as soon as it is known: bytes still to come can only add to `examined`,
      // so a hello that cannot fit the cap is rejected without waiting for (up to 16 MB of) it to arrive.
      if (this.examined + (this.handshakeTotal - this.handshakeLength) > this.maxBytes) {
        this.fail(`declared ClientHello length ${this.handshakeTotal - HANDSHAKE_HEADER_LENGTH} exceeds the cap`)
        return
      }
    }
    if (this.handshakeLength < this.handshakeTotal) return
    const message = Buffer.concat(this.handshake, this.handshakeTotal)
    this.result = {
      kind: 'hello',
      info: parseClientHelloBody(message.subarray(HANDSHAKE_HEADER_LENGTH), this.examined),
    }
  }

  private fail(reason: string): void {
    this.result = { kind: 'malformed', reason }
  }
}

/**
 * Parses the ClientHello at the start of `data` (all bytes received so far). Pure and total: never throws.
 * The cap counts record headers too. A hello whose declared handshake length cannot fit in `maxBytes` is
 * 'malformed' as soon as its 4-byte handshake header is in; otherwise it is 'malformed' once more than `maxBytes`
 * bytes would have to be examined (e.g. the same message cut into many tiny records).
 */
export function parseClientHello(data: Buffer, maxBytes: number = DEFAULT_MAX_BYTES): PeekResult {
  try {
    return new ClientHelloReader(maxBytes).push(data)
  } catch (err) {
    return { kind: 'malformed', reason: `parser error: ${String(err)}` }
  }
}

/**
 * Reads from a net.Socket until parseClientHello says hello / not-tls / malformed, or timeout. Then puts every
 * byte read back with socket.unshift() and leaves the socket paused, with none of our listeners remaining (the
 * caller must add its own 'error' listener). Resolves with the PeekResult, or { kind: 'timeout' } / { kind:
 * 'closed' } (socket ended/errored before a decision). Never rejects.
 *
 * On 'closed' nothing is put back: the stream is over ('end' already emitted, where unshift() is an error) and
 * the caller should destroy the socket. On 'timeout' the bytes are put back, so the caller may still hand the
 * socket to TLS, though destroying it is the usual answer to a silent client.
 *
 * Handing the socket to a tls.Server afterwards works because Node's TLSSocket, when wrapping a net.Socket that
 * has buffered data, reads that buffer into the TLS engine before any new bytes from the handle.
 */
export function peekClientHello(
  socket: Socket,
  opts: PeekOptions,
): Promise<PeekResult | { kind: 'timeout' } | { kind: 'closed' }> {
  return new Promise((resolve) => {
    if (socket.destroyed || socket.readableEnded) {
      resolve({ kind: 'closed' })
      return
    }
    const reader = new ClientHelloReader(opts.maxBytes ?? DEFAULT_MAX_BYTES)
    const chunks: Buffer[] = []
    let settled = false

    const finish = (result: PeekResult | { kind: 'timeout' } | { kind: 'closed' }, putBack: boolean): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      // Pause before removing the 'data' listener: a flowing stream with no listener drops chunks on the floor.
      socket.pause()
      socket.removeListener('data', onData)
      socket.removeListener('end', onClosed)
      socket.removeListener('close', onClosed)
      socket.removeListener('error', onClosed)
      if (putBack && chunks.length > 0 && !socket.destroyed) {
        socket.unshift(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks))
      }
      resolve(result)
    }

    function onData(chunk: Buffer | string): void {
      // No encoding is set on a fresh socket; tolerate one anyway rather than mis-parse.
      const buf = typeof chunk === 'string' ? Buffer.from(chunk, 'latin1') : chunk
      chunks.push(buf)
      const result = reader.push(buf)
      if (result.kind !== 'need-more') finish(result, true)
    }
    function onClosed(): void {
      finish({ kind: 'closed' }, false)
    }

    const timer = setTimeout(() => finish({ kind: 'timeout' }, true), opts.timeoutMs)
    socket.on('data', onData)
    socket.on('end', onClosed)
    socket.on('close', onClosed)
    socket.on('error', onClosed)
    // A socket the caller paused stays paused when a 'data' listener is added, so resume explicitly.
    socket.resume()
  })
}
