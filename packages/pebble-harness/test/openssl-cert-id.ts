// An independent CertID for cross-checks: from `openssl x509 -serial -ext authorityKeyIdentifier` text, not from DER.
import { execFile } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)

export async function opensslCertId(pem: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'certid-'))
  try {
    const file = join(dir, 'cert.pem')
    await writeFile(file, pem)
    const { stdout } = await run('openssl', [
      'x509',
      '-in',
      file,
      '-noout',
      '-serial',
      '-ext',
      'authorityKeyIdentifier',
    ])
    const serialHex = /^serial=([0-9A-F]+)$/m.exec(stdout)?.[1]
    const akiHex = /Authority Key Identifier:\s*\n\s*(?:keyid:)?([0-9A-F:]+)/.exec(stdout)?.[1]
    if (!serialHex || !akiHex) throw new Error(`unexpected openssl output:\n${stdout}`)
    // openssl prints the serial's value; DER keeps a leading 0x00 when the high bit is set.
    let serial = serialHex.length % 2 ? `0${serialHex}` : serialHex
    if (Number.parseInt(serial.slice(0, 2), 16) >= 0x80) serial = `00${serial}`
    const b64 = (hex: string) => Buffer.from(hex.replace(/:/g, ''), 'hex').toString('base64url')
    return `${b64(akiHex)}.${b64(serial)}`
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}
