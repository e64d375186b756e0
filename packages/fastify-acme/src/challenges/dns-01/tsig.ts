// TSIG (RFC 8945): signs a request and verifies its response with a shared HMAC key. dns-packet encodes messages but
// has no TSIG; the MAC is computed here over its exact wire bytes and the TSIG record appended by hand.
import { createHmac, timingSafeEqual } from 'node:crypto'
import { ERR_DNS_OPTIONS } from './errors.js'
import { nameFromWire, nameToWire, recordSpans, TYPE_TSIG } from './wire.js'

export type TsigAlgorithm = 'hmac-sha1' | 'hmac-sha224' | 'hmac-sha256' | 'hmac-sha384' | 'hmac-sha512'

const HASHES: Record<TsigAlgorithm, string> = {
  'hmac-sha1': 'sha1',
  'hmac-sha224': 'sha224',
  'hmac-sha256': 'sha256',
  'hmac-sha384': 'sha384',
  'hmac-sha512': 'sha512',
}

const CLASS_ANY = 255
/** RFC 8945 recommends 300 s. */
const FUDGE_S = 300

export interface TsigKey {
  /** Key name as configured on the server, e.g. `acme-update.` (compared case-insensitively). */
  name: string
  algorithm: TsigAlgorithm
  /** The shared secret, base64 as in `named.conf` / `tsig-keygen` output. */
  secret: string
}

/** Checks a key's options once, so a typo fails at configuration time rather than at the first order. */
export function checkTsigKey(key: TsigKey): void {
  if (!(key.algorithm in HASHES))
    throw new ERR_DNS_OPTIONS(
      `unknown TSIG algorithm ${JSON.stringify(key.algorithm)}; use one of ${Object.keys(HASHES).join(', ')}`,
    )
  if (typeof key.name !== 'string' || key.name.replace(/\.$/, '').length === 0)
    throw new ERR_DNS_OPTIONS('the TSIG key name is empty')
  const secret = typeof key.secret === 'string' ? key.secret.trim() : ''
  // Never echo the secret itself.
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(secret) || Buffer.from(secret, 'base64').length === 0)
    throw new ERR_DNS_OPTIONS(`the TSIG secret of key ${key.name} is not base64`)
}

function u48(seconds: number): Buffer {
  const b = Buffer.alloc(6)
  b.writeUIntBE(seconds, 0, 6)
  return b
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2)
  b.writeUInt16BE(n)
  return b
}

/** TSIG variables (RFC 8945 section 4.3.3): what the MAC covers besides the message. */
function variables(key: TsigKey, time: number, fudge: number, error: number, other: Buffer): Buffer {
  return Buffer.concat([
    nameToWire(key.name),
    u16(CLASS_ANY),
    Buffer.alloc(4), // TTL 0
    nameToWire(key.algorithm),
    u48(time),
    u16(fudge),
    u16(error),
    u16(other.length),
    other,
  ])
}

function hmac(key: TsigKey, parts: Buffer[]): Buffer {
  const mac = createHmac(HASHES[key.algorithm], Buffer.from(key.secret.trim(), 'base64'))
  for (const part of parts) mac.update(part)
  return mac.digest()
}

/** Appends a TSIG record to `message` (ARCOUNT + 1). Returns the signed bytes and the MAC, which the response's MAC covers. */
export function signMessage(message: Buffer, key: TsigKey, nowMs = Date.now()): { bytes: Buffer; mac: Buffer } {
  const time = Math.floor(nowMs / 1000)
  const mac = hmac(key, [message, variables(key, time, FUDGE_S, 0, Buffer.alloc(0))])
  const rdata = Buffer.concat([
    nameToWire(key.algorithm),
    u48(time),
    u16(FUDGE_S),
    u16(mac.length),
    mac,
    message.subarray(0, 2), // original ID
    u16(0), // error
    u16(0), // other len
  ])
  const record = Buffer.concat([
    nameToWire(key.name),
    u16(TYPE_TSIG),
    u16(CLASS_ANY),
    Buffer.alloc(4),
    u16(rdata.length),
    rdata,
  ])
  const bytes = Buffer.concat([message, record])
  bytes.writeUInt16BE(message.readUInt16BE(10) + 1, 10)
  return { bytes, mac }
}

export type TsigVerdict =
  /** No TSIG record in the response. */
  | { kind: 'missing' }
  /** A TSIG record without MAC: the server reports a TSIG error (BADSIG, BADKEY; RFC 8945 section 5.3.2). */
  | { kind: 'unsigned'; error: number }
  /** Signed; `valid` tells whether the MAC verifies with our key; `error` is the TSIG error field (0 or BADTIME). */
  | { kind: 'signed'; valid: boolean; error: number }

/** Reads and verifies the TSIG record of a response to a request whose MAC was `requestMac`. */
export function verifyResponse(response: Buffer, requestMac: Buffer, key: TsigKey): TsigVerdict {
  const spans = recordSpans(response)
  const last = spans.at(-1)
  if (last?.section !== 'additional' || last.type !== TYPE_TSIG) return { kind: 'missing' }
  const rdata = response.subarray(last.rdataOffset, last.end)
  const algorithm = nameFromWire(rdata, 0)
  let at = algorithm.end
  const time = rdata.readUIntBE(at, 6)
  const fudge = rdata.readUInt16BE(at + 6)
  const macSize = rdata.readUInt16BE(at + 8)
  at += 10
  const mac = rdata.subarray(at, at + macSize)
  at += macSize
  const originalId = rdata.readUInt16BE(at)
  const error = rdata.readUInt16BE(at + 2)
  const otherLength = rdata.readUInt16BE(at + 4)
  const other = rdata.subarray(at + 6, at + 6 + otherLength)
  if (macSize === 0) return { kind: 'unsigned', error }
  if (algorithm.name !== `${key.algorithm}.`) return { kind: 'signed', valid: false, error }
  // The MAC covers the response as it was before the TSIG record was added: ARCOUNT - 1, the original ID.
  const unsigned = Buffer.from(response.subarray(0, last.start))
  unsigned.writeUInt16BE(originalId, 0)
  unsigned.writeUInt16BE(unsigned.readUInt16BE(10) - 1, 10)
  const expected = hmac(key, [u16(requestMac.length), requestMac, unsigned, variables(key, time, fudge, error, other)])
  const valid = expected.length === mac.length && timingSafeEqual(expected, mac)
  return { kind: 'signed', valid, error }
}
