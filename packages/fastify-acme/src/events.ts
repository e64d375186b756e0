// Typed lifecycle events. Users subscribe with app.acme.on(type, listener). Every event is emitted by the one
// transition function (lifecycle/state.ts) that also changes the name's status and writes the log line, so the
// three never disagree.
import { EventEmitter } from 'node:events'

/** Why an order runs: no certificate yet, renewal due, app.acme.issue(), a retry, or an order resumed after a restart. */
export type OrderReason = 'missing' | 'renewal' | 'manual' | 'retry' | 'resume'

export interface AcmeEvents {
  /** A cached certificate served since start (emitted once the server listens). */
  'certificate-loaded': { name: string; notAfter: string; serial: string; expired: boolean }
  /** A certificate another process sharing the storage stored (e.g. renewed) is now served here. */
  'certificate-adopted': { name: string; notAfter: string; serial: string }
  /** A cached certificate failed its check and is no longer served; the name is treated as missing. */
  'certificate-dropped': { name: string; error: Error }
  'order-started': { name: string; reason: OrderReason; attempt: number }
  'challenge-presented': { name: string; type: string }
  'certificate-issued': { name: string; notAfter: string; serial: string; issuer: string; renewal: boolean }
  /** `error` carries a FACME_* `code` and the CA's facts (problemType, status, networkCode, retryAfterMs). */
  'order-failed': { name: string; error: Error & { code: string }; attempt: number; nextAttemptAt: string }
  'order-deferred': { name: string; reason: string; until: string }
}

export type AcmeEventName = keyof AcmeEvents

export class AcmeEventEmitter {
  readonly #emitter = new EventEmitter()

  on<K extends AcmeEventName>(event: K, listener: (payload: AcmeEvents[K]) => void): () => void {
    this.#emitter.on(event, listener)
    return () => this.#emitter.off(event, listener)
  }

  once<K extends AcmeEventName>(event: K, listener: (payload: AcmeEvents[K]) => void): () => void {
    this.#emitter.once(event, listener)
    return () => this.#emitter.off(event, listener)
  }

  off<K extends AcmeEventName>(event: K, listener: (payload: AcmeEvents[K]) => void): void {
    this.#emitter.off(event, listener)
  }

  emit<K extends AcmeEventName>(event: K, payload: AcmeEvents[K]): void {
    // A throwing user listener must not break an order in progress.
    for (const listener of this.#emitter.listeners(event)) {
      try {
        ;(listener as (p: AcmeEvents[K]) => void)(payload)
      } catch {}
    }
  }

  removeAll(): void {
    this.#emitter.removeAllListeners()
  }
}
