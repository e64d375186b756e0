// `autotls run` with `workers: 2` in the file (certificate files, no ACME: see workers.test.ts for ACME): the
// primary forks two workers, both answer requests (their pids in the access log), SIGTERM to the primary drains
// both and it exits 0 with no worker left. A port in use fails the start with exit 1 instead of forking forever.
import assert from 'node:assert/strict'
import { execFile, spawn } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { type TestContext, test } from 'node:test'
import { countOrders, freePort, isAlive, startPebble, startRedis } from '@autotls/pebble-harness'
import { RedisStorage } from '@autotls/storage-redis'
import { CLI, certFiles, h1, startUpstream } from './helpers.js'
import { parseMetrics, sample } from './prometheus.js'

const HOST = 'workers.cli.test'

function run(file: string, env: Record<string, string> = {}, extra: string[] = []) {
  const installed = process.env['AUTOTLS_CLI_BIN']
  const args = ['run', '-c', file, ...extra]
  const child = spawn(
    installed ?? process.execPath,
    installed ? args : ['--import', 'tsx', '--conditions=source', CLI, ...args],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } },
  )
  const lines: Array<Record<string, unknown>> = []
  const waiters = new Set<() => void>()
  createInterface({ input: child.stdout! }).on('line', (text) => {
    try {
      lines.push(JSON.parse(text) as Record<string, unknown>)
    } catch {
      return
    }
    for (const wake of waiters) wake()
  })
  child.stderr!.resume()
  const until = (done: () => boolean, ms = 30_000) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        if (!done()) return
        clearTimeout(timer)
        waiters.delete(check)
        resolve()
      }
      const timer = setTimeout(() => {
        waiters.delete(check)
        reject(new Error(`not within ${ms} ms: ${JSON.stringify(lines.slice(-5))}`))
      }, ms)
      waiters.add(check)
      check()
    })
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  const workerPids = () => lines.filter((l) => l['msg'] === 'worker serving').map((l) => l['workerPid'] as number)
  return { child, lines, until, exit, workerPids }
}

/** A folder, a certificate for HOST and an upstream, removed after the test. */
async function fileFixture(t: TestContext, prefix: string) {
  const dir = await mkdtemp(join(tmpdir(), prefix))
  const files = await certFiles([HOST])
  const upstream = await startUpstream('app')
  t.after(async () => {
    await upstream.close()
    await files.remove()
    await rm(dir, { recursive: true, force: true })
  })
  return { dir, files, upstream }
}

test('autotls run with workers: 2 serves from both workers; SIGTERM drains them and exits 0', async (t) => {
  const { dir, files, upstream } = await fileFixture(t, 'autotls-workers-cli-')
  const port = await freePort()
  const file = join(dir, 'autotls.yaml')
  await writeFile(
    file,
    `workers: 2
https: { host: 127.0.0.1, port: ${port} }
http: false
accessLog: true
certificates:
  - { cert: ${files.cert}, key: ${files.key} }
routes:
  - { host: ${HOST}, upstream: ${upstream.url} }
`,
  )
  const proxy = run(file)
  t.after(() => {
    for (const pid of [proxy.child.pid!, ...proxy.workerPids()]) if (isAlive(pid)) process.kill(pid, 'SIGKILL')
  })
  await proxy.until(() => proxy.workerPids().length === 2)
  const answered = new Set<number>()
  for (let i = 0; i < 10 && answered.size < 2; i++) {
    const path = `/cli/${i}`
    assert.equal((await h1({ port, host: HOST, path, ca: files.ca })).status, 200)
    await proxy.until(() => proxy.lines.some((l) => l['type'] === 'access' && l['path'] === path))
    answered.add(proxy.lines.find((l) => l['type'] === 'access' && l['path'] === path)!['pid'] as number)
  }
  assert.deepEqual([...answered].sort(), proxy.workerPids().sort(), 'both workers answered')
  proxy.child.kill('SIGTERM')
  assert.equal(await proxy.exit, 0)
  for (const pid of proxy.workerPids()) assert.equal(isAlive(pid), false, `worker ${pid} is gone`)

  // The port taken by another process: every worker would fail alike, so the start fails (exit 1).
  const blocker = createServer().listen(port, '127.0.0.1')
  t.after(() => blocker.close())
  const failing = run(file)
  t.after(() => failing.child.kill('SIGKILL'))
  assert.equal(await failing.exit, 1)
  assert.ok(failing.lines.some((l) => String(l['msg']).includes('exited before the proxy served')))
})

