// The one certificate every peer serves (ECDSA P-256, and an RSA-2048 one for the RSA handshake runs): a throw-away
// CA and a leaf for `localhost` and 127.0.0.1, made with openssl by the Pebble harness's helper.
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { makeTestCertificates } from '@autotls/pebble-harness'
import type { CertFiles } from './peers.js'

export async function makeCertFiles(dir: string, kind: 'ecdsa' | 'rsa'): Promise<CertFiles> {
  const folder = join(dir, kind)
  await makeTestCertificates({
    names: ['localhost', '127.0.0.1'],
    keyType: kind === 'rsa' ? 'rsa' : 'ec',
    days: 30,
    dir: folder,
  })
  const cert = join(folder, 'cert.pem')
  const key = join(folder, 'key.pem')
  const combined = join(folder, 'combined.pem')
  await writeFile(combined, `${await readFile(cert, 'utf8')}${await readFile(key, 'utf8')}`)
  return { kind, cert, key, combined }
}
