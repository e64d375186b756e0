// newOrder decisions of the ACME front: which orders carried `replaces` and `profile`, which certificates are already
// replaced, and which problem (if any) an order gets instead of reaching Pebble. No HTTP here.

export type ReplacesProblem = 'alreadyReplaced' | 'conflict' | 'malformed'

export interface FrontOrder {
  identifiers: Array<{ type: string; value: string }>
  replaces?: string
  profile?: string
  /** HTTP status the client got for its newOrder. */
  httpStatus: number
  /** The problem type the front answered instead of Pebble (e.g. `urn:ietf:params:acme:error:alreadyReplaced`). */
  problem?: string
  /** The ACME order status last seen through the front (pending, ready, processing, valid, invalid), or 'rejected'. */
  status: string
  /** The order URL (Location), once Pebble created it. */
  url?: string
  /** CertID of the certificate downloaded for this order, once seen. */
  certId?: string
}

export interface OrderProblem {
  status: number
  type: string
  detail: string
}

const PROBLEM_STATUS: Record<ReplacesProblem | 'invalidProfile', number> = {
  alreadyReplaced: 409,
  conflict: 409,
  malformed: 400,
  invalidProfile: 400,
}

const urn = (type: string) => `urn:ietf:params:acme:error:${type}`

export interface NewOrderPayload {
  identifiers?: Array<{ type: string; value: string }>
  replaces?: unknown
  profile?: unknown
}

export class OrderBook {
  readonly orders: FrontOrder[] = []
  /** CertID -> URL of the valid order that replaced it. */
  readonly replaced = new Map<string, string>()
  private readonly scripted: Array<{ type: ReplacesProblem; left: number; detail?: string }> = []
  // An order's finalize path (present in every order object) -> the record, to follow its status.
  private readonly byFinalize = new Map<string, FrontOrder>()
  private readonly byCertificatePath = new Map<string, FrontOrder>()

  constructor(private readonly profiles: Readonly<Record<string, string>>) {}

  /** The next `times` orders that carry `replaces` get this problem (409 alreadyReplaced/conflict, 400 malformed). */
  rejectReplaces(rule: { type: ReplacesProblem; times?: number; detail?: string }): void {
    this.scripted.push({ type: rule.type, left: rule.times ?? 1, detail: rule.detail })
  }

  /**
   * The problem a newOrder gets from the front, or undefined to let Pebble create it. Checked in this order: scripted
   * `rejectReplaces`, unknown profile (when profiles are advertised), `replaces` naming an already replaced certificate.
   */
  decide(payload: NewOrderPayload): OrderProblem | undefined {
    const replaces = typeof payload.replaces === 'string' ? payload.replaces : undefined
    if (replaces !== undefined) {
      const rule = this.scripted.find((r) => r.left > 0)
      if (rule) {
        rule.left--
        if (rule.left === 0) this.scripted.splice(this.scripted.indexOf(rule), 1)
        const detail = rule.detail ?? `scripted ${rule.type} for an order replacing ${replaces}`
        return { status: PROBLEM_STATUS[rule.type], type: urn(rule.type), detail }
      }
    }
    const advertised = Object.keys(this.profiles)
    if (payload.profile !== undefined && advertised.length > 0 && !advertised.includes(String(payload.profile))) {
      const detail = `profile ${JSON.stringify(payload.profile)} is not one of: ${advertised.join(', ')}`
      return { status: PROBLEM_STATUS.invalidProfile, type: urn('invalidProfile'), detail }
    }
    if (replaces !== undefined && this.replaced.has(replaces)) {
      const detail = `certificate ${replaces} was already replaced by order ${this.replaced.get(replaces)}`
      return { status: PROBLEM_STATUS.alreadyReplaced, type: urn('alreadyReplaced'), detail }
    }
    return undefined
  }

  /** Records a newOrder and what the client got. `order` is Pebble's order object when it created one. */
  record(
    payload: NewOrderPayload,
    httpStatus: number,
    result: { problem?: string; url?: string; order?: unknown },
  ): void {
    const entry: FrontOrder = {
      identifiers: Array.isArray(payload.identifiers) ? payload.identifiers : [],
      httpStatus,
      status: result.problem ? 'rejected' : 'pending',
    }
    if (typeof payload.replaces === 'string') entry.replaces = payload.replaces
    if (payload.profile !== undefined) entry.profile = String(payload.profile)
    if (result.problem) entry.problem = result.problem
    this.orders.push(entry)
    if (result.url) entry.url = result.url
    const finalize = (result.order as { finalize?: unknown } | undefined)?.finalize
    if (typeof finalize === 'string') {
      this.byFinalize.set(new URL(finalize).pathname, entry)
      this.observe(result.order)
    }
  }

  /** Follows an order object Pebble sent (newOrder, order poll, finalize): status, and `replaces` once valid. */
  observe(order: unknown): void {
    if (typeof order !== 'object' || order === null) return
    const { status, finalize, certificate } = order as { status?: unknown; finalize?: unknown; certificate?: unknown }
    if (typeof finalize !== 'string') return
    const entry = this.byFinalize.get(new URL(finalize).pathname)
    if (!entry) return
    if (typeof status === 'string') entry.status = status
    if (typeof certificate === 'string') this.byCertificatePath.set(new URL(certificate).pathname, entry)
    if (status === 'valid' && entry.replaces && entry.url && !this.replaced.has(entry.replaces)) {
      this.replaced.set(entry.replaces, entry.url)
    }
  }

  /** A certificate was downloaded at `path`: tie its CertID to the order it belongs to. */
  certificateSeen(path: string, certId: string): void {
    const entry = this.byCertificatePath.get(path)
    if (entry) entry.certId = certId
  }
}
