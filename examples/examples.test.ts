// The examples are part of the suite: each runs against real things (Pebble for ACME, openssl-made certificates)
// and is checked with a real client; the demo runs in --check mode as a child process, as `pnpm demo --check` does.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { connect as h2connect } from 'node:http2'
import { request } from 'node:https'
import { after, before, describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { MemoryStorage } from '@autotls/fastify-acme'
import { type Pebble, startPebble } from '@autotls/pebble-harness'
import { main as pluginInApp } from './plugin-in-app.js'
import { config as acmeConfig, main as presetAcme } from './preset-acme.js'
import { main as presetManual } from './preset-manual.js'

function get(
  port: number,
  name: string,
  ca: string,
  path = '/',
): Promise<{ status: number; body: string; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, path, servername: name, headers: { host: name }, ca, agent: false },
      (res) => {
        let body = ''
        res.on('data', (c: Buffer) => {
          body += c.toString()
        })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }))
      },
    )
    req.on('error', reject)
    req.end()
  })
}

function getH2(port: number, name: string, ca: string, path = '/'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const session = h2connect(`https://127.0.0.1:${port}`, { ca, servername: name })
    session.on('error', reject)
    const stream = session.request({ ':path': path, ':authority': name })
    let status = 0
    let body = ''
    stream.on('response', (h) => {
      status = Number(h[':status'])
    })
    stream.on('data', (c: Buffer) => {
      body += c.toString()
    })
    stream.on('end', () => {
      session.close()
      resolve({ status, body })
    })
    stream.on('error', reject)
    stream.end()
  })
}

describe('examples against Pebble', () => {
  let pebble: Pebble
  let root: string
  before(async () => {
    pebble = await startPebble()
    root = await pebble.issuingRoot()
  })
  after(async () => {
    await pebble?.stop()
  })

  test('plugin-in-app: fastify-acme in an ordinary app, HTTP/2 and HTTP-01 listener', async () => {
    const running = await pluginInApp({
      names: ['plugin.examples.test'],
      acme: {
        directory: pebble.directoryUrl,
        termsOfServiceAgreed: true,
        caRoots: pebble.caBundle,
        storage: new MemoryStorage(),
      },
      host: '127.0.0.1',
      httpsPort: pebble.tlsPort,
      httpPort: pebble.httpPort,
      logger: false,
    })
    try {
      await running.app.acme.waitForCertificate('plugin.examples.test')
      const res = await getH2(pebble.tlsPort, 'plugin.examples.test', root)
      assert.equal(res.status, 200)
      assert.equal(JSON.parse(res.body).protocol, 'h2')
    } finally {
      await running.close()
    }
  })

  test('preset-acme: the documented configuration, pointed at Pebble', async () => {
    const { createServer } = await import('node:http')
    const upstream = createServer((req, res) => res.end(`upstream saw ${req.headers.host}${req.url}`))
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r))
    const upstreamUrl = `http://127.0.0.1:${(upstream.address() as import('node:net').AddressInfo).port}`
    const base = acmeConfig()
    const proxy = await presetAcme({
      logger: false,
      https: { host: '127.0.0.1', port: pebble.tlsPort },
      http: { host: '127.0.0.1', port: pebble.httpPort },
      shutdown: { signals: false },
      acme: { ...base.acme!, directory: pebble.directoryUrl, caRoots: pebble.caBundle, storage: new MemoryStorage() },
      // Same routes as the example, pointed at a local upstream.
      routes: base.routes.map((r) => ({ ...r, upstream: upstreamUrl })),
    })
    try {
      await Promise.all(['example.com', 'api.example.com'].map((n) => proxy.acme!.waitForCertificate(n)))
      assert.equal((await get(pebble.tlsPort, 'example.com', root, '/x')).body, 'upstream saw example.com/x')
      assert.equal(
        (await getH2(pebble.tlsPort, 'api.example.com', root, '/v1/y')).body,
        'upstream saw api.example.com/v1/y',
      )
    } finally {
      await proxy.close()
      await new Promise<void>((r) => upstream.close(() => r()))
    }
  })
})

test('preset-manual: self-signed certificates made on the fly, exact and wildcard hosts', async () => {
  const running = await presetManual({ httpsPort: 0, logger: false })
  try {
    const port = running.proxy.addresses().https.port
    const site = await get(port, 'site.manual.test', running.ca, '/a?b=c')
    assert.equal(site.status, 200)
    assert.match(site.body, /hello from the upstream: site\.manual\.test \/a\?b=c via https/)
    const app = await getH2(port, 'one.apps.manual.test', running.ca)
    assert.equal(app.status, 200)
    const unknown = await get(port, 'site.manual.test', running.ca).then(() =>
      get(port, 'other.manual.test', running.ca).catch((e: NodeJS.ErrnoException) => e),
    )
    // No certificate for a name the example does not serve: the handshake is refused with the unrecognized_name
    // alert (RFC 6066), not answered with some other certificate the client would then reject.
    assert.ok(unknown instanceof Error, 'the request to an unserved name failed')
    assert.match(unknown.message, /unrecognized name.*alert number 112/, unknown.message)
  } finally {
    await running.close()
  }
})

test('demo --check prints one OK line and exits 0', async () => {
  const demo = fileURLToPath(new URL('./demo.ts', import.meta.url))
  const child = spawn(process.execPath, ['--import', 'tsx', '--conditions=source', demo, '--check'], {
    cwd: fileURLToPath(new URL('..', import.meta.url)),
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  let err = ''
  child.stdout.on('data', (c: Buffer) => {
    out += c.toString()
  })
  child.stderr.on('data', (c: Buffer) => {
    err += c.toString()
  })
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve))
  assert.equal(code, 0, `demo --check failed:\n${out}\n${err}`)
  const lines = out.trim().split('\n')
  assert.equal(lines.length, 1, out)
  assert.match(lines[0]!, /^demo: OK .*app\.demo\.test.* 200 h2.*api\.demo\.test.*Pebble Intermediate CA.*verified/)
})
