// The plugin in a real child process: killed with SIGKILL at five points of an order (the restart must resume that
// order: one order per name in all, the certificate served within 10 s), and closed in the middle of an order (the
// process must then exit by itself: no timer or socket of ours left behind).
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { after, before, describe, test } from 'node:test'
import {
  type CaProxy,
  type CaProxyRule,
  countOrders,
  type Pebble,
  startCaProxy,
  startPebble,
} from '@autotls/pebble-harness'
import { httpsGet } from './helpers.js'

const fixture = new URL('./fixtures/app-process.ts', import.meta.url).pathname

interface Child {
  proc: ChildProcess
  events: Array<{ event: string; name?: string; ms?: number; reason?: string; code?: string; nextAttemptAt?: string }>
  /** The app's log lines (pino JSON). */
  logs: Array<{ msg: string; [key: string]: unknown }>
  waitFor(event: string, timeoutMs?: number): Promise<Child['events'][number]>
  exited: Promise<number | null>
}

function startChild(
  pebble: Pebble,
  cacheDir: string,
  names: string[],
  closeOn?: string,
  ca: { directory: string; caRoots: string } = { directory: pebble.directoryUrl, caRoots: pebble.caBundle },
): Child {
  const options = { port: pebble.tlsPort, names, ...ca, cacheDir, closeOn }
  const proc = spawn(process.execPath, ['--import', 'tsx', '--conditions=source', fixture], {
    env: { ...process.env, FIXTURE_OPTIONS: JSON.stringify(options) },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const events: Child['events'] = []
  const logs: Child['logs'] = []
  const waiters: Array<() => void> = []
  createInterface({ input: proc.stdout! }).on('line', (line) => {
    try {
      const parsed = JSON.parse(line)
      if (typeof parsed.event === 'string') events.push(parsed)
      else if (typeof parsed.msg === 'string') logs.push(parsed)
    } catch {
      return
    }
    for (const w of waiters.splice(0)) w()
  })
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)))
  return {
    proc,
    events,
    logs,
    exited,
    async waitFor(event, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs
      for (;;) {
        const found = events.find((e) => e.event === event)
        if (found) return found
        if (Date.now() > deadline || proc.exitCode !== null)
          throw new Error(`no ${event} event; saw ${JSON.stringify(events)}`)
        await new Promise<void>((resolve) => {
          waiters.push(resolve)
          setTimeout(resolve, 200)
        })
      }
    },
  }
}

/**
 * Where a SIGKILL stops the order: the CA front holds one request of the first process's order (before Pebble sees
 * it, or after Pebble has acted on it), and the process is killed while it waits for the answer.
 */
