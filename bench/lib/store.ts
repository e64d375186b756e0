// A store of many managed certificates for the SNI-scale runs, written in fastify-acme's FileStorage layout
// (`<root>/<directoryKey>/certificates/<name>.json`, one CertificateRecord each) so the plugin loads it through its
// real storage path. One local CA signs every leaf; each leaf has its own P-256 key. Certificates are DER built
// here and signed with node:crypto (no openssl process per certificate): 100,000 take about a minute.
// The store is cached outside the work tree (run.ts: $BENCH_CACHE) and extended or rebuilt only when too small or near expiry.
import { createHash, createPrivateKey, generateKeyPairSync, type KeyObject, randomBytes, sign } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { type CertificateRecord, directoryKey, recordDigest, recordSeal } from '@autotls/fastify-acme/internal'

/** The ACME directory the store is filed under; never contacted (the SNI server runs with issueOnStart: false). */
export const STORE_DIRECTORY_URL = 'https://acme.bench.invalid/directory'
export const STORE_SUFFIX = 'sni.bench.test'
// 4 (2, 3: older seal formats): records carry a digest and a seal, as the plugin writes them (sealed records load without key parsing).
const VERSION = 4
const LIFETIME_DAYS = 90
const MIN_REMAINING_DAYS = 45

export const storeName = (i: number): string => `n${i}.${STORE_SUFFIX}`

// --- minimal DER ------------------------------------------------------------------------------------------------

function length(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n])
  const bytes: number[] = []
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff)
  return Buffer.from([0x80 | bytes.length, ...bytes])
}
const tlv = (tag: number, ...parts: Buffer[]): Buffer => {
  const body = Buffer.concat(parts)
  return Buffer.concat([Buffer.from([tag]), length(body.length), body])
}
const seq = (...parts: Buffer[]) => tlv(0x30, ...parts)
const set = (...parts: Buffer[]) => tlv(0x31, ...parts)
const integer = (bytes: Buffer) => tlv(0x02, (bytes[0] ?? 0) & 0x80 ? Buffer.concat([Buffer.from([0]), bytes]) : bytes)
const octets = (b: Buffer) => tlv(0x04, b)
const bits = (b: Buffer, unused = 0) => tlv(0x03, Buffer.from([unused]), b)
const TRUE = tlv(0x01, Buffer.from([0xff]))
const explicit = (n: number, inner: Buffer) => tlv(0xa0 + n, inner)

