// `workers: 2` (node:cluster, workers.ts) against Pebble: one order per name however many workers start at once,
// every worker serves every certificate, a SIGKILLed worker is forked again while the other keeps serving, SIGTERM
// drains both and the primary exits 0 with no worker left. TLS sessions resume on a different worker than the one
// that issued the ticket (shared session-ticket keys, the default with workers), not with keys of each worker's
// own; after a rotation both workers use the new key. Which worker answered is read from the access log (pid).
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { after, before, describe, test } from 'node:test'
import { connect } from 'node:tls'
import { fileURLToPath } from 'node:url'
import { countOrders, freePort, type Pebble, startPebble } from '@autotls/pebble-harness'
import { startUpstream, type Upstream } from './helpers.js'

const FIXTURE = fileURLToPath(new URL('./fixtures/workers-proxy.ts', import.meta.url))
const NAMES = ['one.workers.test', 'two.workers.test', 'three.workers.test']

type LogLine = Record<string, unknown> & { msg?: string; pid?: number }

interface Cluster {
  child: ChildProcess
  lines: LogLine[]
  port: number
  /** Resolves with the first log line matching, rejects after `ms`. */
  line(match: (l: LogLine) => boolean, ms?: number): Promise<LogLine>
  /** The pids of the workers serving now (the primary's 'worker serving' minus 'worker died'). */
  workers(): number[]
  exit: Promise<number | null>
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

async function startCluster(
  t: { after: (fn: () => unknown) => void },
  pebble: Pebble,
  upstream: Upstream,
  cacheDir: string,
  acmeExtra: Record<string, unknown> = {},
): Promise<Cluster> {
  const port = await freePort()
  const options = {
    https: { host: '127.0.0.1', port },
    http: false,
    accessLog: true,
    workers: 2,
    shutdown: { graceMs: 3_000 },
    acme: {
      directory: pebble.directoryUrl,
      termsOfServiceAgreed: true,
      caRoots: pebble.caBundle,
      cacheDir,
      ...acmeExtra,
    },
    routes: NAMES.map((host) => ({ host, upstream: upstream.url })),
  }
  const child = spawn(process.execPath, ['--import', 'tsx', '--conditions=source', FIXTURE], {
    env: {
      ...process.env,
      WORKERS_TEST_OPTIONS: JSON.stringify(options),
      WORKERS_TEST_CHALLTESTSRV: pebble.dns.managementUrl,
    },
    // stdin is how the fixture knows this test process is gone (it then stops), should the test time out.
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  const pids = new Set<number>()
  t.after(async () => {
    // Whatever the test did: no process of this cluster outlives it.
    for (const pid of [child.pid!, ...pids]) if (processAlive(pid)) process.kill(pid, 'SIGKILL')
  })
  const lines: LogLine[] = []
  const waiters = new Set<() => void>()
  let stderr = ''
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString()
  })
  createInterface({ input: child.stdout! }).on('line', (text) => {
    let line: LogLine
    try {
      line = JSON.parse(text) as LogLine
    } catch {
      return
    }
    lines.push(line)
    if (typeof line['workerPid'] === 'number') pids.add(line['workerPid'])
    for (const wake of waiters) wake()
  })
  const line = (match: (l: LogLine) => boolean, ms = 30_000) =>
    new Promise<LogLine>((resolve, reject) => {
      const check = () => {
        const found = lines.find(match)
        if (!found) return false
        cleanup()
        resolve(found)
        return true
      }
      const timer = setTimeout(() => {
        cleanup()
        reject(new Error(`no such log line within ${ms} ms; stderr: ${stderr.slice(-2000)}`))
      }, ms)
      const cleanup = () => {
        clearTimeout(timer)
        waiters.delete(check)
      }
      waiters.add(check)
      check()
    })
  const workers = () => {
    const serving = new Set<number>()
    for (const l of lines) {
      if (l['role'] !== 'primary') continue
      if (l.msg === 'worker serving') serving.add(l['workerPid'] as number)
      if (l.msg === 'worker died: forking a new one') serving.delete(l['workerPid'] as number)
    }
    return [...serving]
  }
  const cluster = { child, lines, port, line, workers, exit }
  await line(() => workers().length === 2)
  return cluster
}

let requestId = 0

/**
 * One HTTPS request on a new connection (offering `session`), and which worker answered it (the pid of its access
 * log line). A resumed TLS 1.3 connection may bring no new ticket.
 */
async function request(
  cluster: Cluster,
  host: string,
  ca: string,
  session?: Buffer,
): Promise<{ status: number; reused: boolean; ticket: Buffer | undefined; pid: number }> {
  const path = `/probe/${process.pid}-${++requestId}`
  const result = await new Promise<{ status: number; reused: boolean; ticket: Buffer | undefined }>(
    (resolve, reject) => {
      let ticket: Buffer | undefined
      let reused = false
      let body = ''
      const socket = connect({
        host: '127.0.0.1',
        port: cluster.port,
        servername: host,
        ca,
        ALPNProtocols: ['http/1.1'],
        ...(session ? { session } : {}),
      })
      socket.on('session', (s: Buffer) => {
        ticket = s
      })
      socket.on('secureConnect', () => {
        reused = socket.isSessionReused()
        socket.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`)
      })
      socket.on('data', (d: Buffer) => {
        body += d.toString()
      })
      socket.on('error', reject)
      socket.setTimeout(5_000, () => socket.destroy(new Error('no answer within 5 s')))
      socket.on('close', () => resolve({ status: Number(body.slice(9, 12)) || 0, reused, ticket }))
    },
  )
  const access = await cluster.line((l) => l['type'] === 'access' && l['path'] === path, 10_000)
  return { ...result, pid: access.pid! }
}

/** Requests (new connections, resuming `session`) until one is answered by a worker other than `not`. */
async function onAnotherWorker(cluster: Cluster, host: string, ca: string, not: number, session?: Buffer) {
  for (let attempt = 0; attempt < 20; attempt++) {
    const reply = await request(cluster, host, ca, session)
    if (reply.pid !== not) return reply
  }
  throw new Error(`20 connections, all answered by worker ${not}`)
}

describe('workers: 2', () => {
  let pebble: Pebble
  let upstream: Upstream
  let root: string
  let cacheDir: string
  let ca: string
  before(async () => {
    pebble = await startPebble()
    ca = await pebble.issuingRoot()
    upstream = await startUpstream('app')
    root = await mkdtemp(join(tmpdir(), 'autotls-workers-'))
    cacheDir = join(root, 'acme')
  })
  after(async () => {
    await upstream?.close()
    await pebble?.stop()
    await rm(root, { recursive: true, force: true })
  })

  test('one order per name, every worker serves every name, resumption across workers, SIGKILL, SIGTERM', async (t) => {
    const cluster = await startCluster(t, pebble, upstream, cacheDir)
    const [first, second] = cluster.workers() as [number, number]
    // Each name is served once its certificate is (the workers order in the background).
    for (const host of NAMES) {
      for (let attempt = 0; ; attempt++) {
        const ok = await request(cluster, host, ca).then(
          (r) => r.status === 200,
          () => false,
        )
        if (ok) break
        if (attempt > 300) throw new Error(`${host} never served`)
        await new Promise((r) => setTimeout(r, 200))
      }
    }
    // Every worker serves every name (new connections alternate between the workers).
    for (const host of NAMES) {
      const a = await request(cluster, host, ca)
      assert.equal(a.status, 200)
      const b = await onAnotherWorker(cluster, host, ca, a.pid)
      assert.equal(b.status, 200)
      assert.deepEqual([a.pid, b.pid].sort(), [first, second].sort())
    }
    const orders = countOrders(pebble)
    t.diagnostic(`orders per name with 2 workers: ${(orders / NAMES.length).toFixed(2)}`)
    assert.equal(orders, NAMES.length, 'one order per name')

    // Resumption on a different worker than the one that issued the ticket.
    const issued = await request(cluster, NAMES[0]!, ca)
    assert.ok(issued.ticket)
    const resumed = await onAnotherWorker(cluster, NAMES[0]!, ca, issued.pid, issued.ticket)
    assert.equal(resumed.reused, true, `issued by ${issued.pid}, resumed on ${resumed.pid}`)
    t.diagnostic(`ticket issued by worker ${issued.pid}, session resumed on worker ${resumed.pid}`)

    // SIGKILL one worker: the primary forks a new one; the other serves meanwhile, and both after.
    process.kill(first, 'SIGKILL')
    let failures = 0
    let served = 0
    const replaced = cluster.line(
      (l) => l.msg === 'worker serving' && l['workerPid'] !== first && l['workerPid'] !== second,
      60_000,
    )
    let done = false
    const stopLoop = () => {
      done = true
    }
    void replaced.then(stopLoop, stopLoop)
    while (!done) {
      await request(cluster, NAMES[1]!, ca).then(
        (r) => (r.status === 200 ? served++ : failures++),
        () => failures++,
      )
    }
    const fresh = (await replaced)['workerPid'] as number
    t.diagnostic(`while worker ${first} was replaced by ${fresh}: ${served} requests served, ${failures} failed`)
    assert.equal(processAlive(first), false)
    assert.deepEqual(cluster.workers().sort(), [second, fresh].sort())
    for (const host of NAMES) {
      const a = await request(cluster, host, ca)
      const b = await onAnotherWorker(cluster, host, ca, a.pid)
      assert.equal(a.status, 200)
      assert.equal(b.status, 200)
    }
    // The connection the SIGKILL cut is the only one allowed to fail.
    assert.ok(failures <= 1, `${failures} failed requests while a worker was replaced`)
    assert.equal(countOrders(pebble), NAMES.length, 'the new worker ordered nothing: the certificates were stored')

    // SIGTERM: both workers drain, the primary exits 0, no worker is left.
    cluster.child.kill('SIGTERM')
    assert.equal(await cluster.exit, 0)
    for (const pid of [second, fresh]) assert.equal(processAlive(pid), false, `worker ${pid} is gone`)
    assert.ok(cluster.lines.some((l) => l.msg === 'proxy closed' && l.pid === second))
  })

  test('without shared keys a session does not resume on the other worker; rotation reaches both', async (t) => {
    // Keys of each worker's own (shared: false): the ticket of one worker is no use on the other.
    const own = await startCluster(t, pebble, upstream, cacheDir, { sessionTickets: { shared: false } })
    const issued = await request(own, NAMES[0]!, ca)
    assert.equal(issued.status, 200, 'the stored certificate is served at once')
    assert.equal((await request(own, NAMES[0]!, ca, issued.ticket).then((r) => r)).status, 200)
    const other = await onAnotherWorker(own, NAMES[0]!, ca, issued.pid, issued.ticket)
    assert.equal(other.reused, false, 'a ticket of another worker is not resumed')
    const same = await onAnotherWorker(own, NAMES[0]!, ca, other.pid, issued.ticket)
    assert.equal(same.pid, issued.pid)
    assert.equal(same.reused, true, 'on the worker that issued it, it is')
    own.child.kill('SIGTERM')
    assert.equal(await own.exit, 0)

    // Shared keys rotated every 3 s: both workers put each new key in use (their log lines say which).
    const rotating = await startCluster(t, pebble, upstream, cacheDir, { sessionTickets: { rotateAfterMs: 3_000 } })
    const [a, b] = rotating.workers() as [number, number]
    const inUse = (pid: number) =>
      rotating.lines.filter((l) => l.pid === pid && l.msg === 'session ticket key in use').map((l) => l['created'])
    const before = await request(rotating, NAMES[0]!, ca)
    await rotating.line(() => inUse(a).length >= 2 && inUse(b).length >= 2, 15_000)
    assert.equal(inUse(a)[1], inUse(b)[1], 'the same new key on both workers')
    if (inUse(a).length === 2 && inUse(b).length === 2) {
      const fresh = await request(rotating, NAMES[0]!, ca)
      const across = await onAnotherWorker(rotating, NAMES[0]!, ca, fresh.pid, fresh.ticket)
      assert.equal(across.reused, true, 'a ticket of the new key resumes on the other worker')
      const old = await request(rotating, NAMES[0]!, ca, before.ticket)
      assert.equal(old.reused, false, 'a ticket of the old key does not resume')
    }
    rotating.child.kill('SIGTERM')
    assert.equal(await rotating.exit, 0)
    assert.equal(countOrders(pebble), NAMES.length)
  })
})
