// ARI CertID (RFC 9773): the RFC's own vector, a certificate built to carry it, and a cross-check against openssl.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { promisify } from 'node:util'
import { readTlv } from '../src/der.js'
import { ariCertId, certIdFromParts, certIdParts, normalizeSerial } from '../src/index.js'
import { opensslCertId } from './openssl-cert-id.js'

const run = promisify(execFile)
const RFC_VECTOR = 'aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE'
const RFC_AKI = '69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4'

/** A CA whose key identifier is the RFC's, and a leaf under it with the given serial. */
async function leafWith(serial: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'certid-test-'))
  try {
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes']
    await run(
      'openssl',
      ['req', '-x509', ...ec, '-keyout', join(dir, 'ca.key'), '-out', join(dir, 'ca.pem')].concat([
        '-subj',
        '/CN=certid test CA',
        '-days',
        '1',
        '-addext',
        `subjectKeyIdentifier=${RFC_AKI}`,
      ]),
    )
    await run('openssl', [
      'req',
      '-new',
      ...ec,
      '-keyout',
      join(dir, 'leaf.key'),
      '-subj',
      '/CN=leaf',
      '-out',
      join(dir, 'leaf.csr'),
    ])
    await writeFile(join(dir, 'ext.cnf'), 'authorityKeyIdentifier=keyid\n')
    await run(
      'openssl',
      ['x509', '-req', '-in', join(dir, 'leaf.csr'), '-CA', join(dir, 'ca.pem')].concat(
        ['-CAkey', join(dir, 'ca.key'), '-set_serial', serial, '-days', '1', '-extfile', join(dir, 'ext.cnf')],
        ['-out', join(dir, 'leaf.pem')],
      ),
    )
    return await readFile(join(dir, 'leaf.pem'), 'utf8')
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

test('CertID: the RFC 9773 Appendix A vector from its parts', () => {
  const keyIdentifier = Buffer.from(RFC_AKI.replace(/:/g, ''), 'hex')
  // Serial 0x87654321 has its high bit set: DER content octets are 00 87 65 43 21.
  const serial = Buffer.from('0087654321', 'hex')
  assert.equal(certIdFromParts({ keyIdentifier, serial }), RFC_VECTOR)
})

test('CertID: a certificate carrying the RFC values gives the RFC vector; openssl agrees', async () => {
  const pem = await leafWith('0x87654321')
  assert.equal(ariCertId(pem), RFC_VECTOR)
  assert.equal(await opensslCertId(pem), RFC_VECTOR)
  assert.deepEqual(certIdParts(pem).serial, Buffer.from('0087654321', 'hex'))
  // A serial without the high bit set gets no leading zero.
  const low = await leafWith('0x12345678')
  assert.equal(ariCertId(low), `${RFC_VECTOR.split('.')[0]}.${Buffer.from('12345678', 'hex').toString('base64url')}`)
  assert.equal(await opensslCertId(low), ariCertId(low))
})

test('CertID: refuses what is not a certificate with an AKI; serials normalise', async () => {
  assert.throws(() => ariCertId(Buffer.from([0x30, 0x05, 0x02])), RangeError)
  assert.throws(() => readTlv(Buffer.from([0x30, 0x85, 1, 2, 3, 4, 5])), RangeError)
  assert.equal(normalizeSerial('00:87:65:43:21'), '87654321')
  assert.equal(normalizeSerial('0x0A'), 'a')
  assert.equal(normalizeSerial(Buffer.from('0087654321', 'hex')), '87654321')
  assert.throws(() => normalizeSerial('xyz'), TypeError)
})
