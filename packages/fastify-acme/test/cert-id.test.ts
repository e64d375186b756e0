// The ARI CertID (RFC 9773): the RFC's own vector, and real certificates made by openssl whose AKI and serial
// openssl prints, including a serial whose high bit is set (its DER keeps a leading 0x00).
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { certIdFrom, certIdOf } from '../src/lifecycle/cert-id.js'

test('RFC 9773 Appendix A vector', () => {
  const aki = Buffer.from('69885b6b87464041e1b37b847ba0ae2cde01c8d4', 'hex')
  const serial = Buffer.from('0087654321', 'hex')
  assert.equal(certIdFrom(aki, serial), 'aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE')
})

function openssl(dir: string, ...args: string[]): string {
  return execFileSync('openssl', args, { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
}

test('CertID of certificates made by openssl matches the AKI and serial openssl prints', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'certid-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes']
  openssl(dir, 'req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=ca')
  openssl(dir, 'req', ...ec, '-keyout', 'leaf.key', '-out', 'leaf.csr', '-subj', '/CN=leaf')
  writeFileSync(join(dir, 'ext'), 'authorityKeyIdentifier=keyid\n')
  // High bit set (DER content 00 87 65 43 21), and a small serial without it.
  for (const serial of ['0x87654321', '0x1234', '0x00ff00ff00ff00ff00ff']) {
    const out = openssl(
      dir,
      'x509',
      '-req',
      '-in',
      'leaf.csr',
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-set_serial',
      serial,
      '-days',
      '1',
      '-extfile',
      'ext',
    )
    writeFileSync(join(dir, 'leaf.pem'), out)
    const printed = openssl(dir, 'x509', '-in', 'leaf.pem', '-noout', '-serial', '-ext', 'authorityKeyIdentifier')
    const hexSerial = /serial=([0-9A-F]+)/.exec(printed)![1]!
    const aki = /([0-9A-F]{2}(?::[0-9A-F]{2})+)/.exec(printed.split('\n').slice(1).join(''))![1]!.replace(/:/g, '')
    // DER INTEGER content: even length, and a leading 00 when the high bit is set.
    let content = hexSerial.length % 2 ? `0${hexSerial}` : hexSerial
    if (Number.parseInt(content.slice(0, 2), 16) >= 0x80) content = `00${content}`
    const expected = certIdFrom(Buffer.from(aki, 'hex'), Buffer.from(content, 'hex'))
    assert.equal(certIdOf(readFileSync(join(dir, 'leaf.pem'), 'utf8')), expected, serial)
  }
})
