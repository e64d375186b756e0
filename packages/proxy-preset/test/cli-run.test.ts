// `autotls run` as an operator runs it: a real process on a YAML file (the CA root and the admin token come from the
// environment), one host over ACME from Pebble (TLS-ALPN-01) and one from certificate files, both answering
// HTTP/2 and HTTP/1.1 requests; `autotls status` and /metrics (parsed as Prometheus text) agree with what happened;
// an edit of the file adds a route, SIGHUP with a broken file is refused and counted, `autotls reload` applies the
// fixed file; SIGTERM stops it with exit 0. A port already in use is refused naming the listener.
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { freePort, type Pebble, startPebble } from '@autotls/pebble-harness'
import { type CertFiles, CLI, certFiles, h1, h2, json, runCli, startUpstream, type Upstream } from './helpers.js'
import { parseMetrics, sample } from './prometheus.js'

const TOKEN = 'run-test-admin-token-0123456789'
const ACME_HOST = 'acme.run.test'
const FILE_HOST = 'files.run.test'
const ADDED_HOST = 'added.run.test'

function startRun(
  config: string,
  env: NodeJS.ProcessEnv,
): { child: ChildProcess; ready: Promise<void>; exit: Promise<number> } {
  // From the sources, or the installed bin (AUTOTLS_CLI_BIN: the pack-and-install test runs this file that way).
  const installed = process.env['AUTOTLS_CLI_BIN']
  const command = installed ?? process.execPath
  const args = installed ? ['run', '-c', config] : ['--import', 'tsx', '--conditions=source', CLI, 'run', '-c', config]
  const child = spawn(command, args, {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stderr = ''
  const ready = new Promise<void>((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString()
      if (stderr.includes('autotls: serving')) resolve()
    })
    child.once('exit', (code) => reject(new Error(`autotls run exited with ${code}: ${stderr}`)))
  })
  child.stdout!.resume()
  const exit = new Promise<number>((resolve) => child.once('exit', (code) => resolve(code ?? -1)))
  return { child, ready, exit }
}

