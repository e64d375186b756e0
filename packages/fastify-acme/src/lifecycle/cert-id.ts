// The ARI certificate identifier (RFC 9773 section 4.1): base64url(AKI keyIdentifier) "." base64url(serial), where
// the serial is the DER INTEGER's content octets (a leading 0x00 kept when the high bit is set: Node's
// X509Certificate.serialNumber hex can drop it), no padding. Node does not expose the AKI, so the leaf's DER is read
// here with a minimal, bounds-checked walk of the fields on the way.
import { X509Certificate } from 'node:crypto'

/** RFC 9773's formula on the raw parts. */
export function certIdFrom(keyIdentifier: Uint8Array, serialContent: Uint8Array): string {
  return `${Buffer.from(keyIdentifier).toString('base64url')}.${Buffer.from(serialContent).toString('base64url')}`
}

interface Tlv {
  tag: number
  /** Offset of the content. */
  start: number
  /** Offset just past the content. */
  end: number
}

function readTlv(der: Uint8Array, at: number, limit: number): Tlv {
  if (at + 2 > limit) throw new Error('truncated DER')
  const tag = der[at]!
  let length = der[at + 1]!
  let start = at + 2
  if (length & 0x80) {
    const count = length & 0x7f
    if (count === 0 || count > 4 || start + count > limit) throw new Error('unsupported DER length')
    length = 0
    for (let i = 0; i < count; i++) length = length * 256 + der[start + i]!
    start += count
  }
  const end = start + length
  if (end > limit) throw new Error('truncated DER')
  return { tag, start, end }
}

/** The children of a constructed TLV. */
function children(der: Uint8Array, parent: Tlv): Tlv[] {
  const out: Tlv[] = []
  for (let at = parent.start; at < parent.end; ) {
    const child = readTlv(der, at, parent.end)
    out.push(child)
    at = child.end
  }
  return out
}

const AKI_OID = Buffer.from([0x55, 0x1d, 0x23]) // 2.5.29.35

/** The CertID of the first certificate of a PEM chain (or of a DER certificate); undefined without an AKI. */
export function certIdOf(certificate: string | Uint8Array): string | undefined {
  const der = typeof certificate === 'string' ? new X509Certificate(certificate).raw : certificate
  const cert = readTlv(der, 0, der.length)
  const tbs = children(der, cert)[0]
  if (!tbs) throw new Error('not a certificate')
  const fields = children(der, tbs)
  // TBSCertificate: [0] version (optional), serialNumber, signature, issuer, validity, subject, spki, ..., [3] exts.
  let i = 0
  if (fields[0]?.tag === 0xa0) i = 1
  const serial = fields[i]
  if (serial?.tag !== 0x02) throw new Error('no serial number')
  const extensions = fields.find((f) => f.tag === 0xa3)
  if (!extensions) return undefined
  const list = children(der, extensions)[0]
  if (!list) return undefined
  for (const ext of children(der, list)) {
    const parts = children(der, ext)
    const oid = parts[0]
    if (oid?.tag !== 0x06 || !Buffer.from(der.subarray(oid.start, oid.end)).equals(AKI_OID)) continue
    // extnValue is the last part (critical is optional): an OCTET STRING holding AuthorityKeyIdentifier.
    const value = parts[parts.length - 1]!
    const aki = readTlv(der, value.start, value.end)
    const keyId = children(der, aki).find((f) => f.tag === 0x80)
    if (!keyId) return undefined
    return certIdFrom(der.subarray(keyId.start, keyId.end), der.subarray(serial.start, serial.end))
  }
  return undefined
}
