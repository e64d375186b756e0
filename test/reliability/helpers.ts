// Shared bits of the reliability suite: figure lines, temp folders, child processes, real TLS clients, a
// TLS-ALPN-01 challenge certificate made with openssl, and process memory / descriptor readings.
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { type RequestOptions, request } from 'node:https'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type DetailedPeerCertificate, type PeerCertificate, type TLSSocket, connect as tlsConnect } from 'node:tls'
import { fileURLToPath } from 'node:url'
import { acmeServerFactory, type FastifyAcmeOptions, fastifyAcme } from '@autotls/fastify-acme'
import Fastify, { type FastifyInstance } from 'fastify'

export const ROOT = fileURLToPath(new URL('../..', import.meta.url))

/** Prints one figure line; node:test shows lines starting with '# ' in its output, so they reach CI logs. */
export function figure(text: string): void {
  console.log(`# ${text}`)
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

export async function tempDir(prefix: string): Promise<{ path: string; remove(): Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), `autotls-rel-${prefix}-`))
  return { path, remove: () => rm(path, { recursive: true, force: true }) }
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!
}

/** Runs a command with stdin at EOF (so `openssl s_client` exits after the handshake); never rejects. */
export function run(cmd: string, args: string[], timeoutMs = 60_000): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString()
    })
    child.stderr.on('data', (d: Buffer) => {
      out += d.toString()
    })
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.on('error', (err) => {
      clearTimeout(timer)
      resolve({ code: 127, out: `${out}${err.message}` })
    })
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code: code ?? 1, out })
    })
  })
}

/**
 * Bundles a TypeScript entry (workspace packages from their sources) into one self-contained ESM file with the
 * esbuild that tsx ships, so a child process starts in tens of milliseconds instead of seconds: what the
 * SIGKILL loops need. The bundle runs the very same source as the tests.
 */
export async function bundle(entry: string, outDir: string): Promise<string> {
  const requireFromTsx = createRequire(createRequire(import.meta.url).resolve('tsx'))
  const esbuild = requireFromTsx('esbuild') as {
    build(options: Record<string, unknown>): Promise<unknown>
  }
  const outfile = join(outDir, `${entry.replace(/^.*\//, '').replace(/\.ts$/, '')}.mjs`)
  await esbuild.build({
    entryPoints: [entry],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    outfile,
    conditions: ['source'],
    logLevel: 'error',
    // Some dependencies are CommonJS that call require() on node built-ins.
    banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
  })
  return outfile
}

/** A child `node --import tsx --conditions=source <script>` with IPC; killed by PID when the test ends. */
export function spawnTs(script: string, args: string[] = [], env: NodeJS.ProcessEnv = {}): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', '--conditions=source', script, ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  })
}

/** Resolves with the first IPC message of `child` that satisfies `match`; rejects if the child exits first. */
export function message<T>(
  child: ChildProcess,
  match: (m: T) => boolean,
  timeoutMs = 60_000,
  ask?: () => void,
): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup()
      reject(new Error(`no matching message from child ${child.pid} within ${timeoutMs} ms`))
    }, timeoutMs)
    const onMessage = (m: T) => {
      if (!match(m)) return
      cleanup()
      resolve(m)
    }
    const onExit = (code: number | null, signal: string | null) => {
      cleanup()
      reject(new Error(`child ${child.pid} exited (${code ?? signal}) before the expected message`))
    }
    const cleanup = () => {
      clearTimeout(timer)
      child.off('message', onMessage)
      child.off('exit', onExit)
    }
    child.on('message', onMessage)
    child.on('exit', onExit)
    ask?.()
  })
}

export function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => child.once('exit', () => resolve()))
}

export async function killChild(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return
  child.kill('SIGKILL')
  await exited(child)
}

/** RSS of a process in MB, from /proc. */
export async function rssMb(pid = process.pid): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? Number.NaN)
  return kb / 1024
}

/** Open file descriptors of a process. */
export async function fdCount(pid = process.pid): Promise<number> {
  return (await readdir(`/proc/${pid}/fd`)).length
}

/**
 * A TLS-ALPN-01 challenge certificate for `name` (RFC 8737: one DNS SAN and the critical acmeIdentifier extension),
 * made with openssl so the suite does not depend on the plugin's own code to make what it checks for.
 */
export async function challengeCertificate(name: string): Promise<{ key: string; cert: string }> {
  const dir = await tempDir('challenge')
  try {
    const digest = Buffer.alloc(32, 7).toString('hex').replace(/(..)/g, '$1:').slice(0, -1)
    const { code, out } = await run('openssl', [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      join(dir.path, 'key.pem'),
      '-out',
      join(dir.path, 'cert.pem'),
      '-days',
      '1',
      '-subj',
      `/CN=${name}`,
      '-addext',
      `subjectAltName=DNS:${name}`,
      '-addext',
      `1.3.6.1.5.5.7.1.31=critical,DER:04:20:${digest}`,
    ])
    if (code !== 0) throw new Error(`openssl failed: ${out}`)
    const [key, cert] = await Promise.all([
      readFile(join(dir.path, 'key.pem'), 'utf8'),
      readFile(join(dir.path, 'cert.pem'), 'utf8'),
    ])
    return { key, cert }
  } finally {
    await dir.remove()
  }
}

/** True when `cert` carries the critical acmeIdentifier extension of a TLS-ALPN-01 certificate. */
export function isChallengeCertificate(cert: PeerCertificate | undefined): boolean {
  const raw = (cert as DetailedPeerCertificate | undefined)?.raw
  if (!raw) return false
  return raw.includes(Buffer.from('06082b06010505070' + '11f0101ff', 'hex'))
}

