// Check 13: protocol and cipher scan with Debian's nmap (ssl-enum-ciphers) and openssl s_client, on the plugin's
// server (certificates served by SNI from the resolver) and on the proxy preset: nothing below TLS 1.2, no weak
// suite (nmap grade below A, or NULL/anon/EXPORT/RC4/DES/3DES/MD5/PSK), and TLS options a user sets (cipher list,
// minimum version) apply to certificates served by SNI too, not only to the default context.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { acmeServerFactory, CertResolver } from '@autotls/fastify-acme'
import { makeTestCertificates } from '@autotls/pebble-harness'
import { createProxy, type ProxyHandle } from '@autotls/proxy-preset'
import Fastify, { type FastifyInstance } from 'fastify'
import { figure, run, tempDir } from './helpers.js'

const NAME = 'scan.reliability.test'
const WEAK = /NULL|anon|EXPORT|RC4|_DES_|3DES|MD5|PSK/i

interface Scan {
  versions: string[]
  ciphers: Record<string, string[]>
  grades: string[]
  least: string
  raw: string
}

async function nmap(port: number): Promise<Scan> {
  const { code, out } = await run('nmap', [
    '-Pn',
    '-p',
    String(port),
    '--script',
    'ssl-enum-ciphers',
    '--script-args',
    `tls.servername=${NAME}`,
    '127.0.0.1',
  ])
  assert.equal(code, 0, out)
  const versions: string[] = []
  const ciphers: Record<string, string[]> = {}
  const grades: string[] = []
  let current: string | undefined
  for (const line of out.split('\n')) {
    const version = /^\|\s+(SSLv\d|TLSv1(?:\.\d)?):\s*$/.exec(line)
    if (version) {
      current = version[1]!
      versions.push(current)
      ciphers[current] = []
      continue
    }
    const cipher = /^\|\s+(TLS_\w+)\s.*-\s+([A-F])\s*$/.exec(line)
    if (cipher && current) {
      ciphers[current]!.push(cipher[1]!)
      grades.push(cipher[2]!)
    }
  }
  const least = /least strength: ([A-F])/.exec(out)?.[1] ?? '?'
  return { versions, ciphers, grades, least, raw: out }
}

async function sclient(port: number, flag: string): Promise<string> {
  const { out } = await run('timeout', [
    '10',
    'openssl',
    's_client',
    '-connect',
    `127.0.0.1:${port}`,
    '-servername',
    NAME,
    flag,
  ])
  const session = /New, (\S+), Cipher is (\S+)/.exec(out)
  return session && session[2] !== '(NONE)' ? session[1]!.replace(/,$/, '') : 'refused'
}

function judge(label: string, scan: Scan, legacy: Record<string, string>): string {
  assert.ok(scan.versions.length > 0, `${label}: nmap found no TLS: ${scan.raw}`)
  for (const version of scan.versions)
    assert.ok(version === 'TLSv1.2' || version === 'TLSv1.3', `${label}: ${version} offered`)
  const all = Object.values(scan.ciphers).flat()
  const weak = all.filter((c) => WEAK.test(c))
  assert.deepEqual(weak, [], `${label}: weak suites offered`)
  assert.ok(
    scan.grades.every((g) => g === 'A'),
    `${label}: grades ${scan.grades.join('')}`,
  )
  for (const [flag, result] of Object.entries(legacy)) assert.equal(result, 'refused', `${label}: ${flag} accepted`)
  const cbc = all.filter((c) => /CBC/.test(c)).length
  return (
    `${label}: ${scan.versions.join(' + ')} only (${Object.entries(scan.ciphers)
      .map(([v, c]) => `${v} ${c.length} suites`)
      .join(', ')}), least strength ${scan.least}, 0 weak, ${cbc} CBC (graded A); ` +
    `s_client ${Object.entries(legacy)
      .map(([f, r]) => `${f} ${r}`)
      .join(', ')}`
  )
}

describe('check 13: protocol and cipher scan', () => {
  let app: FastifyInstance
  let restricted: FastifyInstance
  let proxy: ProxyHandle
  let certs: Awaited<ReturnType<typeof makeTestCertificates>>
  let dir: Awaited<ReturnType<typeof tempDir>>
  const rows: string[] = []

  before(async () => {
    dir = await tempDir('scan')
    certs = await makeTestCertificates({ names: [NAME], dir: dir.path })
    const start = async (tls: Record<string, unknown>) => {
      const resolver = new CertResolver()
      resolver.set(NAME, { key: certs.key, cert: certs.cert })
      const instance = Fastify({
        serverFactory: acmeServerFactory({ resolver, tls }),
      } as never) as unknown as FastifyInstance
      instance.get('/', async () => 'ok')
      await instance.listen({ port: 0, host: '127.0.0.1' })
      return instance
    }
    app = await start({})
    restricted = await start({ ciphers: 'ECDHE-ECDSA-AES256-GCM-SHA384', minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' })
    proxy = await createProxy({
      logger: false,
      http: false,
      https: { host: '127.0.0.1', port: 0 },
      certificates: [{ cert: `${dir.path}/cert.pem`, key: `${dir.path}/key.pem` }],
      routes: [{ host: NAME, upstream: 'http://127.0.0.1:9' }],
    })
    await proxy.listen()
  })
  after(async () => {
    await Promise.all([app?.close(), restricted?.close(), proxy?.close()])
    await dir?.remove()
    if (rows.length > 0) figure(`check 13: ${rows.join('; ')}`)
  })

  const legacyProbe = async (port: number) => ({
    '-tls1': await sclient(port, '-tls1'),
    '-tls1_1': await sclient(port, '-tls1_1'),
  })

  test('the plugin server (SNI certificates): TLS 1.2+ only, no weak suites', async () => {
    const port = (app.server.address() as { port: number }).port
    rows.push(judge('plugin defaults', await nmap(port), await legacyProbe(port)))
  })

  test('the proxy preset: TLS 1.2+ only, no weak suites', async () => {
    const port = proxy.addresses().https.port
    rows.push(judge('proxy preset', await nmap(port), await legacyProbe(port)))
  })

  test("a user's cipher list and version range apply to SNI-served certificates too", async () => {
    const port = (restricted.server.address() as { port: number }).port
    const scan = await nmap(port)
    rows.push(
      `plugin with tls { ciphers: one suite, TLS 1.2 only }: nmap sees ${scan.versions.join(' + ')}, ${Object.values(scan.ciphers).flat().join(', ')}`,
    )
    assert.deepEqual(scan.versions, ['TLSv1.2'])
    assert.deepEqual(Object.values(scan.ciphers).flat(), ['TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384'])
  })
})
