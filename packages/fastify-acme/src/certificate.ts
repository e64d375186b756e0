// Reading and checking certificates: the stored record for one name, and the checks every pair passes before it
// is served (parses, key matches, names covered). Uses node:crypto's X509Certificate only.
import { createHash, createPrivateKey, X509Certificate } from 'node:crypto'
import { ERR_BAD_CERTIFICATE } from './errors.js'

/** What we store per managed name: key and chain together in one file, so they can never be half-written. */
export interface CertificateRecord {
  name: string
  keyPem: string
  chainPem: string
  keyType: string
  notBefore: string
  notAfter: string
  serial: string
  issuer: string
  issuedAt: string
  orderUrl?: string
  /** The ARI CertID (RFC 9773) of the certificate, when it has an AKI. */
  certId?: string
  /** The ACME profile the certificate was ordered with, if any. */
  profile?: string
  /** recordDigest(keyPem, chainPem) when written: finds a file damaged on disk that still parses. */
  digest?: string
  /**
   * recordSeal(record) when written: a digest over the name, key, chain and the metadata above, computed after the
   * pair passed checkPair. A matching seal shows the record is intact since it was written (a plain hash finds
   * damage, not forgery), so loading it needs no key or certificate parsing: its metadata is used as is, and the
   * full check (which also corrects metadata that does not match the certificate) runs after listening.
   */
  seal?: string
}

/** The fields a seal covers, in a fixed order. */
type Sealed = Pick<
  CertificateRecord,
  'name' | 'keyPem' | 'chainPem' | 'keyType' | 'notBefore' | 'notAfter' | 'serial' | 'issuer'
>

/** SHA-256 over the name, key, chain and metadata of a record (see CertificateRecord.seal). */
export function recordSeal(r: Sealed): string {
  // NUL-separated: no field can hold a NUL (PEM, ISO dates, hex, names), and joining is cheaper than JSON here.
  const fields = [
    'autotls-record-v2',
    r.name,
    r.keyPem,
    r.chainPem,
    r.keyType,
    r.notBefore,
    r.notAfter,
    r.serial,
    r.issuer,
  ]
  return createHash('sha256').update(fields.join('\0')).digest('hex')
}

/** SHA-256 over the key and the chain, stored in the record and checked when it is read back. */
export function recordDigest(keyPem: string, chainPem: string): string {
  return createHash('sha256').update(keyPem).update('\0').update(chainPem).digest('hex')
}

export interface CertificateInfo {
  notBefore: Date
  notAfter: Date
  serial: string
  issuer: string
  subjectAltNames: string[]
  leaf: X509Certificate
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g

export function splitChain(chainPem: string): string[] {
  return chainPem.match(PEM_CERT) ?? []
}

/** Parses the leaf of a chain; throws FACME_BAD_CERTIFICATE if it does not parse. */
export function inspectChain(name: string, chainPem: string): CertificateInfo {
  const [first] = splitChain(chainPem)
  if (!first) throw new ERR_BAD_CERTIFICATE(name, 'no PEM certificate found')
  let leaf: X509Certificate
  try {
    leaf = new X509Certificate(first)
  } catch (err) {
    throw new ERR_BAD_CERTIFICATE(name, `does not parse: ${(err as Error).message}`, { cause: err })
  }
  return {
    notBefore: new Date(leaf.validFrom),
    notAfter: new Date(leaf.validTo),
    serial: leaf.serialNumber,
    issuer: leaf.issuer.replace(/\n/g, ', '),
    subjectAltNames: parseSan(leaf.subjectAltName),
    leaf,
  }
}

function parseSan(san: string | undefined): string[] {
  if (!san) return []
  return san
    .split(/,\s*/)
    .filter((part) => part.startsWith('DNS:'))
    .map((part) => part.slice(4).toLowerCase())
}

/**
 * Full check of a key and chain before serving it: parses, key matches the leaf, the name is covered, every
 * certificate of the chain parses. Expiry is reported, not refused: an expired certificate is still better than
 * none while renewal runs.
 */
export function checkPair(name: string, keyPem: string, chainPem: string): CertificateInfo {
  const info = inspectChain(name, chainPem)
  let key: ReturnType<typeof createPrivateKey>
  try {
    key = createPrivateKey(keyPem)
  } catch (err) {
    throw new ERR_BAD_CERTIFICATE(name, `the private key does not parse: ${(err as Error).message}`, { cause: err })
  }
  if (!info.leaf.checkPrivateKey(key)) throw new ERR_BAD_CERTIFICATE(name, 'the private key does not match')
  if (name !== '' && !info.subjectAltNames.includes(name) && !info.leaf.checkHost(name)) {
    throw new ERR_BAD_CERTIFICATE(name, `the certificate does not cover ${name}`)
  }
  const chain = [info.leaf]
  for (const pem of splitChain(chainPem).slice(1)) {
    try {
      chain.push(new X509Certificate(pem))
    } catch (err) {
      throw new ERR_BAD_CERTIFICATE(name, `a chain certificate does not parse: ${(err as Error).message}`)
    }
  }
  // A damaged signature still parses and still matches the key; every client would refuse the chain, so check each
  // link whose issuer is the next certificate (chains sent out of order are left alone).
  for (let i = 0; i + 1 < chain.length; i++) {
    const cert = chain[i]!
    const issuer = chain[i + 1]!
    if (cert.checkIssued(issuer) && !cert.verify(issuer.publicKey)) {
      throw new ERR_BAD_CERTIFICATE(name, `certificate ${i} of the chain is not validly signed by the next one`)
    }
  }
  return info
}

/**
 * Parses a stored record, returning undefined (never throwing) for anything truncated or corrupt, including a digest
 * or seal that does not match. A record returned with a `seal` is therefore sealed and intact.
 */
export function parseRecord(raw: Buffer | undefined): CertificateRecord | undefined {
  if (!raw) return undefined
  try {
    const value = JSON.parse(raw.toString('utf8')) as Partial<CertificateRecord>
    if (typeof value.keyPem !== 'string' || typeof value.chainPem !== 'string' || typeof value.name !== 'string') {
      return undefined
    }
    if (value.seal !== undefined) {
      // The seal covers the key and chain too, so the older digest need not be computed as well.
      for (const field of ['keyType', 'notBefore', 'notAfter', 'serial', 'issuer'] as const) {
        if (typeof value[field] !== 'string') return undefined
      }
      if (Number.isNaN(Date.parse(value.notBefore!)) || Number.isNaN(Date.parse(value.notAfter!))) return undefined
      if (value.seal !== recordSeal(value as Sealed)) return undefined
    } else if (value.digest !== undefined && value.digest !== recordDigest(value.keyPem, value.chainPem)) {
      return undefined
    }
    return value as CertificateRecord
  } catch {
    return undefined
  }
}

/**
 * Whether `a` replaces `b`: it lasts longer; on a tie (two certificates issued within one second) the one stored
 * last, then the higher serial, so every instance settles on the same one.
 */
export function newerRecord(a: CertificateRecord, b: CertificateRecord): boolean {
  const diff = Date.parse(a.notAfter) - Date.parse(b.notAfter)
  if (diff !== 0) return diff > 0
  const issued = (Date.parse(a.issuedAt) || 0) - (Date.parse(b.issuedAt) || 0)
  return issued > 0 || (issued === 0 && a.serial > b.serial)
}
