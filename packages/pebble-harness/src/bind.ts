// Owns a BIND 9 `named` process (Debian's `bind9` package): a real authoritative DNS server on a free loopback port
// with test zones that accept RFC 2136 dynamic updates signed with a TSIG key, for DNS-01 tests. Point Pebble at it
// with `startPebble({ dnsServer: bind.address })`; names outside its zones can be forwarded to a challtestsrv.
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { Resolver } from 'node:dns/promises'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePorts } from './ports.js'
import { findBinary, LogCapture, sleep, terminate, track, watchExit } from './processes.js'

/** TSIG algorithms named accepts in a `key` statement (the ones DNS-01 providers use). */
export type BindTsigAlgorithm = 'hmac-sha1' | 'hmac-sha224' | 'hmac-sha256' | 'hmac-sha384' | 'hmac-sha512'

/** One zone named is authoritative (primary) for. */
export interface BindZone {
  /** Zone name, e.g. `acme.test` (with or without the final dot). */
  name: string
  /**
   * Names for the zone's NS records. Default `[ns.<zone>]`. A name inside the zone gets an A record 127.0.0.1; one
   * outside it must resolve elsewhere. Other servers listed here never get this server's updates, which is how a
   * test plays an authoritative server the record has not reached.
   */
  nameservers?: string[]
  /** Extra zone-file lines, relative to the zone origin, e.g. `_acme-challenge.www CNAME www.validation.test.`. */
  records?: string[]
  /** Whether the harness's TSIG key may update the zone (RFC 2136). Default true. */
  allowUpdate?: boolean
}

/** Options of {@link startBind}. */
export interface BindOptions {
  /** Default {@link DEFAULT_BIND_ZONES}: `acme.test` and `validation.test` (the CNAME-delegation target). */
  zones?: BindZone[]
  /** The TSIG key allowed to update. Default: name `autotls-test-key.`, hmac-sha256, a random 32-byte secret. */
  key?: { name?: string; algorithm?: BindTsigAlgorithm; secret?: string }
  /**
   * `host:port` servers that names outside the zones are forwarded to (e.g. a challtestsrv, so Pebble pointed at
   * named still resolves every other name to 127.0.0.1). Default none: named answers REFUSED for those names.
   */
  forwarders?: string[]
  /** UDP and TCP port on 127.0.0.1. Default: one free on both right now. */
  port?: number
  /** Path of `named`, default `named` on PATH, else /usr/sbin/named. */
  binary?: string
}

/** A running named started by {@link startBind}. */
export interface Bind {
  host: '127.0.0.1'
  /** UDP and TCP port of the DNS server. */
  port: number
  /** `127.0.0.1:<port>`: for Pebble's `-dnsserver`, node:dns `setServers`, and RFC 2136 providers. */
  address: string
  /** The zones served, fully qualified (`acme.test.`). */
  zones: string[]
  /** The TSIG key that may update the zones (`secret` is base64). */
  key: { name: string; algorithm: BindTsigAlgorithm; secret: string }
  pid: number
  /** A node:dns resolver that asks only this server. */
  resolver(): Resolver
  /** The TXT values at `name` as this server answers them now (chunks joined); `[]` when there are none. */
  txt(name: string): Promise<string[]>
  /** The CNAME target at `name`, or undefined. */
  cname(name: string): Promise<string | undefined>
  /** named's output so far (`-g`: its log goes to stderr). */
  logs(): string
  /** SIGTERM (SIGKILL after 2 s), remove the temp dir. Idempotent. */
  stop(): Promise<void>
}

/** The default zones: `acme.test` (A 127.0.0.1 at the apex and for every name under it) and `validation.test`. */
export const DEFAULT_BIND_ZONES: readonly BindZone[] = [{ name: 'acme.test' }, { name: 'validation.test' }]

const READY_TIMEOUT_MS = 10_000
const STOP_GRACE_MS = 2_000
const START_ATTEMPTS = 3