const KILL_POINTS: Array<{ label: string; rule: CaProxyRule; expect: string }> = [
  {
    label: 'order created, authorizations not fetched',
    rule: { method: 'POST', path: /^\/authZ\//, hold: 'request', times: 1 },
    expect: 'pending',
  },
  {
    label: 'challenge presented, the CA not told',
    rule: { method: 'POST', path: /^\/chalZ\//, hold: 'request', times: 1 },
    expect: 'pending',
  },
  {
    label: 'authorization valid, before finalize',
    rule: { method: 'POST', path: /^\/finalize-order\//, hold: 'request', times: 1 },
    expect: 'ready',
  },
  {
    label: 'after finalize (the CA issued), before the download',
    rule: { method: 'POST', path: /^\/finalize-order\//, hold: 'response', times: 1 },
    expect: 'valid',
  },
  {
    label: 'certificate downloaded by the CA, before it was stored',
    rule: { method: 'POST', path: /^\/certZ\//, hold: 'response', times: 1 },
    expect: 'valid',
  },
]

describe('a process killed mid-order resumes its order', () => {
  let pebble: Pebble
  let proxy: CaProxy
  before(async () => {
    pebble = await startPebble()
    proxy = await startCaProxy({ upstreamPort: pebble.listenPort, upstreamCa: pebble.caBundle })
  })
  after(async () => {
    await proxy?.stop()
    await pebble?.stop()
  })

  for (const [i, point] of KILL_POINTS.entries()) {
    test(`SIGKILL ${point.label}: the restart finishes the same order`, async () => {
      const cacheDir = await mkdtemp(join(tmpdir(), 'facme-resume-'))
      const name = `resume${i}.acme.test`
      const through = { directory: proxy.directoryUrl, caRoots: proxy.caBundle }
      const ordersBefore = countOrders(pebble)
      proxy.inject(point.rule)
      const first = startChild(pebble, cacheDir, [name], undefined, through)
      try {
        await proxy.waitForHold()
        first.proc.kill('SIGKILL')
        await first.exited
        assert.equal(countOrders(pebble) - ordersBefore, 1, 'the first process sent one order')
        const restarted = Date.now()
        const again = startChild(pebble, cacheDir, [name], undefined, through)
        try {
          const issued = await again.waitFor('certificate-issued', 20_000)
          const servedAfter = Date.now() - restarted
          const resumed = again.events.find((e) => e.event === 'order-started')
          const found = again.logs.find((l) => l.msg === 'fastify-acme: found an order interrupted by a restart')
          // The certificate is served: a real TLS client verifies the chain against Pebble's root.
          const served = await httpsGet(pebble.tlsPort, name, await pebble.issuingRoot())
          assert.equal(served.status, 404, 'a verified HTTPS answer from the app (it has no routes)')
          const orders = countOrders(pebble) - ordersBefore
          console.log(
            `# kill point "${point.label}": found ${found?.['status']}, orders for the name ${orders}, served ${servedAfter} ms after the restart`,
          )
          assert.equal(found?.['status'], point.expect, JSON.stringify(found))
          assert.equal(resumed?.reason, 'resume')
          assert.equal(orders, 1, 'orders per name over the crash and the restart')
          assert.equal(issued.name, name)
          assert.ok(servedAfter < 10_000, `served ${servedAfter} ms after the restart`)
        } finally {
          again.proc.kill('SIGKILL')
          await again.exited
        }
      } finally {
        if (first.proc.exitCode === null) first.proc.kill('SIGKILL')
        proxy.clearRules()
      }
    })
  }

  test('an order the CA no longer has: the restart counts the interruption and waits for the retry time', async () => {
    const cacheDir = await mkdtemp(join(tmpdir(), 'facme-gone-'))
    const name = 'gone.acme.test'
    const through = { directory: proxy.directoryUrl, caRoots: proxy.caBundle }
    proxy.inject({ method: 'POST', path: /^\/authZ\//, hold: 'request', times: 1 })
    const first = startChild(pebble, cacheDir, [name], undefined, through)
    await proxy.waitForHold()
    first.proc.kill('SIGKILL')
    await first.exited
    // The CA forgets the order: its URL now answers 404.
    proxy.inject({
      method: 'POST',
      path: /^\/my-order\//,
      status: 404,
      body: { type: 'urn:ietf:params:acme:error:malformed', detail: 'No such order' },
    })
    const ordersBefore = countOrders(pebble)
    const again = startChild(pebble, cacheDir, [name], undefined, through)
    try {
      const failed = await again.waitFor('order-failed', 20_000)
      assert.equal(failed.code, 'FACME_INTERRUPTED')
      const found = again.logs.find((l) => l.msg === 'fastify-acme: found an order interrupted by a restart')
      assert.equal(found?.['status'], 'gone')
      // The retry time of the interruption (retryMinMs 60 s after the crash) is kept: nothing is ordered now. The
      // failure event above comes after the lookup, where a new order would already have been sent.
      assert.equal(countOrders(pebble), ordersBefore)
      assert.ok((failed.nextAttemptAt ?? '') > new Date().toISOString(), failed.nextAttemptAt)
    } finally {
      again.proc.kill('SIGKILL')
      await again.exited
      proxy.clearRules()
    }
  })
})

describe('a process closed mid-order', () => {
  test('close() at challenge-presented returns promptly and the process then exits by itself', async () => {
    const pebble = await startPebble({ vaNoSleep: false })
    const cacheDir = await mkdtemp(join(tmpdir(), 'facme-exit-'))
    try {
      const child = startChild(pebble, cacheDir, ['exit1.acme.test', 'exit2.acme.test'], 'challenge-presented')
      const closed = await child.waitFor('closed')
      const started = Date.now()
      const timer = setTimeout(() => child.proc.kill('SIGKILL'), 10_000)
      const code = await child.exited
      clearTimeout(timer)
      const drain = Date.now() - started
      console.log(`# close() mid-order took ${closed.ms} ms; the process exited ${drain} ms later (code ${code})`)
      assert.ok((closed.ms ?? 0) < 2000, `close() took ${closed.ms} ms`)
      assert.equal(code, 0, 'the process exited by itself (not killed after 10 s)')
      assert.ok(drain < 5000, `nothing kept the event loop alive for long (${drain} ms)`)
    } finally {
      await pebble.stop()
    }
  })
})