describe('autotls run', () => {
  let pebble: Pebble
  let root: string
  let upstream: Upstream
  let files: CertFiles
  let dir: string
  before(async () => {
    pebble = await startPebble()
    root = await pebble.issuingRoot()
    upstream = await startUpstream('app')
    files = await certFiles([FILE_HOST, ADDED_HOST])
    dir = await mkdtemp(join(tmpdir(), 'autotls-run-'))
  })
  after(async () => {
    await upstream?.close()
    await files?.remove()
    await pebble?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  test('ACME (Pebble) and files, status, metrics, reload by file change, SIGHUP and `autotls reload`', async (t) => {
    const adminPort = await freePort()
    const file = join(dir, 'autotls.yaml')
    const yaml = (extraRoutes: string) => `# autotls run test
https: { host: 127.0.0.1, port: ${pebble.tlsPort} }
http: false
admin: { port: ${adminPort}, token: "\${ADMIN_TOKEN}" }
acme:
  directory: ${pebble.directoryUrl}
  termsOfServiceAgreed: true
  caRoots: "\${PEBBLE_CA}"
  cacheDir: ${join(dir, 'acme')}
certificates:
  - { cert: ${files.cert}, key: ${files.key} }
routes:
  - { host: ${ACME_HOST}, upstream: ${upstream.url} }
  - { host: ${FILE_HOST}, upstream: ${upstream.url} }
${extraRoutes}`
    await writeFile(file, yaml(''))
    const env = { ADMIN_TOKEN: TOKEN, PEBBLE_CA: pebble.caBundle }
    const started = performance.now()
    const run = startRun(file, env)
    t.after(() => run.child.kill('SIGKILL'))
    await run.ready
    const admin = `http://127.0.0.1:${adminPort}`
    const get = async (path: string) => {
      const res = await fetch(`${admin}${path}`, { headers: { authorization: `Bearer ${TOKEN}` } })
      assert.equal(res.status, 200, path)
      return res.text()
    }
    // The certificate is ordered in the background: wait for the status to say so.
    let status: { certificates: Array<Record<string, string>>; generation: number }
    for (;;) {
      status = JSON.parse(await get('/status'))
      if (status.certificates.find((c) => c['name'] === ACME_HOST)?.['state'] === 'valid') break
      await new Promise((r) => setTimeout(r, 100))
    }
    const acmeReply = await h2({ port: pebble.tlsPort, host: ACME_HOST, path: '/x', ca: root })
    assert.equal(acmeReply.status, 200)
    assert.equal(json(acmeReply)['url'], '/x')
    const fileReply = await h1({ port: pebble.tlsPort, host: FILE_HOST, ca: files.ca })
    assert.equal(fileReply.status, 200)
    t.diagnostic(`ACME certificate served ${((performance.now() - started) / 1000).toFixed(1)} s after start`)

    // Admin: a token is required; status and metrics agree with what happened.
    assert.equal((await fetch(`${admin}/status`)).status, 401)
    const acmeStatus = status.certificates.find((c) => c['name'] === ACME_HOST)!
    assert.match(acmeStatus['issuer'] ?? '', /Pebble/i)
    const metricsText = await get('/metrics')
    const families = parseMetrics(metricsText)
    assert.equal(sample(families, 'autotls_acme_orders_total', { result: 'issued' }), 1)
    // Every request to the CA of that order is timed: directory, account, new order, ..., certificate download.
    // (The parser drops histogram labels and counts: the raw _count lines are read.)
    const timed = [...metricsText.matchAll(/^autotls_acme_request_duration_seconds_count\{[^}]*\} (\d+)$/gm)]
    assert.ok(timed.reduce((sum, m) => sum + Number(m[1]), 0) >= 6, `${timed.length} steps timed`)
    for (const step of ['new order', 'finalize', 'certificate download']) {
      assert.match(
        metricsText,
        new RegExp(`autotls_acme_request_duration_seconds_count\\{step="${step}",outcome="ok"\\} 1`),
      )
    }
    assert.equal(
      sample(families, 'autotls_certificate_not_after_seconds', { name: ACME_HOST, source: 'acme' }),
      Date.parse(acmeStatus['notAfter']!) / 1000,
    )
    assert.ok(sample(families, 'autotls_certificate_next_renewal_seconds', { name: ACME_HOST })! > Date.now() / 1000)
    assert.ok(sample(families, 'autotls_certificate_not_after_seconds', { name: FILE_HOST, source: 'file' })! > 0)
    assert.equal(sample(families, 'autotls_proxy_requests_total', { route: `${ACME_HOST}/`, status: '200' }), 1)
    assert.equal(sample(families, 'autotls_proxy_requests_total', { route: `${FILE_HOST}/`, status: '200' }), 1)
    assert.ok(sample(families, 'autotls_tls_handshakes_total', { outcome: 'challenge' })! >= 1, 'TLS-ALPN-01 counted')

    const printed = await runCli(['status', '-c', file], env)
    assert.equal(printed.code, 0, printed.stderr)
    assert.match(printed.stdout, new RegExp(`${ACME_HOST.replace(/\./g, '\\.')} +acme +valid`))
    assert.match(printed.stdout, new RegExp(`${FILE_HOST.replace(/\./g, '\\.')} +file +valid`))

    // 1. An edit of the file adds a route (served from the files' certificate, which covers it).
    await writeFile(file, yaml(`  - { host: ${ADDED_HOST}, upstream: ${upstream.url} }\n`))
    for (;;) {
      const res = await h1({ port: pebble.tlsPort, host: ADDED_HOST, ca: files.ca })
      if (res.status === 200) break
      assert.equal(res.status, 421)
      await new Promise((r) => setTimeout(r, 50))
    }
    // 2. A broken file on SIGHUP: refused (counted), the running configuration kept.
    await writeFile(join(dir, 'broken.yaml'), yaml(`  - { host: ${ADDED_HOST}, upstream: 127.0.0.1:1 }\n`))
    const refusedBefore =
      sample(parseMetrics(await get('/metrics')), 'autotls_config_reloads_total', { result: 'refused' }) ?? 0
    const broken = await runCli(['check', '-c', join(dir, 'broken.yaml')], env)
    assert.equal(broken.code, 1)
    await writeFile(file, yaml(`  - { host: ${ADDED_HOST}, upstream: 127.0.0.1:1 }\n`))
    run.child.kill('SIGHUP')
    for (;;) {
      const refused =
        sample(parseMetrics(await get('/metrics')), 'autotls_config_reloads_total', { result: 'refused' }) ?? 0
      if (refused >= refusedBefore + 1) break
      await new Promise((r) => setTimeout(r, 50))
    }
    assert.equal((await h1({ port: pebble.tlsPort, host: ADDED_HOST, ca: files.ca })).status, 200)
    const refusedReload = await runCli(['reload', '-c', file], env)
    assert.equal(refusedReload.code, 1)
    assert.match(refusedReload.stderr, /autotls\.yaml:\d+:\d+: .*routes\.2\.upstream.*write "http:\/\/127\.0\.0\.1:1"/)

    // 3. The fixed file through `autotls reload`.
    await writeFile(file, yaml(''))
    const reloaded = await runCli(['reload', '-c', file], env)
    assert.equal(reloaded.code, 0, reloaded.stderr)
    assert.match(reloaded.stdout, /reloaded: configuration generation \d+/)
    assert.equal((await h1({ port: pebble.tlsPort, host: ADDED_HOST, ca: files.ca })).status, 421)

    run.child.kill('SIGTERM')
    assert.equal(await run.exit, 0)
  })

  test('a port in use is refused naming the listener', async () => {
    const blocker = createServer()
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r))
    const port = (blocker.address() as { port: number }).port
    try {
      const file = join(dir, 'busy.yaml')
      await writeFile(
        file,
        `https: { host: 127.0.0.1, port: 0 }\nhttp: false\nadmin: { port: ${port} }\ncertificates: [{ cert: ${files.cert}, key: ${files.key} }]\nroutes: [{ host: ${FILE_HOST}, upstream: ${upstream.url} }]\n`,
      )
      const run = startRun(file, {})
      await assert.rejects(
        run.ready,
        /the admin listener cannot listen on 127\.0\.0\.1:\d+: the port is in use.*admin\.port/,
      )
      assert.equal(await run.exit, 1)
    } finally {
      blocker.close()
    }
  })
})
