// Orchestrator side of servers/acme-server.ts: start it pinned to the proxy core with N cached names, time how long
// until a client's handshake for one of them succeeds, and talk to its control port.
import { connect } from 'node:tls'
import { fileURLToPath } from 'node:url'
import { freePort } from '@autotls/pebble-harness'
import { type Child, PROXY_CORE, startPinned } from './sys.js'

const SCRIPT = fileURLToPath(new URL('../servers/acme-server.ts', import.meta.url))

export interface AcmeServer {
  pid: number
  port: number
  child: Child
  /** From spawning the process to the first successful handshake for a managed name (Node start-up included). */
  spawnToServeMs: number
  /** Inside the process: creating the app, loading the store, listening. */
  loadedMs: number
  stats(): Promise<{
    rss: number
    heapUsed: number
    resolver: { contextsBuilt: number }
    size: number
    /** The plugin's background check of its cached pairs, once finished (null before, or with --load=storage). */
    check: { checked: number; of: number; rejected: number; ms: number } | null
  }>
  check(): Promise<{ check: { checked: number; of: number; rejected: number; ms: number } | null }>
  prewarm(count: number): Promise<{ built: number; ms: number }>
  peek(on: boolean): Promise<{ peek: boolean; stats: { peeked: number } }>
  stop(): Promise<void>
}

function handshakeOk(port: number, servername: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false })
    socket.setTimeout(2000, () => socket.destroy())
    socket.once('secureConnect', () => {
      socket.end()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
    socket.once('close', () => resolve(false))
  })
}

async function readyLine(child: Child, timeoutMs: number): Promise<{ control: number; loadedMs: number }> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const line = child
      .output()
      .split('\n')
      .find((l) => l.startsWith('{"ready"'))
    if (line) return JSON.parse(line) as { control: number; loadedMs: number }
    if (child.proc.exitCode !== null) throw new Error(`acme-server exited:\n${child.output().slice(-3000)}`)
    if (Date.now() > deadline) throw new Error(`acme-server not ready after ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

export async function startAcmeServer(o: {
  store: string
  directoryUrl: string
  names: number
  suffix: string
  load: 'plugin' | 'storage'
  timeoutMs?: number
}): Promise<AcmeServer> {
  const port = await freePort()
  const t0 = performance.now()
  const child = startPinned(
    PROXY_CORE,
    process.execPath,
    [
      '--expose-gc',
      '--max-old-space-size=8192',
      '--import',
      'tsx',
      '--conditions=source',
      SCRIPT,
      `--port=${port}`,
      `--store=${o.store}`,
      `--directory=${o.directoryUrl}`,
      `--names=${o.names}`,
      `--suffix=${o.suffix}`,
      `--load=${o.load}`,
    ],
    { keepOutput: false },
  )
  const timeoutMs = o.timeoutMs ?? 600_000
  try {
    // Poll a handshake for a managed name: the first success is "serving".
    const deadline = Date.now() + timeoutMs
    const name = `n${Math.floor(Math.random() * o.names)}.${o.suffix}`
    let spawnToServeMs = Number.NaN
    for (;;) {
      if (child.proc.exitCode !== null) throw new Error(`acme-server exited:\n${child.output().slice(-3000)}`)
      if (await handshakeOk(port, name)) {
        spawnToServeMs = performance.now() - t0
        break
      }
      if (Date.now() > deadline) throw new Error('acme-server never served')
      await new Promise((r) => setTimeout(r, 10))
    }
    const ready = await readyLine(child, 30_000)
    const get = async <T>(path: string): Promise<T> => {
      const res = await fetch(`http://127.0.0.1:${ready.control}${path}`)
      return (await res.json()) as T
    }
    return {
      pid: child.pid,
      port,
      child,
      spawnToServeMs,
      loadedMs: ready.loadedMs,
      stats: () => get('/stats'),
      check: () => get('/check'),
      prewarm: (count) => get(`/prewarm?count=${count}`),
      peek: (on) => get(`/peek?on=${on ? 1 : 0}`),
      stop: () => child.stop(),
    }
  } catch (err) {
    await child.stop()
    throw err
  }
}
