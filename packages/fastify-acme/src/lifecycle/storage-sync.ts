// What other processes sharing the storage did, as notices for the manager: a certificate stored by another instance
// (heard through storage.watch()), the storage unreachable, the storage back after an outage (messages may have been
// lost: read everything again), and a periodic reconciliation as the fallback for a lost notification. Storages
// without watch() have nobody to hear from: no notices, no timer.
import type { Storage, StorageWatch } from '../storage/index.js'
import { keys, segmentName } from '../storage/index.js'

export type SyncNotice =
  /** Storage changed the certificate of `name` (under the folder of issuer `issuer`). */
  | { kind: 'certificate'; name: string; issuer: number }
  /** Read every name again: the storage is back after an outage (and may have come back empty). */
  | { kind: 'resync' }
  /** The periodic look at storage. */
  | { kind: 'reconcile' }
  | { kind: 'unreachable'; error: Error }

export interface StorageSyncDeps {
  storage: Storage
  /** The storage folder of each issuer, in issuer order. */
  dirs: readonly string[]
  /** 0: no periodic reconciliation. */
  intervalMs: number
  notify: (notice: SyncNotice) => void
}

export class StorageSync {
  readonly #d: StorageSyncDeps
  readonly #watches: StorageWatch[] = []
  #timer: NodeJS.Timeout | undefined

  constructor(deps: StorageSyncDeps) {
    this.#d = deps
  }

  /** True when the storage tells about changes (several processes may share it). */
  get shared(): boolean {
    return typeof this.#d.storage.watch === 'function'
  }

  start(): void {
    const { storage, dirs, intervalMs, notify } = this.#d
    if (!storage.watch || this.#watches.length > 0) return
    dirs.forEach((dir, issuer) => {
      const folder = keys.certificates(dir)
      const watch = storage.watch!(folder, (change) => {
        if (change.type === 'changed') {
          const file = change.key.slice(folder.length)
          if (file.endsWith('.json') && !file.includes('/'))
            notify({ kind: 'certificate', name: segmentName(file.slice(0, -'.json'.length)), issuer })
        } else if (issuer === 0) {
          // One storage: its outage and its return are told once, not once per issuer folder.
          notify(change.type === 'resync' ? { kind: 'resync' } : { kind: 'unreachable', error: change.error })
        }
      })
      this.#watches.push(watch)
    })
    if (intervalMs > 0) {
      this.#timer = setInterval(() => notify({ kind: 'reconcile' }), intervalMs)
      this.#timer.unref()
    }
  }

  stop(): void {
    clearInterval(this.#timer)
    for (const watch of this.#watches.splice(0)) void watch.close()
  }
}
