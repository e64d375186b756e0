// DNS messages on the wire: the only importer of `dns-packet` (encoding and decoding), plus what it lacks for
// RFC 2136: the UPDATE opcode in the header flags, class NONE (254, "delete this RR") patched into the encoded
// records, and the offsets of records so TSIG (tsig.ts) can sign and verify the exact bytes.
import { randomInt } from 'node:crypto'
import dnsPacket from 'dns-packet'

const OPCODE_UPDATE = 5
export const CLASS_NONE = 254
export const TYPE_TSIG = 250

/** RCODE numbers (RFC 1035, 2136, 8945) as names, for messages and error codes. */
const RCODES: Record<number, string> = {
  0: 'NOERROR',
  1: 'FORMERR',
  2: 'SERVFAIL',
  3: 'NXDOMAIN',
  4: 'NOTIMP',
  5: 'REFUSED',
  6: 'YXDOMAIN',
  7: 'YXRRSET',
  8: 'NXRRSET',
  9: 'NOTAUTH',
  10: 'NOTZONE',
  16: 'BADSIG',
  17: 'BADKEY',
  18: 'BADTIME',
  22: 'BADTRUNC',
}
export function rcodeName(rcode: number): string {
  return RCODES[rcode] ?? `RCODE_${rcode}`
}

export interface Message {
  id: number
  bytes: Buffer
}

/** A query for `name`/`type`; `recursionDesired: false` for asking an authoritative server about its own data. */
export function encodeQuery(name: string, type: 'SOA' | 'NS' | 'TXT' | 'CNAME', recursionDesired: boolean): Message {
  const id = randomInt(0, 0x10000)
  const bytes = dnsPacket.encode({
    id,
    type: 'query',
    flags: recursionDesired ? dnsPacket.RECURSION_DESIRED : 0,
    questions: [{ name: bare(name), type, class: 'IN' }],
  })
  return { id, bytes }
}

export interface TxtChange {
  op: 'add' | 'delete'
  name: string
  value: string
  ttl: number
}

/**
 * An UPDATE for `zone` (RFC 2136): the zone section is the question (zone, SOA), no prerequisites, and per change
 * either an add (class IN, the TTL, the TXT data) or "delete this exact RR" (class NONE, TTL 0, the TXT data), so
 * other values at the same name stay (a wildcard and its apex share one name).
 */
export function encodeUpdate(zone: string, changes: readonly TxtChange[]): Message {
  const id = randomInt(0, 0x10000)
  const bytes = dnsPacket.encode({
    id,
    type: 'query',
    flags: OPCODE_UPDATE << 11,
    questions: [{ name: bare(zone), type: 'SOA', class: 'IN' }],
    authorities: changes.map((c) => ({
      type: 'TXT' as const,
      name: bare(c.name),
      // dns-packet knows no class NONE: encoded as IN here, patched below.
      class: 'IN' as const,
      ttl: c.op === 'add' ? c.ttl : 0,
      data: txtChunks(c.value),
    })),
  })
  const records = recordSpans(bytes)
  changes.forEach((change, i) => {
    if (change.op !== 'delete') return
    const span = records.find((r) => r.section === 'authority' && r.index === i)!
    bytes.writeUInt16BE(CLASS_NONE, span.classOffset)
  })
  return { id, bytes }
}

export interface DecodedRecord {
  name: string
  type: string
  data: unknown
}

export interface Decoded {
  id: number
  /** Header RCODE (4 bits; TSIG errors come in the TSIG record, see tsig.ts). */
  rcode: number
  authoritative: boolean
  truncated: boolean
  answers: DecodedRecord[]
  authorities: DecodedRecord[]
}

export function decode(bytes: Buffer): Decoded {
  const packet = dnsPacket.decode(bytes)
  const flags = bytes.readUInt16BE(2)
  const records = (list: readonly dnsPacket.Answer[] | undefined): DecodedRecord[] =>
    (list ?? []).map((r) => ({ name: absolute(r.name), type: r.type, data: 'data' in r ? r.data : undefined }))
  return {
    id: packet.id ?? bytes.readUInt16BE(0),
    rcode: flags & 0xf,
    authoritative: (flags & dnsPacket.AUTHORITATIVE_ANSWER) !== 0,
    truncated: (flags & dnsPacket.TRUNCATED_RESPONSE) !== 0,
    answers: records(packet.answers),
    authorities: records(packet.authorities),
  }
}

