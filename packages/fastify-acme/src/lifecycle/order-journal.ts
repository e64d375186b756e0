// An order in flight, kept in storage so that a process killed mid-order resumes it at its next start instead of
// ordering again (every order counts against the CA's limits). Written as soon as the CA has created the order
// (before any challenge is answered), and again with the certificate key before the order is finalized, so that an
// order finalized just before a crash can still be downloaded and paired with its key. Removed once the
// certificate is stored, or when the order is known to be dead.
import { keys, type Storage } from '../storage/index.js'

export interface OrderJournal {
  /** The order's URL at the CA. */
  orderUrl: string
  /** The names the order covers (the certificate's SANs). */
  names: string[]
  /** The account that created it: only that account may fetch it. */
  accountUrl: string
  /** The CA (directory URL) of the order. */
  directoryUrl?: string
  startedAt: number
  /** The certificate key, once made (just before finalize). */
  keyPem?: string
}

export class OrderJournals {
  readonly #storage: Storage
  readonly #dir: string

  constructor(storage: Storage, dir: string) {
    this.#storage = storage
    this.#dir = dir
  }

  /** The journal of `name`, or undefined when there is none or it is unreadable (treated as no order in flight). */
  async read(name: string): Promise<OrderJournal | undefined> {
    const raw = await this.#storage.get(keys.order(this.#dir, name)).catch(() => undefined)
    return parseJournal(raw)
  }

  write(name: string, journal: OrderJournal): Promise<void> {
    return this.#storage.put(keys.order(this.#dir, name), JSON.stringify(journal))
  }

  remove(name: string): Promise<void> {
    return this.#storage.delete(keys.order(this.#dir, name))
  }
}

export function parseJournal(raw: Buffer | undefined): OrderJournal | undefined {
  if (!raw) return undefined
  try {
    const value = JSON.parse(raw.toString('utf8')) as Partial<OrderJournal>
    if (
      typeof value.orderUrl !== 'string' ||
      !URL.canParse(value.orderUrl) ||
      !Array.isArray(value.names) ||
      typeof value.accountUrl !== 'string' ||
      typeof value.startedAt !== 'number'
    )
      return undefined
    if (value.keyPem !== undefined && typeof value.keyPem !== 'string') return undefined
    return value as OrderJournal
  } catch {
    return undefined
  }
}
