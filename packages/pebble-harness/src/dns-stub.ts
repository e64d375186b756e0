// Owns the loopback DNS stub Pebble resolves challenge names through, so tests need no /etc/hosts entries and no
// network. Hand-written on node:dgram: the wire format needed for "everything is 127.0.0.1" is tiny.
import { createSocket, type RemoteInfo } from 'node:dgram'

/** A running {@link startDnsStub} server. */
export interface DnsStub {
  /** UDP port on 127.0.0.1. */
  port: number
  /** Number of well-formed queries answered so far. */
  queries: number
  /** Stop listening. Idempotent. */
  close(): Promise<void>
}

const TYPE_A = 1
const CLASS_IN = 1
const RCODE_NOTIMP = 4
const HEADER_LENGTH = 12

interface Question {
  id: number
  opcode: number
  recursionDesired: boolean
  /** Raw bytes of the question section, echoed back verbatim. */
  question: Buffer
  type: number
  klass: number
}

/** Parse a query with exactly one question; `undefined` for anything malformed or not a query. */
function parseQuery(packet: Buffer): Question | undefined {
  if (packet.length < HEADER_LENGTH) return undefined
  const flags = packet.readUInt16BE(2)
  if (flags & 0x8000) return undefined // a response: answering it could start a loop between two stubs
  if (packet.readUInt16BE(4) !== 1) return undefined // multi-question queries are undefined in practice
  let offset = HEADER_LENGTH
  let nameLength = 1
  for (;;) {
    const length = packet[offset]
    if (length === undefined) return undefined
    offset += 1
    if (length === 0) break
    if (length > 63) return undefined // compression pointers or reserved label types never appear in a question
    nameLength += length + 1
    if (nameLength > 255) return undefined
    offset += length
  }
  if (offset + 4 > packet.length) return undefined
  return {
    id: packet.readUInt16BE(0),
    opcode: (flags >> 11) & 0xf,
    recursionDesired: (flags & 0x0100) !== 0,
    question: packet.subarray(HEADER_LENGTH, offset + 4),
    type: packet.readUInt16BE(offset),
    klass: packet.readUInt16BE(offset + 2),
  }
}

/** Build the reply: A IN -> 127.0.0.1 with TTL 0, everything else an empty NOERROR (NOTIMP for non-QUERY opcodes). */
function buildResponse(query: Question): Buffer {
  const answerA = query.opcode === 0 && query.type === TYPE_A && query.klass === CLASS_IN
  const rcode = query.opcode === 0 ? 0 : RCODE_NOTIMP
  const header = Buffer.alloc(HEADER_LENGTH)
  header.writeUInt16BE(query.id, 0)
  // QR, AA and RA set; opcode and RD echoed, as resolvers check them against their query.
  header.writeUInt16BE(
    0x8000 | (query.opcode << 11) | 0x0400 | (query.recursionDesired ? 0x0100 : 0) | 0x0080 | rcode,
    2,
  )
  header.writeUInt16BE(1, 4)
  header.writeUInt16BE(answerA ? 1 : 0, 6)
  if (!answerA) return Buffer.concat([header, query.question])
  const answer = Buffer.alloc(16)
  answer.writeUInt16BE(0xc000 | HEADER_LENGTH, 0) // name: pointer to the question's name
  answer.writeUInt16BE(TYPE_A, 2)
  answer.writeUInt16BE(CLASS_IN, 4)
  answer.writeUInt32BE(0, 6) // TTL 0: no resolver should remember a test's answer
  answer.writeUInt16BE(4, 10)
  answer.set([127, 0, 0, 1], 12)
  return Buffer.concat([header, query.question, answer])
}

/**
 * Start a UDP DNS server on 127.0.0.1:`port` (0 = ephemeral) that answers every A query with 127.0.0.1 (TTL 0),
 * AAAA with NOERROR and no answers, and anything else with NOERROR and no answers. Malformed packets are ignored.
 *
 * AAAA gets no answer because Pebble asks for AAAA first and dials the first address it gets: `::1` would miss an app
 * listening on 127.0.0.1 only.
 */
export function startDnsStub(port = 0): Promise<DnsStub> {
  const socket = createSocket({ type: 'udp4' })
  let closed: Promise<void> | undefined
  const stub: DnsStub = {
    port: 0,
    queries: 0,
    close() {
      closed ??= new Promise((resolve) => socket.close(() => resolve()))
      return closed
    },
  }
  socket.on('message', (packet: Buffer, peer: RemoteInfo) => {
    const query = parseQuery(packet)
    if (!query) return
    stub.queries += 1
    // A failed send only costs the client a retry; it must not crash the test process.
    socket.send(buildResponse(query), peer.port, peer.address, () => {})
  })
  return new Promise((resolve, reject) => {
    socket.once('error', reject)
    socket.bind(port, '127.0.0.1', () => {
      socket.off('error', reject)
      socket.on('error', () => {}) // e.g. ICMP port unreachable from a client that gave up: not our problem
      stub.port = socket.address().port
      resolve(stub)
    })
  })
}
