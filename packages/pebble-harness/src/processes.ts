// Owns the child processes the harness starts (Pebble, pebble-challtestsrv): finding their binaries, stopping one by
// PID, and making sure none outlives the test process that started it.
import type { ChildProcess } from 'node:child_process'
import { constants, rmSync } from 'node:fs'
import { access } from 'node:fs/promises'
import { delimiter, join } from 'node:path'

// Everything still running, with the temp dir to remove, so the exit/signal hooks can clean up after a test that
// crashed or was cancelled.
const LOG_LIMIT = 2 * 1024 * 1024

const live = new Map<ChildProcess, string | undefined>()

function killAllNow(): void {
  for (const [child, dir] of live) {
    child.kill('SIGKILL')
    if (dir) rmSync(dir, { recursive: true, force: true })
  }
  live.clear()
}

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const
function onSignal(signal: NodeJS.Signals): void {
  killAllNow()
  unhook()
  // Without other listeners Node would have died of this signal; re-raise so it still does, with the usual status.
  if (process.listenerCount(signal) === 0) process.kill(process.pid, signal)
}

let hooked = false
function hook(): void {
  if (hooked) return
  hooked = true
  process.on('exit', killAllNow)
  // Node skips 'exit' handlers when a signal kills it, and the test runner cancels files with SIGTERM.
  for (const signal of SIGNALS) process.on(signal, onSignal)
}
// Listening for signals changes Node's default behaviour, so only while a child runs.
function unhook(): void {
  if (!hooked || live.size > 0) return
  hooked = false
  process.off('exit', killAllNow)
  for (const signal of SIGNALS) process.off(signal, onSignal)
}

/** Kill `child` (and remove `dir`) if the test process exits or is signalled before {@link untrack}. */
export function track(child: ChildProcess, dir?: string): void {
  if (child.pid === undefined) return
  live.set(child, dir)
  hook()
}

export function untrack(child: ChildProcess): void {
  live.delete(child)
  unhook()
}

/** `name` on PATH, else `/usr/bin/<name>` (Debian's location). */
export async function findBinary(name: string): Promise<string> {
  for (const dir of (process.env['PATH'] ?? '').split(delimiter)) {
    if (!dir) continue
    const candidate = join(dir, name)
    try {
      await access(candidate, constants.X_OK)
      return candidate
    } catch {}
  }
  return `/usr/bin/${name}`
}

/** True while a process with this pid exists (signal 0: nothing is sent). For tests that check what is left running. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** Whether `promise` settles within `ms`; the timer is cleared so it never holds the process open. */
export async function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms)
  })
  try {
    return await Promise.race([promise.then(() => true as const), timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** Promises for a spawned child: `exited` (or failed to spawn) and `closed` (pipes drained too). */
export function watchExit(child: ChildProcess): {
  exited: Promise<void>
  closed: Promise<void>
  status(): string | undefined
} {
  let exitStatus: string | undefined
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exitStatus = signal ? `signal ${signal}` : `code ${code}`
      resolve()
    })
    child.once('error', (error) => {
      // Spawn failures (e.g. ENOENT) emit 'error' and never 'exit'.
      exitStatus ??= `spawn error: ${error.message}`
      resolve()
    })
  })
  // 'close' comes after the pipes drain: waiting for it makes the logs in error messages complete.
  const closed = new Promise<void>((resolve) => {
    child.once('close', () => resolve())
    child.once('error', () => resolve())
  })
  return { exited, closed, status: () => exitStatus }
}

/** SIGTERM, SIGKILL after `graceMs`, then wait (briefly) for the pipes; a no-op for a child that already exited. */
export async function terminate(
  child: ChildProcess,
  watch: ReturnType<typeof watchExit>,
  graceMs: number,
): Promise<void> {
  if (watch.status() === undefined) {
    child.kill('SIGTERM')
    if (!(await within(watch.exited, graceMs))) {
      child.kill('SIGKILL')
      await watch.exited
    }
  }
  // Pipes can be held open by a grandchild; neither binary has one, but stopping must not hang on it.
  await within(watch.closed, 500)
  untrack(child)
}

/** Keeps the most recent output of a child within LOG_LIMIT and hands every line to `onLine` as it streams past. */
export class LogCapture {
  private text = ''
  private dropped = 0
  private readonly partial = new Map<NodeJS.ReadableStream, string>()

  constructor(private readonly onLine: (line: string) => void) {}

  attach(stream: NodeJS.ReadableStream | null): void {
    if (!stream) return
    stream.setEncoding('utf8')
    this.partial.set(stream, '')
    stream.on('data', (chunk: string) => {
      this.append(chunk)
      // Lines are split per stream: stdout and stderr chunks interleave arbitrarily.
      const lines = ((this.partial.get(stream) ?? '') + chunk).split('\n')
      this.partial.set(stream, lines.pop() ?? '')
      for (const line of lines) this.onLine(line)
    })
    stream.on('end', () => {
      const rest = this.partial.get(stream)
      if (rest) this.onLine(rest)
      this.partial.set(stream, '')
    })
  }

  append(chunk: string): void {
    this.text += chunk
    if (this.text.length <= LOG_LIMIT) return
    // Trim to 3/4 of the limit at a line boundary so trimming happens rarely and lines stay whole.
    let cut = this.text.length - Math.floor((LOG_LIMIT * 3) / 4)
    const newline = this.text.indexOf('\n', cut)
    if (newline !== -1) cut = newline + 1
    this.dropped += cut
    this.text = this.text.slice(cut)
  }

  toString(): string {
    return this.dropped > 0 ? `[... ${this.dropped} characters of older output dropped ...]\n${this.text}` : this.text
  }
}