test('autotls run with workers: 2 and admin: the primary listens; /metrics, /status and /reload cover every worker', async (t) => {
  const { dir, files, upstream } = await fileFixture(t, 'autotls-workers-admin-')
  const [port, adminPort] = await Promise.all([freePort(), freePort()])
  const file = join(dir, 'autotls.yaml')
  await writeFile(
    file,
    `workers: 2
https: { host: 127.0.0.1, port: ${port} }
http: false
accessLog: true
admin: { host: 127.0.0.1, port: ${adminPort}, token: admin-token-of-this-test }
certificates:
  - { cert: ${files.cert}, key: ${files.key} }
routes:
  - { host: ${HOST}, upstream: ${upstream.url} }
`,
  )
  // No file watch: the reload below comes from the admin only.
  const proxy = run(file, {}, ['--no-watch'])
  t.after(() => {
    for (const pid of [proxy.child.pid!, ...proxy.workerPids()]) if (isAlive(pid)) process.kill(pid, 'SIGKILL')
  })
  await proxy.until(() => proxy.workerPids().length === 2)
  const admin = (path: string, init: RequestInit = {}) =>
    fetch(`http://127.0.0.1:${adminPort}${path}`, {
      ...init,
      headers: { authorization: 'Bearer admin-token-of-this-test', ...init.headers },
    })
  assert.equal((await fetch(`http://127.0.0.1:${adminPort}/metrics`)).status, 401, 'the token guards the primary too')

  // Each request on a new connection: the primary hands connections to the workers in turn.
  const N = 10
  const served = new Map<number, number>()
  for (let i = 0; i < N; i++) {
    const path = `/counted/${i}`
    assert.equal((await h1({ port, host: HOST, path, ca: files.ca })).status, 200)
    await proxy.until(() => proxy.lines.some((l) => l['type'] === 'access' && l['path'] === path))
    const pid = proxy.lines.find((l) => l['type'] === 'access' && l['path'] === path)!['pid'] as number
    served.set(pid, (served.get(pid) ?? 0) + 1)
  }
  assert.equal(served.size, 2, `both workers served requests: ${JSON.stringify([...served])}`)

  const scrape = await admin('/metrics')
  assert.equal(scrape.status, 200)
  const families = parseMetrics(await scrape.text())
  assert.equal(
    sample(families, 'autotls_proxy_requests_total', { status: '200' }),
    N,
    `one scrape counts the requests of both workers (${JSON.stringify([...served.values()])} per worker)`,
  )
  assert.equal(sample(families, 'autotls_workers', { state: 'answered' }), 2)
  assert.equal(sample(families, 'autotls_workers', { state: 'configured' }), 2)
  assert.ok(
    (sample(families, 'autotls_certificate_not_after_seconds', { name: HOST, source: 'file' }) ?? 0) >
      Date.now() / 1000,
    'a gauge is merged (lowest of the workers), not summed',
  )
  assert.ok(
    (sample(families, 'autotls_certificate_not_after_seconds', { name: HOST, source: 'file' }) ?? 0) <
      Date.now() / 1000 + 400 * 86400,
  )

  const status = (await (await admin('/status?format=json')).json()) as {
    state: string
    generation: number
    workers: Array<{ pid: number; answered: boolean; generation: number }>
    certificates: Array<{ name: string }>
  }
  assert.equal(status.state, 'running')
  assert.deepEqual(status.workers.map((w) => w.pid).sort(), proxy.workerPids().sort())
  assert.ok(status.workers.every((w) => w.answered && w.generation === 1))
  assert.ok(status.certificates.some((c) => c.name === HOST))
  assert.match(await (await admin('/status?format=html')).text(), /id="workers"/)
  const installed = process.env['AUTOTLS_CLI_BIN']
  const statusArgs = ['status', '--url', `http://127.0.0.1:${adminPort}`, '--token', 'admin-token-of-this-test']
  const printed = await new Promise<string>((resolve, reject) =>
    execFile(
      installed ?? process.execPath,
      installed ? statusArgs : ['--import', 'tsx', '--conditions=source', CLI, ...statusArgs],
      (err, stdout) => (err ? reject(err) : resolve(stdout)),
    ),
  )
  for (const pid of proxy.workerPids()) assert.match(printed, new RegExp(`pid ${pid}  running, config generation 1`))

  // A reload through the admin reaches both workers (a new route), and each one serves the next generation.
  await writeFile(file, `${await readFile(file, 'utf8')}  - { host: ${HOST}, path: /v2, upstream: ${upstream.url} }\n`)
  const reload = await admin('/reload', { method: 'POST' })
  const result = (await reload.json()) as { applied: boolean; workers: Array<{ applied: boolean; generation: number }> }
  assert.equal(reload.status, 200, JSON.stringify(result))
  assert.equal(result.workers.length, 2)
  assert.ok(
    result.workers.every((w) => w.applied && w.generation === 2),
    JSON.stringify(result.workers),
  )
  const after = (await (await admin('/status?format=json')).json()) as typeof status
  assert.equal(after.generation, 2)

  proxy.child.kill('SIGTERM')
  assert.equal(await proxy.exit, 0)
  for (const pid of proxy.workerPids()) assert.equal(isAlive(pid), false, `worker ${pid} is gone`)
})

