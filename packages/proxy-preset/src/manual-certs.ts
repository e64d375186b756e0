// Manual certificate files: load, validate, serve, and reload them when they change on disk, without a restart.
// A change is noticed by fs.watch on the files' directories (debounced, so a cert+key pair written one after the
// other is read once) and, as a fallback for file systems where watching is unreliable, by a periodic stat().
// Every candidate pair is validated before it is served: it parses, the key matches the leaf, every chain
// certificate parses, it covers its hosts, and it is within its validity period. A bad candidate is refused and
// the pair being served stays; the next change is tried again.
import { createHash, X509Certificate } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { type FSWatcher, watch } from 'node:fs'
import { readFile, stat } from 'node:fs/promises'
import { isIP } from 'node:net'
import { basename, dirname, resolve } from 'node:path'
import type { CertificateInfo, CertResolver, KeyCertPair } from '@autotls/fastify-acme'
import { checkPair } from '@autotls/fastify-acme/internal'
import type { FastifyBaseLogger } from 'fastify'
import { atOption, ERR_BAD_CERTIFICATE } from './errors.js'
import { parseRouteHost } from './hosts.js'

/** Accepted clock skew for a certificate whose validity starts in the (near) future. */
const NOT_BEFORE_SKEW_MS = 5 * 60_000

export interface ManualCertificateSource {
  cert: string
  key: string
  /** Hosts served with this pair; undefined: the certificate's DNS names. */
  hosts: string[] | undefined
}

export interface ManualCertificateStatus {
  cert: string
  key: string
  /** Hosts this pair serves; empty for the default certificate. */
  hosts: string[]
  isDefault: boolean
  serial: string
  notAfter: string
  issuer: string
  loadedAt: string
  reloads: number
  lastError?: { message: string; at: string }
}

export interface ManualCertificateEvents {
  reloaded: { cert: string; hosts: string[]; serial: string; notAfter: string }
  rejected: { cert: string; hosts: string[]; error: Error }
}

export interface ManualCertificatesDeps {
  sources: ManualCertificateSource[]
  defaultSource: { cert: string; key: string } | undefined
  resolver: CertResolver
  log: FastifyBaseLogger
  debounceMs: number
  pollIntervalMs: number
  /** Called with the new default pair (the server's own context must be replaced too). */
  onDefault?: (pair: KeyCertPair) => void
  now?: () => number
}

interface Entry {
  certPath: string
  keyPath: string
  hosts: string[]
  isDefault: boolean
  fingerprint: string | undefined
  rejectedFingerprint: string | undefined
  signature: string
  info: CertificateInfo | undefined
  loadedAt: number
  reloads: number
  lastError: { message: string; at: string } | undefined
  timer: NodeJS.Timeout | undefined
  running: Promise<void> | undefined
  again: boolean
}

function fingerprint(key: string, cert: string): string {
  return createHash('sha256').update(key).update('\0').update(cert).digest('hex')
}

function covers(info: CertificateInfo, host: string): boolean {
  if (info.subjectAltNames.includes(host)) return true
  if (isIP(host) !== 0) return info.leaf.checkIP(host) !== undefined
  if (host.startsWith('*.')) return false
  return info.leaf.checkHost(host) !== undefined
}

/**
 * Checks a key and chain before serving them. Throws FPROXY_BAD_CERTIFICATE with the reason; the cause is kept.
 * Exported for tests and for callers that want to check files before writing them in place.
 */
export function validatePair(
  label: string,
  keyPem: string,
  chainPem: string,
  hosts: readonly string[],
  now: number = Date.now(),
): CertificateInfo {
  let info: CertificateInfo
  try {
    info = checkPair('', keyPem, chainPem)
  } catch (err) {
    throw new ERR_BAD_CERTIFICATE(label, (err as Error).message.replace(/^fastify-acme: /, ''), { cause: err })
  }
  if (info.notAfter.getTime() <= now) {
    throw new ERR_BAD_CERTIFICATE(label, `it expired on ${info.notAfter.toISOString()}`)
  }
  if (info.notBefore.getTime() > now + NOT_BEFORE_SKEW_MS) {
    throw new ERR_BAD_CERTIFICATE(label, `it is not valid before ${info.notBefore.toISOString()}`)
  }
  for (const host of hosts) {
    if (!covers(info, host)) throw new ERR_BAD_CERTIFICATE(label, `it does not cover ${host}`)
  }
  return info
}

/** Warns about chains in the wrong order: clients vary in how they cope, so it is worth a log line, not a refusal. */
function chainOrderProblem(chainPem: string): string | undefined {
  const pems = chainPem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []
  for (let i = 0; i + 1 < pems.length; i++) {
    const child = new X509Certificate(pems[i]!)
    const parent = new X509Certificate(pems[i + 1]!)
    if (!child.checkIssued(parent)) return `certificate ${i + 1} of the chain is not issued by certificate ${i + 2}`
  }
  return undefined
}

