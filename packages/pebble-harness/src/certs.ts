// Owns throw-away certificate generation with the openssl CLI: a CA plus one leaf, for Pebble's own HTTPS listener
// and for tests that need a certificate that did not come from ACME.
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { isIP } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** Options of {@link makeTestCertificates}. */
export interface TestCertificateOptions {
  /** Subject alternative names of the leaf: host names become DNS SANs, IPv4/IPv6 literals become IP SANs. */
  names: string[]
  /** Key type of both the CA and the leaf: `'ec'` (P-256, default) or `'rsa'` (2048 bits). */
  keyType?: 'ec' | 'rsa'
  /** Validity of both certificates in whole days, starting now. Default 30. */
  days?: number
  /**
   * Directory to keep the files in (`ca.pem`, `ca-key.pem`, `cert.pem`, `key.pem`); created if missing and left in
   * place. Without it a temporary directory is used and removed.
   */
  dir?: string
}

/** PEMs returned by {@link makeTestCertificates}. */
export interface TestCertificates {
  /** Self-signed CA certificate: trust this to accept `cert`. */
  caCert: string
  /** PKCS#8 private key of the CA. */
  caKey: string
  /** Leaf certificate signed by the CA, with the requested SANs and serverAuth. */
  cert: string
  /** PKCS#8 private key of the leaf. */
  key: string
}

function openssl(args: string[], cwd: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('openssl', args, { cwd }, (error, _stdout, stderr) => {
      if (error) reject(new Error(`openssl ${args[0]} failed: ${error.message}\n${stderr}`, { cause: error }))
      else resolve()
    })
  })
}

function newKeyArgs(keyType: 'ec' | 'rsa'): string[] {
  return keyType === 'ec' ? ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'] : ['-newkey', 'rsa:2048']
}

// openssl would otherwise read its own -subj/-extfile syntax out of a caller's string.
function checkName(name: string): void {
  if (name.length === 0 || /[\s,/=\\"']/.test(name))
    throw new TypeError(`unsupported certificate name: ${JSON.stringify(name)}`)
}

/**
 * Generate a throw-away CA and a leaf certificate for `names` with the `openssl` CLI.
 *
 * The leaf carries the names as DNS/IP SANs (the first one also as CN) and serverAuth; the CA and the leaf share
 * `keyType`. Throws with openssl's stderr when the CLI fails.
 */
export async function makeTestCertificates(opts: TestCertificateOptions): Promise<TestCertificates> {
  const { names, keyType = 'ec', days = 30 } = opts
  if (names.length === 0) throw new TypeError('makeTestCertificates needs at least one name')
  for (const name of names) checkName(name)
  if (keyType !== 'ec' && keyType !== 'rsa') throw new TypeError(`unsupported keyType: ${String(keyType)}`)
  if (!Number.isInteger(days) || days < 1) throw new TypeError(`days must be a positive integer, got ${days}`)

  const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), 'autotls-certs-')))
  if (opts.dir) await mkdir(opts.dir, { recursive: true })
  try {
    const san = names.map((name) => (isIP(name) ? `IP:${name}` : `DNS:${name}`)).join(',')
    const keyUsage = keyType === 'rsa' ? 'digitalSignature,keyEncipherment' : 'digitalSignature'
    await writeFile(
      join(dir, 'leaf.ext'),
      [
        'basicConstraints = critical, CA:FALSE',
        `keyUsage = critical, ${keyUsage}`,
        'extendedKeyUsage = serverAuth',
        `subjectAltName = ${san}`,
        'subjectKeyIdentifier = hash',
        'authorityKeyIdentifier = keyid',
        '',
      ].join('\n'),
    )
    // Random serials: two runs must never issue certificates a TLS session cache could confuse.
    const serial = () => `0x${randomBytes(16).toString('hex')}`
    await openssl(
      [
        'req',
        '-x509',
        ...newKeyArgs(keyType),
        '-nodes',
        '-keyout',
        'ca-key.pem',
        '-out',
        'ca.pem',
        '-days',
        String(days),
        '-subj',
        `/CN=autotls test CA ${randomBytes(4).toString('hex')}`,
        '-set_serial',
        serial(),
        '-addext',
        'basicConstraints=critical,CA:TRUE',
        '-addext',
        'keyUsage=critical,keyCertSign,cRLSign',
      ],
      dir,
    )
    await openssl(
      [
        'req',
        '-new',
        ...newKeyArgs(keyType),
        '-nodes',
        '-keyout',
        'key.pem',
        '-out',
        'leaf.csr',
        '-subj',
        `/CN=${names[0]}`,
      ],
      dir,
    )
    await openssl(
      [
        'x509',
        '-req',
        '-in',
        'leaf.csr',
        '-CA',
        'ca.pem',
        '-CAkey',
        'ca-key.pem',
        '-set_serial',
        serial(),
        '-days',
        String(days),
        '-extfile',
        'leaf.ext',
        '-out',
        'cert.pem',
      ],
      dir,
    )
    const [caCert, caKey, cert, key] = await Promise.all(
      ['ca.pem', 'ca-key.pem', 'cert.pem', 'key.pem'].map((file) => readFile(join(dir, file), 'utf8')),
    )
    return { caCert: caCert!, caKey: caKey!, cert: cert!, key: key! }
  } finally {
    if (opts.dir) await Promise.all(['leaf.csr', 'leaf.ext'].map((file) => rm(join(dir, file), { force: true })))
    else await rm(dir, { recursive: true, force: true })
  }
}