export type HandshakeResult =
  | { ok: true; cert: DetailedPeerCertificate; alpn: string | false | null; protocol: string | null }
  | { ok: false; error: string }

/** A bare TLS handshake to 127.0.0.1:port; resolves with what the server chose, never rejects. */
export function handshake(opts: {
  port: number
  servername?: string | undefined
  alpn?: string[] | undefined
  version?: 'TLSv1.2' | 'TLSv1.3' | undefined
  ca?: string | string[] | undefined
  timeoutMs?: number
}): Promise<HandshakeResult> {
  return new Promise((resolve) => {
    const socket = tlsConnect({
      host: '127.0.0.1',
      port: opts.port,
      ...(opts.servername !== undefined ? { servername: opts.servername } : {}),
      ...(opts.alpn ? { ALPNProtocols: opts.alpn } : {}),
      ...(opts.version ? { minVersion: opts.version, maxVersion: opts.version } : {}),
      ...(opts.ca ? { ca: opts.ca } : { rejectUnauthorized: false }),
    })
    let settled = false
    const done = (value: HandshakeResult) => {
      if (settled) return
      settled = true
      socket.destroy()
      resolve(value)
    }
    socket.on('secureConnect', () =>
      done({
        ok: true,
        cert: socket.getPeerCertificate(true),
        alpn: socket.alpnProtocol,
        protocol: socket.getProtocol(),
      }),
    )
    socket.on('error', (err) => done({ ok: false, error: err.message }))
    socket.on('close', () => done({ ok: false, error: 'closed before the handshake completed' }))
    socket.setTimeout(opts.timeoutMs ?? 5000, () => done({ ok: false, error: 'timeout' }))
  })
}

export interface GetResult {
  status: number
  body: string
  cert: PeerCertificate
}

/** A real HTTPS/1.1 GET on a new connection to 127.0.0.1:port, SNI and Host = name, chain verified against `ca`. */
export function httpsGet(
  port: number,
  name: string,
  ca: string | string[],
  path = '/',
  host = name,
): Promise<GetResult> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path,
        servername: name,
        headers: { host },
        ca,
        agent: false,
        ALPNProtocols: ['http/1.1'],
        timeout: 10_000,
      } as RequestOptions,
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            body: Buffer.concat(chunks).toString('utf8'),
            cert: (res.socket as TLSSocket).getPeerCertificate(),
          }),
        )
        res.on('error', reject)
      },
    )
    req.on('timeout', () => req.destroy(new Error('request timed out')))
    req.on('error', reject)
    req.end()
  })
}

/** Keeps making requests (each on a new connection) until stopped; counts successes and failures. */
export function steadyLoad(get: () => Promise<{ status: number }>, pauseMs = 20) {
  const result = { ok: 0, failed: 0, errors: [] as string[] }
  let running = true
  const loop = (async () => {
    while (running) {
      try {
        const res = await get()
        if (res.status === 200) result.ok++
        else {
          result.failed++
          if (result.errors.length < 20) result.errors.push(`status ${res.status}`)
        }
      } catch (err) {
        result.failed++
        if (result.errors.length < 20) result.errors.push((err as Error).message)
      }
      await sleep(pauseMs)
    }
  })()
  return {
    result,
    async stop() {
      running = false
      await loop
      return result
    },
  }
}

export async function writeJson(path: string, value: unknown): Promise<void> {
  await writeFile(path, JSON.stringify(value))
}

export interface AcmeAppOptions {
  port: number
  acme: FastifyAcmeOptions
  /** Collects the app's JSON log lines at this level (default: no logger). */
  log?: { level: string; lines: string[] }
  tls?: Record<string, unknown>
}

/** A Fastify app on acmeServerFactory with the plugin registered, listening on 127.0.0.1:port. */
export async function startAcmeApp(opts: AcmeAppOptions): Promise<FastifyInstance> {
  const app = Fastify({
    serverFactory: acmeServerFactory(opts.tls ? { tls: opts.tls } : {}),
    ...(opts.log
      ? { logger: { level: opts.log.level, stream: { write: (line: string) => opts.log?.lines.push(line) } } }
      : {}),
  } as never) as unknown as FastifyInstance
  await app.register(fastifyAcme, opts.acme)
  app.get('/', async () => 'ok')
  await app.listen({ port: opts.port, host: '127.0.0.1' })
  return app
}

/** Resolves with the first JSON log line whose msg is `msg`, polling `lines` every 20 ms; rejects after timeoutMs. */
export async function logged(lines: string[], msg: string, timeoutMs = 30_000): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    for (const line of lines) {
      const entry = JSON.parse(line) as Record<string, unknown>
      if (entry['msg'] === msg) return entry
    }
    if (Date.now() > deadline) throw new Error(`no log line '${msg}' within ${timeoutMs} ms`)
    await sleep(20)
  }
}

/**
 * After a restart on a folder holding a certificate for each of `names`, waits for the last start-up work that could
 * order one: the background check of the cached records (it starts a second after listening). Once it has passed
 * every record, and every name is planned for renewal later, nothing can order; checks both.
 */
export async function startupSettled(app: FastifyInstance, lines: string[], names: readonly string[]): Promise<void> {
  const check = await logged(lines, 'fastify-acme: cached certificates checked')
  assert.equal(check['rejected'], 0, 'the background check rejected no cached certificate')
  assert.equal(check['checked'], names.length, 'the background check covered every cached certificate')
  for (const name of names) {
    const next = app.acme.status(name)?.nextAction
    assert.equal(next?.kind, 'renew', `${name}: planned for renewal`)
    assert.ok(Date.parse(next?.at ?? '') > Date.now(), `${name}: renewal still ahead`)
  }
}
