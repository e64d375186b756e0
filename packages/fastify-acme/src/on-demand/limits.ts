// Limits on certificates obtained on demand, so that allowed names still cannot burn the CA's rate limits: orders
// running at once, new orders per minute (in all and per client address), and a cap on on-demand certificates.
export interface LimitOptions {
  maxConcurrentOrders: number
  ordersPerMinute: number
  ordersPerMinutePerClient: number
  maxCertificates: number
}

const MINUTE = 60_000
/** Client addresses remembered for the per-client rate (oldest forgotten first). */
const MAX_CLIENTS = 10_000

export type LimitRefusal =
  | 'concurrent orders'
  | 'orders per minute'
  | 'orders per minute for this client'
  | 'certificate cap'

export class OnDemandLimits {
  readonly #o: LimitOptions
  readonly #recent: number[] = []
  readonly #perClient = new Map<string, number[]>()
  #running = 0

  constructor(options: LimitOptions) {
    this.#o = options
  }

  /** Takes a slot for a new on-demand order, or says which limit refuses it. */
  take(remoteAddress: string | undefined, certificates: number, now = Date.now()): LimitRefusal | undefined {
    if (certificates >= this.#o.maxCertificates) return 'certificate cap'
    if (this.#running >= this.#o.maxConcurrentOrders) return 'concurrent orders'
    while (this.#recent.length > 0 && this.#recent[0]! <= now - MINUTE) this.#recent.shift()
    if (this.#recent.length >= this.#o.ordersPerMinute) return 'orders per minute'
    const client = remoteAddress ?? 'unknown'
    const times = (this.#perClient.get(client) ?? []).filter((t) => t > now - MINUTE)
    if (times.length >= this.#o.ordersPerMinutePerClient) return 'orders per minute for this client'
    times.push(now)
    this.#perClient.delete(client)
    this.#perClient.set(client, times)
    if (this.#perClient.size > MAX_CLIENTS) this.#perClient.delete(this.#perClient.keys().next().value as string)
    this.#recent.push(now)
    this.#running++
    return undefined
  }

  /** An on-demand order ended (issued or failed). */
  release(): void {
    this.#running = Math.max(0, this.#running - 1)
  }
}