/** TXT data of a decoded record as one string (its character-strings joined, as a validator does). */
export function txtString(data: unknown): string {
  const chunks = Array.isArray(data) ? data : [data]
  return chunks.map((c) => (Buffer.isBuffer(c) ? c.toString('utf8') : String(c))).join('')
}

/** Where each resource record of a message sits: for patching classes and for finding the TSIG record. */
export interface RecordSpan {
  section: 'answer' | 'authority' | 'additional'
  index: number
  start: number
  classOffset: number
  type: number
  rdataOffset: number
  end: number
}

function skipName(bytes: Buffer, offset: number): number {
  for (let at = offset; ; ) {
    if (at >= bytes.length) throw new RangeError('DNS name runs past the end of the message')
    const len = bytes[at]!
    if (len === 0) return at + 1
    if ((len & 0xc0) === 0xc0) return at + 2
    at += len + 1
  }
}

export function recordSpans(bytes: Buffer): RecordSpan[] {
  if (bytes.length < 12) throw new RangeError('DNS message shorter than its header')
  let at = 12
  for (let q = bytes.readUInt16BE(4); q > 0; q--) at = skipName(bytes, at) + 4
  const spans: RecordSpan[] = []
  const sections = [
    ['answer', bytes.readUInt16BE(6)],
    ['authority', bytes.readUInt16BE(8)],
    ['additional', bytes.readUInt16BE(10)],
  ] as const
  for (const [section, count] of sections) {
    for (let index = 0; index < count; index++) {
      const start = at
      const typeOffset = skipName(bytes, at)
      if (typeOffset + 10 > bytes.length) throw new RangeError('DNS record runs past the end of the message')
      const rdataOffset = typeOffset + 10
      const end = rdataOffset + bytes.readUInt16BE(typeOffset + 8)
      if (end > bytes.length) throw new RangeError('DNS record data runs past the end of the message')
      spans.push({
        section,
        index,
        start,
        classOffset: typeOffset + 2,
        type: bytes.readUInt16BE(typeOffset),
        rdataOffset,
        end,
      })
      at = end
    }
  }
  return spans
}

/** Uncompressed, lower-case wire form of a name (TSIG's canonical form for the key and algorithm names). */
export function nameToWire(name: string): Buffer {
  const labels = bare(name).toLowerCase().split('.').filter(Boolean)
  const parts: Buffer[] = []
  for (const label of labels) {
    const bytes = Buffer.from(label, 'ascii')
    if (bytes.length > 63) throw new RangeError(`DNS label longer than 63 bytes in ${name}`)
    parts.push(Buffer.from([bytes.length]), bytes)
  }
  parts.push(Buffer.from([0]))
  return Buffer.concat(parts)
}

/** Decodes an uncompressed name at `offset` (inside TSIG RDATA, where compression is not allowed). */
export function nameFromWire(bytes: Buffer, offset: number): { name: string; end: number } {
  const labels: string[] = []
  let at = offset
  for (;;) {
    const len = bytes[at]
    if (len === undefined || (len & 0xc0) !== 0) throw new RangeError('bad name in TSIG record')
    at++
    if (len === 0) break
    labels.push(bytes.subarray(at, at + len).toString('ascii'))
    at += len
  }
  return { name: `${labels.join('.').toLowerCase()}.`, end: at }
}

/** The name without its final dot (dns-packet's form). */
function bare(name: string): string {
  return name.endsWith('.') ? name.slice(0, -1) : name
}

export function absolute(name: string): string {
  const lower = name.toLowerCase()
  return lower.endsWith('.') ? lower : `${lower}.`
}

/** A TXT value as character-strings of at most 255 bytes (ACME values are 43 bytes: one string). */
function txtChunks(value: string): Buffer[] {
  const bytes = Buffer.from(value, 'utf8')
  const chunks: Buffer[] = []
  for (let at = 0; at < bytes.length; at += 255) chunks.push(bytes.subarray(at, at + 255))
  return chunks.length > 0 ? chunks : [Buffer.alloc(0)]
}
