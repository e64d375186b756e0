// The plugin in a real child process: killed with SIGKILL in the middle of an order (a crash loop must not
// re-order at every start), and closed in the middle of an order (the process must then exit by itself: no timer
// or socket of ours left behind).
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { describe, test } from 'node:test'
import { countOrders, type Pebble, startPebble } from '@autotls/pebble-harness'

const fixture = new URL('./fixtures/app-process.ts', import.meta.url).pathname

interface ChildEvent {
  event: string
  name?: string
  ms?: number
  /** wake: when the scheduler's timer fires. */
  at?: number
  /** listening: each name's planned next action. */
  nextActions?: Array<{ kind: string; at: string } | undefined>
}

interface Child {
  proc: ChildProcess
  events: ChildEvent[]
  waitFor(event: string, timeoutMs?: number): Promise<ChildEvent>
  exited: Promise<number | null>
}

function startChild(pebble: Pebble, cacheDir: string, names: string[], closeOn?: string): Child {
  const options = {
    port: pebble.tlsPort,
    names,
    directory: pebble.directoryUrl,
    caRoots: pebble.caBundle,
    cacheDir,
    closeOn,
  }
  const proc = spawn(process.execPath, ['--import', 'tsx', '--conditions=source', fixture], {
    env: { ...process.env, FIXTURE_OPTIONS: JSON.stringify(options) },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const events: Child['events'] = []
  const waiters: Array<() => void> = []
  createInterface({ input: proc.stdout! }).on('line', (line) => {
    try {
      events.push(JSON.parse(line))
    } catch {
      return
    }
    for (const w of waiters.splice(0)) w()
  })
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)))
  return {
    proc,
    events,
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

describe('a process that dies mid-order', () => {
  test('3 SIGKILLs during an order, then restarts: no new order before the stored retry time', async () => {
    // VA sleeps keep each order in flight long enough to be killed in it.
    const pebble = await startPebble({ vaNoSleep: false })
    const cacheDir = await mkdtemp(join(tmpdir(), 'facme-kill-'))
    const names = ['killed.acme.test']
    // A failed assertion must not leave a child behind (its open stdout would keep the test file from ending).
    const children: Child[] = []
    const start = () => {
      const child = startChild(pebble, cacheDir, names)
      children.push(child)
      return child
    }
    try {
      const first = start()
      await first.waitFor('challenge-presented')
      first.proc.kill('SIGKILL')
      await first.exited
      const ordersAfterCrash = countOrders(pebble)
      assert.equal(ordersAfterCrash, 1)
      for (let i = 0; i < 3; i++) {
        const again = start()
        const listening = await again.waitFor('listening')
        // Start-up has scheduled the name once the scheduler arms its timer: a first wake-up at the stored retry
        // time (a minute after the interrupted order) proves nothing can order before then.
        const wake = await again.waitFor('wake')
        const retry = listening.nextActions?.[0]
        assert.equal(retry?.kind, 'retry', 'the interrupted order counts as a failure')
        assert.equal(wake.at, Date.parse(retry?.at ?? ''), 'the first wake-up is the stored retry time')
        assert.ok(wake.at > Date.now(), 'the retry time is still ahead')
        assert.equal(again.events.filter((e) => e.event === 'order-started').length, 0, 'no order right after a crash')
        again.proc.kill('SIGKILL')
        await again.exited
      }
      console.log(`# ${countOrders(pebble)} order(s) at the CA after a crash mid-order and 3 restarts`)
      assert.equal(countOrders(pebble), ordersAfterCrash)
    } finally {
      for (const child of children) child.proc.kill('SIGKILL')
      await pebble.stop()
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
