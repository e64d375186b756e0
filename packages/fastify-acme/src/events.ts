// Typed lifecycle events. Users subscribe with app.acme.on(type, listener); the manager emits, logs and updates
// the status decorator from the same calls, so the three never disagree.
import { EventEmitter } from 'node:events'

export interface AcmeEvents {
  'certificate-loaded': { name: string; notAfter: string; serial: string; expired: boolean }
  'order-started': { name: string; reason: 'missing' | 'renewal' | 'manual' | 'retry'; attempt: number }
  'challenge-presented': { name: string; type: string }
  'certificate-issued': { name: string; notAfter: string; serial: string; issuer: string; renewal: boolean }
  'order-failed': { name: string; error: Error; attempt: number; nextAttemptAt: string }
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