function absolute(name: string): string {
  if (name.length === 0 || /[\s/";{}]/.test(name)) throw new TypeError(`not a DNS name: ${JSON.stringify(name)}`)
  return name.endsWith('.') ? name.toLowerCase() : `${name.toLowerCase()}.`
}

function parseAddress(address: string): { host: string; port: number } {
  const match = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/.exec(address)
  if (!match) throw new TypeError(`forwarders take IPv4 host:port, got ${JSON.stringify(address)}`)
  return { host: match[1]!, port: Number(match[2]) }
}

function zoneFile(zone: BindZone): string {
  const origin = absolute(zone.name)
  const nameservers = (zone.nameservers ?? [`ns.${origin}`]).map(absolute)
  const lines = [
    `$ORIGIN ${origin}`,
    '$TTL 60',
    // Short timers: a secondary is never configured, but a test reading the SOA sees sane values.
    `@ IN SOA ${nameservers[0]} hostmaster.${origin} 1 60 30 600 10`,
    ...nameservers.map((ns) => `@ IN NS ${ns}`),
    ...nameservers.filter((ns) => ns.endsWith(`.${origin}`)).map((ns) => `${ns} IN A 127.0.0.1`),
    '@ IN A 127.0.0.1',
    '* IN A 127.0.0.1',
    ...(zone.records ?? []),
  ]
  return `${lines.join('\n')}\n`
}

function namedConf(dir: string, port: number, zones: BindZone[], key: Bind['key'], forwarders: string[]): string {
  const forward = forwarders.map(parseAddress)
  return `${[
    'options {',
    `  directory "${dir}";`,
    `  listen-on port ${port} { 127.0.0.1; };`,
    '  listen-on-v6 { none; };',
    '  pid-file none;',
    '  session-keyfile none;',
    '  dnssec-validation no;',
    // Several named per machine: no fixed ports besides ours (no rndc on 953, see `controls`).
    '  notify no;',
    ...(forward.length > 0
      ? [
          '  recursion yes;',
          '  allow-recursion { 127.0.0.1; };',
          '  forward only;',
          `  forwarders { ${forward.map((f) => `${f.host} port ${f.port};`).join(' ')} };`,
          // The forwarded-to server's records change during a test: do not cache them.
          '  max-cache-ttl 1;',
          '  max-ncache-ttl 1;',
        ]
      : ['  recursion no;']),
    '};',
    'controls { };',
    `key "${key.name}" { algorithm ${key.algorithm}; secret "${key.secret}"; };`,
    ...zones.map(
      (zone, i) =>
        `zone "${absolute(zone.name)}" { type primary; file "zone-${i}.db"; ${
          zone.allowUpdate === false ? '' : `allow-update { key "${key.name}"; };`
        } };`,
    ),
  ].join('\n')}\n`
}

async function launch(binary: string, options: BindOptions, port: number): Promise<Bind> {
  const zones = options.zones ?? [...DEFAULT_BIND_ZONES]
  if (zones.length === 0) throw new TypeError('startBind needs at least one zone')
  const key: Bind['key'] = {
    name: absolute(options.key?.name ?? 'autotls-test-key'),
    algorithm: options.key?.algorithm ?? 'hmac-sha256',
    secret: options.key?.secret ?? randomBytes(32).toString('base64'),
  }
  const dir = await mkdtemp(join(tmpdir(), 'autotls-bind-'))
  try {
    for (const [i, zone] of zones.entries()) await writeFile(join(dir, `zone-${i}.db`), zoneFile(zone))
    const confPath = join(dir, 'named.conf')
    await writeFile(confPath, namedConf(dir, port, zones, key, options.forwarders ?? []), { mode: 0o600 })
    const capture = new LogCapture(() => {})
    // -g: foreground, log to stderr, no setuid (runs as the test user, who owns the temp dir and its journals).
    // -n 1: one worker thread; the machines running tests are small and shared.
    const child = spawn(binary, ['-g', '-n', '1', '-c', confPath], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
    capture.attach(child.stdout)
    capture.attach(child.stderr)
    const watch = watchExit(child)
    track(child, dir)
    let stopping: Promise<void> | undefined
    const stop = (): Promise<void> => {
      stopping ??= (async () => {
        await terminate(child, watch, STOP_GRACE_MS)
        await rm(dir, { recursive: true, force: true })
      })()
      return stopping
    }
    const address = `127.0.0.1:${port}`
    const resolver = (): Resolver => {
      const r = new Resolver({ timeout: 1_000, tries: 2 })
      r.setServers([address])
      return r
    }
    const bind: Bind = {
      host: '127.0.0.1',
      port,
      address,
      zones: zones.map((z) => absolute(z.name)),
      key,
      pid: child.pid ?? -1,
      resolver,
      txt: async (name) => {
        try {
          return (await resolver().resolveTxt(name)).map((chunks) => chunks.join(''))
        } catch (error) {
          if (isNoData(error)) return []
          throw error
        }
      },
      cname: async (name) => {
        try {
          return (await resolver().resolveCname(name))[0]
        } catch (error) {
          if (isNoData(error)) return undefined
          throw error
        }
      },
      logs: () => capture.toString(),
      stop,
    }
    // "running" is printed once every zone is loaded and the listeners are up.
    const deadline = Date.now() + READY_TIMEOUT_MS
    while (Date.now() < deadline && watch.status() === undefined) {
      if (/\brunning\b/.test(capture.toString())) {
        // Listening on UDP is not proof of TCP; one SOA query over the resolver checks the server answers.
        try {
          await resolver().resolveSoa(bind.zones[0]!)
          return bind
        } catch {}
      }
      await sleep(50)
    }
    const reason = watch.status() ? `exited early (${watch.status()})` : `not ready after ${READY_TIMEOUT_MS} ms`
    child.kill('SIGKILL')
    await stop()
    throw new Error(`named (${binary}) ${reason}\n--- named output ---\n${capture.toString()}`)
  } catch (error) {
    await rm(dir, { recursive: true, force: true })
    throw error
  }
}

function isNoData(error: unknown): boolean {
  const code = (error as { code?: string } | undefined)?.code
  return code === 'ENODATA' || code === 'ENOTFOUND'
}

/**
 * Start Debian's BIND 9 `named` on a free 127.0.0.1 port (UDP and TCP) with test zones that the returned TSIG key
 * may update, and wait until it answers (10 s at most). A lost port race is retried (3 attempts) unless `port` was
 * given. On failure the thrown Error carries named's output.
 */
export async function startBind(options: BindOptions = {}): Promise<Bind> {
  const binary = options.binary ?? (await findNamed())
  let lastError: unknown
  for (let attempt = 0; attempt < (options.port ? 1 : START_ATTEMPTS); attempt++) {
    const port = options.port ?? (await freePorts(1))[0]!
    try {
      return await launch(binary, options, port)
    } catch (error) {
      lastError = error
      if (error instanceof Error && /spawn error|not a DNS name|at least one zone|host:port/.test(error.message)) break
    }
  }
  throw lastError
}

async function findNamed(): Promise<string> {
  const found = await findBinary('named')
  // /usr/sbin is not on every PATH (non-root shells).
  return found === '/usr/bin/named' ? '/usr/sbin/named' : found
}
