// ARI's certificate identifier (RFC 9773 section 4.1): base64url(AKI keyIdentifier) "." base64url(serial), both
// without padding; the serial is the DER INTEGER's content octets, so a serial whose high bit is set keeps its
// leading 0x00. Computed from the certificate's DER, independently of any ACME client.
import { X509Certificate } from 'node:crypto'
import { readChildren, readTlv } from './der.js'

const TAG_SEQUENCE = 0x30
const TAG_INTEGER = 0x02
const TAG_OID = 0x06
const TAG_BOOLEAN = 0x01
const TAG_OCTET_STRING = 0x04
const TAG_VERSION = 0xa0 // [0] EXPLICIT in TBSCertificate
const TAG_EXTENSIONS = 0xa3 // [3] EXPLICIT in TBSCertificate
const TAG_KEY_IDENTIFIER = 0x80 // [0] IMPLICIT in AuthorityKeyIdentifier
const OID_AUTHORITY_KEY_IDENTIFIER = Buffer.from([0x55, 0x1d, 0x23]) // 2.5.29.35

export interface CertIdParts {
  /** The Authority Key Identifier's keyIdentifier octets. */
  keyIdentifier: Buffer
  /** The serial number's DER content octets (a leading 0x00 kept when present). */
  serial: Buffer
}

/** The CertID string from its two parts. */
export function certIdFromParts(parts: CertIdParts): string {
  return `${parts.keyIdentifier.toString('base64url')}.${parts.serial.toString('base64url')}`
}

/** Reads the AKI keyIdentifier and the serial's content octets from a certificate (PEM: the first one; DER; or X509Certificate). */
export function certIdParts(cert: string | Buffer | X509Certificate): CertIdParts {
  const der =
    cert instanceof X509Certificate ? cert.raw : typeof cert === 'string' ? new X509Certificate(cert).raw : cert
  const certificate = readTlv(der)
  if (certificate.tag !== TAG_SEQUENCE) throw new TypeError('not an X.509 certificate (no outer SEQUENCE)')
  const tbs = readChildren(certificate.value)[0]
  if (tbs?.tag !== TAG_SEQUENCE) throw new TypeError('not an X.509 certificate (no TBSCertificate)')
  const fields = readChildren(tbs.value)
  const serialField = fields[fields[0]?.tag === TAG_VERSION ? 1 : 0]
  if (serialField?.tag !== TAG_INTEGER) throw new TypeError('not an X.509 certificate (no serial number)')
  const extensions = fields.find((f) => f.tag === TAG_EXTENSIONS)
  if (!extensions) throw new TypeError('certificate has no extensions, so no Authority Key Identifier')
  const list = readTlv(extensions.value)
  for (const ext of readChildren(list.value)) {
    const [oid, second, third] = readChildren(ext.value)
    if (oid?.tag !== TAG_OID || !oid.value.equals(OID_AUTHORITY_KEY_IDENTIFIER)) continue
    const extnValue = second?.tag === TAG_BOOLEAN ? third : second
    if (extnValue?.tag !== TAG_OCTET_STRING) throw new TypeError('malformed Authority Key Identifier extension')
    const aki = readTlv(extnValue.value)
    const keyIdentifier = readChildren(aki.value).find((f) => f.tag === TAG_KEY_IDENTIFIER)
    if (!keyIdentifier) throw new TypeError('Authority Key Identifier has no keyIdentifier')
    return { keyIdentifier: Buffer.from(keyIdentifier.value), serial: Buffer.from(serialField.value) }
  }
  throw new TypeError('certificate has no Authority Key Identifier extension')
}

/** ARI CertID of a certificate (PEM: the first certificate in it; DER; or X509Certificate). */
export function ariCertId(cert: string | Buffer | X509Certificate): string {
  return certIdFromParts(certIdParts(cert))
}

/** A serial number as lower-case hex without leading zeros (how the front keys serials; `openssl -serial` style input accepted). */
export function normalizeSerial(serial: string | Buffer): string {
  const hex =
    typeof serial === 'string' ? serial.replace(/^0x/i, '').replace(/[:\s]/g, '').toLowerCase() : serial.toString('hex')
  if (!/^[0-9a-f]+$/.test(hex)) throw new TypeError(`not a hexadecimal serial number: ${String(serial)}`)
  return hex.replace(/^0+(?=.)/, '')
}