test('autotls run with workers: 2 on Redis storage (file: acme.storage.redis): one order, TLS-ALPN-01 answered by either worker, both serve it', async (t) => {
  const [pebble, redis] = await Promise.all([startPebble(), startRedis()])
  const dir = await mkdtemp(join(tmpdir(), 'autotls-workers-redis-'))
  const upstream = await startUpstream('app')
  t.after(async () => {
    await upstream.close()
    await Promise.all([pebble.stop(), redis.stop()])
    await rm(dir, { recursive: true, force: true })
  })
  const name = 'redis.workers.cli.test'
  const file = join(dir, 'autotls.yaml')
  await writeFile(
    file,
    `workers: 2
https: { host: 127.0.0.1, port: ${pebble.tlsPort} }
http: false
accessLog: true
acme:
  directory: ${pebble.directoryUrl}
  termsOfServiceAgreed: true
  caRoots: "\${PEBBLE_CA}"
  challenges: [tls-alpn-01]
  storage: { redis: { url: "${redis.url}", prefix: "cli:" } }
routes:
  - { host: ${name}, upstream: ${upstream.url} }
`,
  )
  const ordersBefore = countOrders(pebble)
  const proxy = run(file, { PEBBLE_CA: pebble.caBundle })
  t.after(() => {
    for (const pid of [proxy.child.pid!, ...proxy.workerPids()]) if (isAlive(pid)) process.kill(pid, 'SIGKILL')
  })
  await proxy.until(() => proxy.workerPids().length === 2)
  const ca = await pebble.issuingRoot()
  // Both workers order at start; one takes the Redis lock, the other adopts. Pebble's 3 validation connections are
  // spread over both workers by the cluster's round robin: each answers the challenge from Redis.
  await proxy.until(
    () => proxy.lines.filter((l) => /certificate issued|adopted a certificate/.test(String(l['msg']))).length >= 2,
    60_000,
  )
  assert.equal(countOrders(pebble) - ordersBefore, 1, 'one order for the name')
  const answered = new Set<number>()
  for (let i = 0; i < 10 && answered.size < 2; i++) {
    const path = `/redis/${i}`
    assert.equal((await h1({ port: pebble.tlsPort, host: name, path, ca })).status, 200)
    await proxy.until(() => proxy.lines.some((l) => l['type'] === 'access' && l['path'] === path))
    answered.add(proxy.lines.find((l) => l['type'] === 'access' && l['path'] === path)!['pid'] as number)
  }
  assert.deepEqual([...answered].sort(), proxy.workerPids().sort(), 'both workers served the certificate')
  const store = new RedisStorage({ url: redis.url, prefix: 'cli:' })
  const stored = (await store.list('')).filter((key) => key.includes('/certificates/'))
  await store.close()
  assert.equal(stored.length, 1, 'the certificate is in Redis')
  proxy.child.kill('SIGTERM')
  assert.equal(await proxy.exit, 0)
})