export class ManualCertificates {
  readonly #entries: Entry[]
  readonly #deps: ManualCertificatesDeps
  readonly #now: () => number
  readonly #events = new EventEmitter()
  readonly #watchers: FSWatcher[] = []
  #poll: NodeJS.Timeout | undefined
  #closed = false

  constructor(deps: ManualCertificatesDeps) {
    this.#deps = deps
    this.#now = deps.now ?? Date.now
    const entry = (cert: string, key: string, hosts: string[], isDefault: boolean): Entry => ({
      certPath: resolve(cert),
      keyPath: resolve(key),
      hosts,
      isDefault,
      fingerprint: undefined,
      rejectedFingerprint: undefined,
      signature: '',
      info: undefined,
      loadedAt: 0,
      reloads: 0,
      lastError: undefined,
      timer: undefined,
      running: undefined,
      again: false,
    })
    this.#entries = deps.sources.map((s, i) =>
      entry(
        s.cert,
        s.key,
        (s.hosts ?? []).map((h, j) => {
          try {
            return parseRouteHost(h).host
          } catch (err) {
            throw atOption(err as Error, ['certificates', i, 'hosts', j])
          }
        }),
        false,
      ),
    )
    if (deps.defaultSource) this.#entries.push(entry(deps.defaultSource.cert, deps.defaultSource.key, [], true))
  }

  /** First load: every file must be readable and valid, else this throws (a proxy must not start half-configured). */
  async load(): Promise<void> {
    for (const [i, entry] of this.#entries.entries()) {
      try {
        await this.#loadOne(entry)
      } catch (err) {
        throw atOption(err as Error, entry.isDefault ? ['defaultCertificate'] : ['certificates', i])
      }
    }
  }

  async #loadOne(entry: Entry): Promise<void> {
    {
      const { key, cert } = await this.#read(entry)
      if (!entry.isDefault && entry.hosts.length === 0) {
        const info = validatePair(entry.certPath, key, cert, [], this.#now())
        entry.hosts = info.subjectAltNames.map((h) => parseRouteHost(h).host)
        if (entry.hosts.length === 0) {
          throw new ERR_BAD_CERTIFICATE(entry.certPath, 'it has no DNS names; list the hosts it serves in `hosts`')
        }
      }
      this.#apply(entry, key, cert, validatePair(entry.certPath, key, cert, entry.hosts, this.#now()))
      entry.signature = await this.#signature(entry)
    }
  }

  /** Hosts served from manual files (exact and `*.` entries), not counting the default certificate. */
  hosts(): string[] {
    return [...new Set(this.#entries.flatMap((e) => e.hosts))]
  }

  get hasDefault(): boolean {
    return this.#entries.some((e) => e.isDefault)
  }

  status(): ManualCertificateStatus[] {
    return this.#entries.map((e) => ({
      cert: e.certPath,
      key: e.keyPath,
      hosts: [...e.hosts],
      isDefault: e.isDefault,
      serial: e.info?.serial ?? '',
      notAfter: e.info?.notAfter.toISOString() ?? '',
      issuer: e.info?.issuer ?? '',
      loadedAt: new Date(e.loadedAt).toISOString(),
      reloads: e.reloads,
      ...(e.lastError ? { lastError: { ...e.lastError } } : {}),
    }))
  }

  on<K extends keyof ManualCertificateEvents>(event: K, listener: (p: ManualCertificateEvents[K]) => void): () => void {
    this.#events.on(event, listener)
    return () => this.#events.off(event, listener)
  }

  /** Starts watching the files (fs.watch on their directories + a periodic stat). */
  start(): void {
    // Directories, not files: tools replace certificates by renaming a new file over the old one (or by swapping
    // symlinks, as certbot does), which a watch on the old file would not see.
    const dirs = new Set(this.#entries.flatMap((e) => [dirname(e.certPath), dirname(e.keyPath)]))
    for (const dir of dirs) {
      try {
        const watcher = watch(dir, { persistent: false }, (_event, filename) => {
          // Some platforms give no file name; then any change in the directory may concern us.
          const name = filename === null ? undefined : filename.toString()
          for (const entry of this.#entries) {
            if (
              name === undefined ||
              (dirname(entry.certPath) === dir && basename(entry.certPath) === name) ||
              (dirname(entry.keyPath) === dir && basename(entry.keyPath) === name)
            ) {
              this.#schedule(entry)
            }
          }
        })
        watcher.on('error', (err) => {
          this.#deps.log.warn({ err, dir }, 'watching certificate directory failed; relying on the periodic check')
        })
        this.#watchers.push(watcher)
      } catch (err) {
        this.#deps.log.warn({ err, dir }, 'cannot watch certificate directory; relying on the periodic check')
      }
    }
    if (this.#deps.pollIntervalMs > 0) {
      this.#poll = setInterval(() => void this.#pollOnce(), this.#deps.pollIntervalMs)
      this.#poll.unref()
    }
  }

  /** Re-reads every pair now (what a SIGHUP handler would call). Resolves when all attempts are done. */
  async reloadAll(): Promise<void> {
    await Promise.all(this.#entries.map((e) => this.#reload(e)))
  }

  async close(): Promise<void> {
    this.#closed = true
    for (const watcher of this.#watchers) watcher.close()
    this.#watchers.length = 0
    if (this.#poll) clearInterval(this.#poll)
    for (const entry of this.#entries) if (entry.timer) clearTimeout(entry.timer)
    await Promise.all(this.#entries.map((e) => e.running))
    this.#events.removeAllListeners()
  }

  #schedule(entry: Entry): void {
    if (this.#closed) return
    if (entry.timer) clearTimeout(entry.timer)
    entry.timer = setTimeout(() => {
      entry.timer = undefined
      void this.#reload(entry)
    }, this.#deps.debounceMs)
    entry.timer.unref()
  }

  async #pollOnce(): Promise<void> {
    for (const entry of this.#entries) {
      if (this.#closed) return
      const signature = await this.#signature(entry)
      if (signature !== entry.signature) void this.#reload(entry)
    }
  }

  async #signature(entry: Entry): Promise<string> {
    const parts = await Promise.all(
      [entry.certPath, entry.keyPath].map(async (file) => {
        try {
          const s = await stat(file)
          return `${s.ino}:${s.size}:${s.mtimeMs}`
        } catch {
          return 'missing'
        }
      }),
    )
    return parts.join('|')
  }

  async #read(entry: Entry): Promise<KeyCertPair> {
    try {
      const [cert, key] = await Promise.all([readFile(entry.certPath, 'utf8'), readFile(entry.keyPath, 'utf8')])
      return { cert, key }
    } catch (err) {
      throw new ERR_BAD_CERTIFICATE(entry.certPath, `cannot read the files: ${(err as Error).message}`, { cause: err })
    }
  }

  /** One reload at a time per entry; a change during a reload triggers one more. */
  #reload(entry: Entry): Promise<void> {
    if (entry.running) {
      entry.again = true
      return entry.running
    }
    entry.running = (async () => {
      do {
        entry.again = false
        await this.#reloadOnce(entry)
      } while (entry.again && !this.#closed)
    })().finally(() => {
      entry.running = undefined
    })
    return entry.running
  }

  async #reloadOnce(entry: Entry): Promise<void> {
    if (this.#closed) return
    entry.signature = await this.#signature(entry)
    let pair: KeyCertPair
    try {
      pair = await this.#read(entry)
    } catch (err) {
      this.#reject(entry, err as Error, undefined)
      return
    }
    const print = fingerprint(pair.key, pair.cert)
    if (print === entry.fingerprint || print === entry.rejectedFingerprint) return
    let info: CertificateInfo
    try {
      info = validatePair(entry.certPath, pair.key, pair.cert, entry.hosts, this.#now())
      this.#apply(entry, pair.key, pair.cert, info)
    } catch (err) {
      this.#reject(entry, err as Error, print)
      return
    }
    entry.reloads++
    this.#deps.log.info(
      { cert: entry.certPath, hosts: entry.hosts, serial: info.serial, notAfter: info.notAfter.toISOString() },
      'certificate reloaded from disk',
    )
    this.#events.emit('reloaded', {
      cert: entry.certPath,
      hosts: [...entry.hosts],
      serial: info.serial,
      notAfter: info.notAfter.toISOString(),
    })
  }

  #reject(entry: Entry, error: Error, print: string | undefined): void {
    entry.rejectedFingerprint = print
    entry.lastError = { message: error.message, at: new Date(this.#now()).toISOString() }
    this.#deps.log.error(
      { cert: entry.certPath, hosts: entry.hosts, err: error },
      'new certificate files refused; still serving the previous pair',
    )
    this.#events.emit('rejected', { cert: entry.certPath, hosts: [...entry.hosts], error })
  }

  /**
   * Installs a validated pair. setMany builds one secure context for all the entry's hosts, then swaps them all; a
   * pair the TLS stack refuses throws before any host changes.
   */
  #apply(entry: Entry, key: string, cert: string, info: CertificateInfo): void {
    const pair = { key, cert }
    if (entry.isDefault) {
      this.#deps.resolver.setFallback(pair)
      this.#deps.onDefault?.(pair)
    } else {
      this.#deps.resolver.setMany(entry.hosts, pair)
    }
    const problem = chainOrderProblem(cert)
    if (problem) this.#deps.log.warn({ cert: entry.certPath }, `certificate chain order: ${problem}`)
    entry.info = info
    entry.fingerprint = fingerprint(key, cert)
    entry.rejectedFingerprint = undefined
    entry.lastError = undefined
    entry.loadedAt = this.#now()
  }
}