function oid(dotted: string): Buffer {
  const [a = 0, b = 0, ...rest] = dotted.split('.').map(Number)
  const out = [a * 40 + b]
  for (const n of rest) {
    const chunk = [n & 0x7f]
    for (let v = Math.floor(n / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift((v & 0x7f) | 0x80)
    out.push(...chunk)
  }
  return tlv(0x06, Buffer.from(out))
}

function utcTime(d: Date): Buffer {
  const p = (n: number) => String(n).padStart(2, '0')
  const text = `${p(d.getUTCFullYear() % 100)}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}Z`
  return tlv(0x17, Buffer.from(text, 'ascii'))
}

const ECDSA_SHA256 = seq(oid('1.2.840.10045.4.3.2'))
const commonName = (cn: string) => seq(set(seq(oid('2.5.4.3'), tlv(0x0c, Buffer.from(cn, 'utf8')))))
const ext = (id: string, critical: boolean, value: Buffer) =>
  critical ? seq(oid(id), TRUE, octets(value)) : seq(oid(id), octets(value))

function certificate(tbs: Buffer, issuerKey: KeyObject): Buffer {
  return seq(tbs, ECDSA_SHA256, bits(sign('sha256', tbs, issuerKey)))
}

function serial(): Buffer {
  const b = randomBytes(16)
  b[0] = (b[0] ?? 1) & 0x7f || 1
  return b
}

function pem(der: Buffer): string {
  const lines = der.toString('base64').match(/.{1,64}/g) ?? []
  return `-----BEGIN CERTIFICATE-----\n${lines.join('\n')}\n-----END CERTIFICATE-----\n`
}

interface Issuer {
  key: KeyObject
  name: Buffer
  pem: string
}

function makeCa(notBefore: Date, notAfter: Date): { issuer: Issuer; keyPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const name = commonName('autotls bench CA')
  const tbs = seq(
    explicit(0, integer(Buffer.from([2]))),
    integer(serial()),
    ECDSA_SHA256,
    name,
    seq(utcTime(notBefore), utcTime(notAfter)),
    name,
    publicKey.export({ type: 'spki', format: 'der' }),
    explicit(3, seq(ext('2.5.29.19', true, seq(TRUE)), ext('2.5.29.15', true, bits(Buffer.from([0x06]), 1)))),
  )
  return {
    issuer: { key: privateKey, name, pem: pem(certificate(tbs, privateKey)) },
    keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
  }
}

interface LeafKey {
  keyPem: string
  spki: Buffer
}

// Leaf keys come from a pool: key generation and PKCS#8 export cost more than the rest of a certificate under
// OpenSSL 3.0. Every record still carries its own copy of its key, so memory and context building are unchanged.
const KEY_POOL = 256
let pool: LeafKey[] = []
function leafKey(i: number): LeafKey {
  if (pool.length < KEY_POOL) {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
    pool.push({
      keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
      spki: publicKey.export({ type: 'spki', format: 'der' }),
    })
  }
  return pool[i % pool.length]!
}

function makeLeaf(host: string, key: LeafKey, issuer: Issuer, notBefore: Date, notAfter: Date) {
  const serialBytes = serial()
  const tbs = seq(
    explicit(0, integer(Buffer.from([2]))),
    integer(serialBytes),
    ECDSA_SHA256,
    issuer.name,
    seq(utcTime(notBefore), utcTime(notAfter)),
    commonName(host),
    key.spki,
    explicit(
      3,
      seq(
        ext('2.5.29.19', true, seq()),
        ext('2.5.29.15', true, bits(Buffer.from([0x80]), 7)),
        ext('2.5.29.37', false, seq(oid('1.3.6.1.5.5.7.3.1'))),
        ext('2.5.29.17', false, seq(tlv(0x82, Buffer.from(host, 'ascii')))),
      ),
    ),
  )
  return {
    keyPem: key.keyPem,
    certPem: pem(certificate(tbs, issuer.key)),
    serial: serialBytes.toString('hex').toUpperCase(),
  }
}

interface Meta {
  version: number
  count: number
  notBefore: string
  notAfter: string
  caKeyPem: string
  caPem: string
}

export interface Store {
  root: string
  directoryUrl: string
  count: number
  /** Seconds spent generating in this call (0 when the cache was enough). */
  generatedSeconds: number
}

/** Makes sure the store under `root` holds at least `count` certificates, valid for a while yet. */
export function ensureStore(root: string, count: number, log: (line: string) => void = () => {}): Store {
  const metaPath = join(root, 'meta.json')
  let meta: Meta | undefined
  if (existsSync(metaPath)) {
    try {
      meta = JSON.parse(readFileSync(metaPath, 'utf8')) as Meta
    } catch {
      meta = undefined
    }
  }
  const now = Date.now()
  if (meta && (meta.version !== VERSION || Date.parse(meta.notAfter) - now < MIN_REMAINING_DAYS * 86_400_000)) {
    rmSync(root, { recursive: true, force: true })
    meta = undefined
  }
  const certDir = join(root, directoryKey(STORE_DIRECTORY_URL), 'certificates')
  if (meta && meta.count >= count)
    return { root, directoryUrl: STORE_DIRECTORY_URL, count: meta.count, generatedSeconds: 0 }

  const started = performance.now()
  mkdirSync(certDir, { recursive: true, mode: 0o700 })
  let issuer: Issuer
  if (meta) {
    issuer = { key: createPrivateKey(meta.caKeyPem), name: commonName('autotls bench CA'), pem: meta.caPem }
  } else {
    const notBefore = new Date(now - 86_400_000)
    const notAfter = new Date(now + LIFETIME_DAYS * 86_400_000)
    const ca = makeCa(notBefore, notAfter)
    issuer = ca.issuer
    meta = {
      version: VERSION,
      count: 0,
      notBefore: notBefore.toISOString(),
      notAfter: notAfter.toISOString(),
      caKeyPem: ca.keyPem,
      caPem: ca.issuer.pem,
    }
  }
  const notBefore = new Date(meta.notBefore)
  const notAfter = new Date(meta.notAfter)
  pool = []
  log(`generating certificates ${meta.count}..${count - 1} into ${root}`)
  for (let i = meta.count; i < count; i++) {
    const name = storeName(i)
    const leaf = makeLeaf(name, leafKey(i), issuer, notBefore, notAfter)
    const record: CertificateRecord = {
      name,
      keyPem: leaf.keyPem,
      chainPem: `${leaf.certPem}${issuer.pem}`,
      keyType: 'ecdsa-p256',
      notBefore: notBefore.toISOString(),
      notAfter: notAfter.toISOString(),
      serial: leaf.serial,
      issuer: 'CN=autotls bench CA',
      issuedAt: new Date(now).toISOString(),
      digest: recordDigest(leaf.keyPem, `${leaf.certPem}${issuer.pem}`),
    }
    record.seal = recordSeal(record)
    writeFileSync(join(certDir, `${name}.json`), JSON.stringify(record), { mode: 0o600 })
    if ((i + 1) % 20_000 === 0) log(`  ${i + 1} certificates`)
  }
  meta.count = count
  writeFileSync(metaPath, JSON.stringify(meta))
  return {
    root,
    directoryUrl: STORE_DIRECTORY_URL,
    count,
    generatedSeconds: (performance.now() - started) / 1000,
  }
}

/** A short fingerprint of the store's CA, to tell runs on different stores apart in the results. */
export function storeId(root: string): string {
  try {
    return createHash('sha256')
      .update(readFileSync(join(root, 'meta.json')))
      .digest('hex')
      .slice(0, 8)
  } catch {
    return '?'
  }
}
