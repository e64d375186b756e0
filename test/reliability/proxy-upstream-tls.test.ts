// Check 18: HTTPS upstreams with invalid certificates are refused (502, no request reaches them) unless explicitly
// allowed. The proxy verifies upstreams against Node's trust store; the only opt-in is trusting the upstream's CA
// for the process (NODE_EXTRA_CA_CERTS), so the proxy runs in a child process twice: with the default trust store
// (every private certificate refused), and trusting the test CA (only the valid certificate accepted; wrong name,
// self-signed and another CA's certificate still refused). The name checked is the Host sent upstream (preserveHost).
import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:https'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { makeTestCertificates } from '@autotls/pebble-harness'
import { figure, killChild, message, spawnTs, tempDir } from './helpers.js'
import { type CertFiles, proxyCertificate } from './proxy-fixture.js'

const FRONT = [
  'valid.up.reliability.test',
  'wrong-name.up.reliability.test',
  'self-signed.up.reliability.test',
  'other-ca.up.reliability.test',
]

let front: CertFiles
let dir: Awaited<ReturnType<typeof tempDir>>
let trustedCa: string
const servers: Server[] = []
const hits = new Map<string, number>()
const upstreams: Record<string, string> = {}

async function httpsUpstream(label: string, key: string, cert: string): Promise<string> {
  const server = createServer({ key, cert }, (_req, res) => {
    hits.set(label, (hits.get(label) ?? 0) + 1)
    res.end('ok')
  })
  servers.push(server)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return `https://127.0.0.1:${(server.address() as AddressInfo).port}`
}

before(async () => {
  front = await proxyCertificate(FRONT)
  dir = await tempDir('upstream-tls')
  // One CA signs the valid certificate and the wrong-name one. With preserveHost (the default) the proxy sends the
  // client's Host upstream and undici verifies the upstream's certificate against that name, so the valid
  // certificate names the public host (and the address, for good measure).
  const valid = await makeTestCertificates({ names: [FRONT[0]!, '127.0.0.1'], dir: join(dir.path, 'valid') })
  trustedCa = valid.caCert
  const { execFileSync } = await import('node:child_process')
  const wrongDir = join(dir.path, 'valid')
  execFileSync(
    'openssl',
    [
      'req',
      '-new',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      'wrong-key.pem',
      '-out',
      'wrong.csr',
      '-subj',
      '/CN=elsewhere.test',
    ],
    { cwd: wrongDir, stdio: 'ignore' },
  )
  await import('node:fs/promises').then((fs) =>
    fs.writeFile(join(wrongDir, 'wrong.ext'), 'subjectAltName = DNS:elsewhere.test\n'),
  )
  execFileSync(
    'openssl',
    [
      'x509',
      '-req',
      '-in',
      'wrong.csr',
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca-key.pem',
      '-set_serial',
      '0x2a',
      '-days',
      '2',
      '-extfile',
      'wrong.ext',
      '-out',
      'wrong.pem',
    ],
    { cwd: wrongDir, stdio: 'ignore' },
  )
  const { readFile } = await import('node:fs/promises')
  const wrongKey = await readFile(join(wrongDir, 'wrong-key.pem'), 'utf8')
  const wrongCert = await readFile(join(wrongDir, 'wrong.pem'), 'utf8')
  const other = await makeTestCertificates({ names: ['127.0.0.1'] })
  // Self-signed: the CA certificate of a throw-away CA used as a leaf.
  const self = await makeTestCertificates({ names: ['127.0.0.1'] })
  upstreams[FRONT[0]!] = await httpsUpstream('valid', valid.key, valid.cert)
  upstreams[FRONT[1]!] = await httpsUpstream('wrong-name', wrongKey, wrongCert)
  upstreams[FRONT[2]!] = await httpsUpstream('self-signed', self.caKey, self.caCert)
  upstreams[FRONT[3]!] = await httpsUpstream('other-ca', other.key, other.cert)
})
after(async () => {
  for (const s of servers) s.close()
  await front?.remove()
  await dir?.remove()
})

async function throughProxy(extraCa: string | undefined): Promise<Record<string, number>> {
  const env: NodeJS.ProcessEnv = {}
  if (extraCa) {
    const path = join(dir.path, 'extra-ca.pem')
    await import('node:fs/promises').then((fs) => fs.writeFile(path, extraCa))
    env['NODE_EXTRA_CA_CERTS'] = path
  } else env['NODE_EXTRA_CA_CERTS'] = ''
  const child = spawnTs('test/reliability/fixtures/proxy-tls-upstreams.ts', [], env)
  if (process.env['PROXY_LOG']) child.stdout?.on('data', (d: Buffer) => process.stderr.write(d))
  try {
    child.send({ cert: front.cert, key: front.key, ca: front.ca, upstreams })
    return (await message<{ results: Record<string, number> }>(child, (m) => 'results' in m, 60_000)).results
  } finally {
    await killChild(child)
  }
}

test('check 18: upstreams with invalid certificates are refused unless explicitly trusted', async () => {
  const untrusted = await throughProxy(undefined)
  const hitsUntrusted = new Map(hits)
  const trusted = await throughProxy(trustedCa)
  const label = (host: string) => host.split('.')[0]
  figure(
    `check 18: default trust store: ${Object.entries(untrusted)
      .map(([h, s]) => `${label(h)} ${s}`)
      .join(', ')} (${[...hitsUntrusted.values()].reduce((a, b) => a + b, 0)} requests reached an upstream); ` +
      `CA trusted via NODE_EXTRA_CA_CERTS: ${Object.entries(trusted)
        .map(([h, s]) => `${label(h)} ${s}`)
        .join(
          ', ',
        )}; requests that reached the invalid upstreams: ${['wrong-name', 'self-signed', 'other-ca'].map((l) => hits.get(l) ?? 0).reduce((a, b) => a + b, 0)}`,
  )
  for (const host of FRONT) assert.equal(untrusted[host], 502, `${host} without trust`)
  assert.equal(hitsUntrusted.size, 0)
  assert.equal(trusted[FRONT[0]!], 200)
  for (const host of FRONT.slice(1)) assert.equal(trusted[host], 502, `${host} with the CA trusted`)
  for (const l of ['wrong-name', 'self-signed', 'other-ca']) assert.equal(hits.get(l) ?? 0, 0, l)
})
