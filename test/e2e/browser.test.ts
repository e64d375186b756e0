// A real browser through the proxy: headless Chromium (Debian's `chromium`) trusting only the Pebble root (added to
// a throw-away NSS database under a temporary HOME; where `certutil` from libnss3-tools is missing, the served leaf's
// key is trusted with --ignore-certificate-errors-spki-list instead) loads a page through the proxy preset over HTTPS. The page
// reports the protocol the browser negotiated (Navigation Timing's nextHopProtocol); the test asserts on the page
// content and that protocol (h2).
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { createHash, X509Certificate } from 'node:crypto'
import { accessSync, constants } from 'node:fs'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer, type IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { MemoryStorage } from '@autotls/fastify-acme'
import { startPebble } from '@autotls/pebble-harness'
import { createProxy } from '@autotls/proxy-preset'

const CHROMIUM = process.env['CHROMIUM_BIN'] ?? '/usr/bin/chromium'
const NAME = 'browser.demo.test'

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK)
    return true
  } catch {
    return false
  }
}

function run(file: string, args: string[], env: NodeJS.ProcessEnv, timeout = 60_000) {
  return new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(file, args, { env, timeout, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr })
    })
  })
}

const missing = executable(CHROMIUM) ? undefined : `${CHROMIUM} not found (apt-get install -y chromium)`
const CERTUTIL = '/usr/bin/certutil'
if (missing && process.env['CI'] === 'true') {
  test('browser test prerequisites', () => assert.fail(`CI=true but ${missing}`))
}

test('headless Chromium loads a page through the proxy over HTTPS and HTTP/2', { skip: missing }, async (t) => {
  const pebble = await startPebble()
  const home = await mkdtemp(join(tmpdir(), 'browser-e2e-'))
  const seen: IncomingHttpHeaders[] = []
  const upstream = createServer((req, res) => {
    seen.push(req.headers)
    res.setHeader('content-type', 'text/html; charset=utf-8')
    res.end(
      `<!doctype html><title>e2e</title><h1 id="greeting">Hello through the proxy</h1>` +
        `<p id="proto">${String(req.headers['x-forwarded-proto'])}</p><p id="protocol"></p>` +
        `<script>document.getElementById('protocol').textContent = 'protocol=' + ` +
        `performance.getEntriesByType('navigation')[0].nextHopProtocol</script>`,
    )
  })
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r))
  const proxy = await createProxy({
    logger: false,
    https: { host: '127.0.0.1', port: pebble.tlsPort },
    http: false,
    shutdown: { signals: false },
    acme: {
      directory: pebble.directoryUrl,
      termsOfServiceAgreed: true,
      caRoots: pebble.caBundle,
      storage: new MemoryStorage(),
    },
    routes: [{ host: NAME, upstream: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}` }],
  })
  try {
    await proxy.listen()
    await proxy.acme!.waitForCertificate(NAME)

    // Trust the Pebble root the way a user would on Linux: an NSS database in $HOME/.pki/nssdb.
    const env = { ...process.env, HOME: home }
    const trustFlags: string[] = []
    if (executable(CERTUTIL)) {
      const nssdb = join(home, '.pki', 'nssdb')
      await mkdir(nssdb, { recursive: true })
      const rootFile = join(home, 'pebble-root.pem')
      await writeFile(rootFile, await pebble.issuingRoot())
      for (const args of [
        ['-d', `sql:${nssdb}`, '-N', '--empty-password'],
        ['-d', `sql:${nssdb}`, '-A', '-t', 'C,,', '-n', 'pebble-e2e-root', '-i', rootFile],
      ]) {
        const r = await run(CERTUTIL, args, env)
        assert.equal(r.code, 0, `certutil ${args.join(' ')}: ${r.stderr}`)
      }
    } else {
      // No certutil: trust exactly the key of the certificate the proxy serves (Chromium's SPKI pin flag).
      t.diagnostic('certutil missing (libnss3-tools): trusting the leaf key with --ignore-certificate-errors-spki-list')
      const leaf = new X509Certificate(proxy.resolver.get(NAME)!.cert)
      const spki = leaf.publicKey.export({ type: 'spki', format: 'der' })
      trustFlags.push(`--ignore-certificate-errors-spki-list=${createHash('sha256').update(spki).digest('base64')}`)
    }

    const url = `https://${NAME}:${pebble.tlsPort}/page`
    const browser = await run(
      CHROMIUM,
      [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--disable-dev-shm-usage',
        `--user-data-dir=${join(home, 'profile')}`,
        '--host-resolver-rules=MAP *.demo.test 127.0.0.1',
        '--virtual-time-budget=5000',
        ...trustFlags,
        '--dump-dom',
        url,
      ],
      env,
    )
    assert.equal(browser.code, 0, `chromium failed: ${browser.stderr.slice(-2000)}`)
    const dom = browser.stdout
    assert.match(
      dom,
      /<h1 id="greeting">Hello through the proxy<\/h1>/,
      `page not loaded (certificate refused?):\n${dom.slice(0, 500)}\n${browser.stderr.slice(-1500)}`,
    )
    assert.match(dom, /<p id="protocol">protocol=h2<\/p>/, 'the browser did not negotiate HTTP/2')
    assert.match(dom, /<p id="proto">https<\/p>/)
    assert.ok(seen.length >= 1)
    assert.equal(seen[0]!['x-forwarded-host'], `${NAME}:${pebble.tlsPort}`)
  } finally {
    await proxy.close()
    await new Promise<void>((r) => upstream.close(() => r()))
    await pebble.stop()
    await rm(home, { recursive: true, force: true })
  }
})
