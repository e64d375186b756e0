// Owns the redis-server process (Debian's `redis-server` package) that storage tests share beside Pebble: a free
// loopback port, no persistence, its own temp dir, readiness, restart on the same port (empty, as after a crash),
// and stopping it by PID like every other process the harness starts.
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort } from './ports.js'
import { findBinary, LogCapture, sleep, terminate, track, watchExit } from './processes.js'

/** Options of {@link startRedis}. */
export interface RedisOptions {
  /** Port on 127.0.0.1. Default: a free port picked by the harness. */
  port?: number
  /** Path of the binary, default `redis-server` on PATH or /usr/bin/redis-server. */
  binary?: string
  /** Extra `--name value` arguments (e.g. `['--maxmemory', '10mb']`), appended after the harness's own. */
  args?: string[]
}

/** A running redis-server started by {@link startRedis}. */
export interface RedisServer {
  /** `redis://127.0.0.1:<port>`. */
  url: string
  port: number
  /** PID of the current redis-server process (a new one after {@link RedisServer.restart}). */
  readonly pid: number
  /** Whether the process is running (false between a {@link RedisServer.kill} and a restart). */
  readonly running: boolean
  /** SIGKILL the process, as a crash would; {@link RedisServer.restart} brings it back. */
  kill(): Promise<void>
  /** Stop (if running) and start again on the same port, with no data: what clients see after a crash. */
  restart(): Promise<void>
  /** SIGTERM (SIGKILL after 2 s) and remove the temp dir. Idempotent. */
  stop(): Promise<void>
  /** The output of every process started so far (the oldest part is dropped past ~2 MB). */
  logs(): string
}

const READY_TIMEOUT_MS = 10_000
const STOP_GRACE_MS = 2_000
const START_ATTEMPTS = 3

/** One RESP PING over a fresh socket: true when the server answers +PONG (it is ready for commands). */
function ping(port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port })
    let answer = ''
    const done = (ok: boolean) => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(timeoutMs, () => done(false))
    socket.on('error', () => done(false))
    socket.on('connect', () => socket.write('PING\r\n'))
    socket.on('data', (chunk) => {
      answer += chunk.toString('latin1')
      if (answer.includes('\r\n')) done(answer.startsWith('+PONG'))
    })
  })
}

interface Running {
  child: ChildProcess
  watch: ReturnType<typeof watchExit>
}

/**
 * Start Debian's redis-server on 127.0.0.1 without persistence (`--save '' --appendonly no`), in its own temp dir,
 * and wait until it answers PING (10 s at most). A port lost to a race is retried with another (3 attempts) unless
 * `port` was given.
 */
export async function startRedis(options: RedisOptions = {}): Promise<RedisServer> {
  const binary = options.binary ?? (await findBinary('redis-server'))
  const dir = await mkdtemp(join(tmpdir(), 'autotls-redis-'))
  const capture = new LogCapture(() => {})
  let port = options.port ?? (await freePort())
  let current: Running | undefined

  const launch = async (): Promise<void> => {
    const args = [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      dir,
      // No config file is read, so protected mode and daemonize stay at the defaults; said explicitly anyway.
      '--daemonize',
      'no',
      '--protected-mode',
      'yes',
      '--loglevel',
      'notice',
      ...(options.args ?? []),
    ]
    const child = spawn(binary, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
    capture.attach(child.stdout)
    capture.attach(child.stderr)
    const watch = watchExit(child)
    track(child, dir)
    current = { child, watch }
    const deadline = Date.now() + READY_TIMEOUT_MS
    while (Date.now() < deadline && watch.status() === undefined) {
      if (await ping(port, 500)) return
      await sleep(25)
    }
    const reason = watch.status() ? `exited early (${watch.status()})` : `not ready after ${READY_TIMEOUT_MS} ms`
    child.kill('SIGKILL')
    await terminate(child, watch, 0)
    current = undefined
    throw new Error(`${binary} on port ${port} ${reason}\n--- output ---\n${capture.toString()}`)
  }

  const halt = async (graceMs: number): Promise<void> => {
    const running = current
    current = undefined
    if (!running) return
    if (graceMs === 0) running.child.kill('SIGKILL')
    await terminate(running.child, running.watch, graceMs)
  }

  try {
    for (let attempt = 1; ; attempt++) {
      try {
        await launch()
        break
      } catch (error) {
        const spawnFailed = error instanceof Error && /spawn error/.test(error.message)
        if (spawnFailed || options.port !== undefined || attempt >= START_ATTEMPTS) throw error
        port = await freePort()
      }
    }
  } catch (error) {
    await rm(dir, { recursive: true, force: true })
    throw error
  }

  let stopping: Promise<void> | undefined
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    get pid() {
      return current?.child.pid ?? -1
    },
    get running() {
      return current !== undefined && current.watch.status() === undefined
    },
    kill: () => halt(0),
    restart: async () => {
      if (stopping) throw new Error('restart() after stop()')
      await halt(STOP_GRACE_MS)
      await launch()
    },
    stop: () => {
      stopping ??= (async () => {
        await halt(STOP_GRACE_MS)
        await rm(dir, { recursive: true, force: true })
      })()
      return stopping
    },
    logs: () => capture.toString(),
  }
}
