// Loading the cache at start, before any CA contact: each name's stored certificate, retry state and order in
// flight, read in bounded batches. Sealed records (see CertificateRecord.seal) are served from their metadata with no
// key or X.509 parsing; checkCached() is their full check, run in the background after the server listens.
import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyBaseLogger } from 'fastify'
import { type CertificateInfo, type CertificateRecord, checkPair, parseRecord } from '../certificate.js'
import { keys, nameSegment, type Storage } from '../storage/index.js'
import type { AriState, AriStates } from './ari.js'
import { certIdOfRecord } from './ari-poller.js'
import type { RetryState, RetryStates } from './retry-state.js'

/** Names whose cached certificate and retry state are read at the same time. */
export const LOAD_CONCURRENCY = 256

/**
 * The background check works this long at a time, then pauses: briefly while the process is otherwise idle (half a
 * core), long while it is busy serving (2% of a core), so it never competes with traffic.
 */
export const VERIFY_SLICE_MS = 5
export const VERIFY_PAUSE_IDLE_MS = 5
export const VERIFY_PAUSE_BUSY_MS = 250
/** ... and starts this long after the server listens. */
export const VERIFY_DELAY_MS = 1000

/** What storage holds for one name at start. */
export interface CachedName {
  name: string
  /** A usable certificate record, if any. */
  record: CertificateRecord | undefined
  /** false when the record is sealed and served before its full check. */
  verified: boolean
  retry: RetryState | undefined
  /** An order journal exists: an order was in flight when the process stopped. */
  orderInFlight: boolean
  /** Stored renewal information for the record's certificate. */
  ari: AriState | undefined
}

export interface LoadDeps {
  storage: Storage
  dir: string
  log: FastifyBaseLogger
  /** The retry states and order journals are read only with the first issuer's folder (they live there). */
  retries: RetryStates | undefined
  ari: AriStates
}

/** Which of a folder's files exist, by one listing, when the storage's listing is complete; else undefined. */
async function listed(storage: Storage, prefix: string): Promise<Set<string> | undefined> {
  if (storage.listIsComplete !== true) return undefined
  try {
    const found = await storage.list(prefix)
    return Array.isArray(found) ? new Set(found.map((key) => String(key).slice(prefix.length))) : undefined
  } catch {
    return undefined
  }
}

/** Reads the cache of `names`, a batch at a time (reading every file at once runs out of file descriptors). */
export async function* readCache(deps: LoadDeps, names: readonly string[]): AsyncGenerator<CachedName[]> {
  const { storage, dir, log, retries, ari } = deps
  // Few names have a retry state or an order in flight: one listing each instead of one failed read per name.
  const withState = retries ? await listed(storage, keys.states(dir)) : new Set<string>()
  const withOrder = retries ? await listed(storage, keys.orders(dir)) : new Set<string>()
  const withAri = await listed(storage, keys.renewalInfos(dir))
  for (let i = 0; i < names.length; i += LOAD_CONCURRENCY) {
    const chunk = names.slice(i, i + LOAD_CONCURRENCY)
    const paths = chunk.map((name) => keys.certificate(dir, name))
    const many = storage.getMany
      ? await storage.getMany(paths).catch((err: Error) => {
          log.warn({ err }, 'fastify-acme: batch read of cached certificates failed; reading them one by one')
          return undefined
        })
      : undefined
    // A failed or malformed batch is read again key by key: a read failure counts as a missing certificate.
    const reads =
      Array.isArray(many) && many.length === paths.length
        ? many
        : await Promise.all(paths.map((key) => storage.get(key).catch((err: Error) => err)))
    yield await Promise.all(
      chunk.map(async (name, j): Promise<CachedName> => {
        const { record, verified } = usableRecord(name, reads[j], log)
        const file = `${nameSegment(name)}.json`
        const retry = retries && (withState === undefined || withState.has(file)) ? await retries.read(name) : undefined
        const orderInFlight =
          withOrder === undefined
            ? (await storage.get(keys.order(dir, name)).catch(() => undefined)) !== undefined
            : withOrder.has(file)
        // Only a state for the certificate served counts (the CertID is read from the certificate only then).
        const stored = record && (withAri === undefined || withAri.has(file)) ? await ari.read(name) : undefined
        const current = stored && stored.certId === certIdOfRecord(record!) ? stored : undefined
        return { name, record, verified, retry, orderInFlight, ari: current }
      }),
    )
  }
}

function usableRecord(
  name: string,
  read: Buffer | undefined | Error,
  log: FastifyBaseLogger,
): { record: CertificateRecord | undefined; verified: boolean } {
  if (read instanceof Error) {
    log.error({ name, err: read }, 'fastify-acme: reading the cached certificate failed; treating it as missing')
    return { record: undefined, verified: false }
  }
  const record = parseRecord(read)
  if (read && !record) log.warn({ name }, 'fastify-acme: cached certificate is corrupt; treating it as missing')
  if (!record) return { record: undefined, verified: false }
  if (record.seal !== undefined && record.name === name) return { record, verified: false }
  try {
    return { record: withCertificateFacts(record, checkPair(name, record.keyPem, record.chainPem)), verified: true }
  } catch (err) {
    log.warn({ name, err }, 'fastify-acme: cached certificate is unusable; treating it as missing')
    return { record: undefined, verified: false }
  }
}

/** The record with its dates, serial and issuer as its certificate states them. */
export function withCertificateFacts(record: CertificateRecord, info: CertificateInfo): CertificateRecord {
  return {
    ...record,
    notBefore: info.notBefore.toISOString(),
    notAfter: info.notAfter.toISOString(),
    serial: info.serial,
    issuer: info.issuer,
  }
}

export interface CheckResult {
  name: string
  record: CertificateRecord
  /** The record as its certificate states it (when the check passed). */
  actual?: CertificateRecord
  error?: Error
}

/**
 * The full check of records served unchecked: in slices of a few milliseconds with pauses between them, so serving
 * keeps most of the CPU while thousands of names are checked. `current(name)` tells whether a record is still the
 * one served (a newer certificate may have replaced it, checked when it was issued).
 */
export async function* checkCached(
  pending: ReadonlyArray<{ name: string; record: CertificateRecord }>,
  current: (name: string, record: CertificateRecord) => boolean,
  signal: AbortSignal,
): AsyncGenerator<CheckResult, { checked: number }> {
  let i = 0
  // Let the server get through its first connections before taking any CPU.
  let pause = VERIFY_DELAY_MS
  while (i < pending.length && !signal.aborted) {
    // How busy the event loop was during the pause (our own slices excluded) sets the next pause.
    const before = performance.eventLoopUtilization()
    await sleep(pause, undefined, { signal, ref: false }).catch(() => {})
    if (signal.aborted) break
    const busy = performance.eventLoopUtilization(before).utilization > 0.5
    pause = busy ? VERIFY_PAUSE_BUSY_MS : VERIFY_PAUSE_IDLE_MS
    const sliceEnd = performance.now() + VERIFY_SLICE_MS
    while (i < pending.length && performance.now() < sliceEnd) {
      const { name, record } = pending[i++]!
      if (!current(name, record)) continue
      try {
        yield { name, record, actual: withCertificateFacts(record, checkPair(name, record.keyPem, record.chainPem)) }
      } catch (err) {
        yield { name, record, error: err as Error }
      }
    }
  }
  return { checked: i }
}
