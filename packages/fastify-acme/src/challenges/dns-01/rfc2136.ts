// The RFC 2136 DNS provider: adds and deletes the challenge TXT record with a dynamic UPDATE sent straight to the
// primary server (BIND, Knot, PowerDNS, Windows DNS), signed with TSIG (RFC 8945). The zone is given or found with
// one SOA query to that server.
import { ERR_DNS_TSIG, ERR_DNS_UPDATE_REFUSED, ERR_DNS_ZONE } from './errors.js'
import type { DnsProvider } from './provider.js'
import { type DnsServer, exchange, formatServer, parseServer } from './transport.js'
import { checkTsigKey, signMessage, type TsigAlgorithm, type TsigKey, verifyResponse } from './tsig.js'
import { absolute, decode, encodeQuery, encodeUpdate, rcodeName, type TxtChange } from './wire.js'

export const DEFAULT_RFC2136_TTL = 60
export const DEFAULT_RFC2136_TIMEOUT_MS = 10_000

export interface Rfc2136Options {
  /** The primary server that accepts updates: `host`, `host:port`, `[v6]:port` (default port 53). */
  server: string
  /** The zone to update, e.g. `example.com`. Default: found by an SOA query for the record name to `server`. */
  zone?: string
  /**
   * The TSIG key allowed to update the zone (`tsig-keygen` output: `key "<name>" { algorithm ...; secret "..."; }`).
   * `algorithm` defaults to `hmac-sha256`. Without a key, updates are unsigned (only for servers that allow updates
   * by address).
   */
  key?: { name: string; secret: string; algorithm?: TsigAlgorithm }
  /** TTL of the TXT record in seconds. Default 60: short, so a stale value does not linger in caches. */
  ttl?: number
  /** Per update, UDP retries and TCP fallback included. Default 10 s. */
  timeoutMs?: number
  /** Passed to the propagation check as this provider's {@link DnsProvider.propagationTimeoutMs}. */
  propagationTimeoutMs?: number
}

/** Error codes carry the DNS RCODE name (`err.rcode`) where there is one. */
export type DnsRcodeError = Error & { code: string; rcode?: string }

export class Rfc2136Provider implements DnsProvider {
  readonly propagationTimeoutMs: number | undefined
  readonly #server: DnsServer
  readonly #zone: string | undefined
  readonly #key: TsigKey | undefined
  readonly #ttl: number
  readonly #timeoutMs: number
  readonly #zones = new Map<string, string>()

  constructor(options: Rfc2136Options) {
    this.#server = parseServer(options.server)
    this.#zone = options.zone === undefined ? undefined : absolute(options.zone)
    if (options.key) {
      this.#key = {
        name: absolute(options.key.name),
        secret: options.key.secret,
        algorithm: options.key.algorithm ?? 'hmac-sha256',
      }
      checkTsigKey(this.#key)
    }
    this.#ttl = options.ttl ?? DEFAULT_RFC2136_TTL
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_RFC2136_TIMEOUT_MS
    this.propagationTimeoutMs = options.propagationTimeoutMs
  }

  async present(fqdn: string, value: string, signal: AbortSignal): Promise<void> {
    await this.#update({ op: 'add', name: absolute(fqdn), value, ttl: this.#ttl }, signal)
  }

  async cleanup(fqdn: string, value: string, signal: AbortSignal): Promise<void> {
    // Deleting an RR that is not there is a successful no-op (RFC 2136 section 3.4.2.4): cleanup is idempotent.
    await this.#update({ op: 'delete', name: absolute(fqdn), value, ttl: 0 }, signal)
  }

  /** The zone an update for `fqdn` goes to: the configured one, else the owner of the SOA the server returns. */
  async zoneOf(fqdn: string, signal: AbortSignal): Promise<string> {
    const name = absolute(fqdn)
    if (this.#zone) {
      if (name !== this.#zone && !name.endsWith(`.${this.#zone}`))
        throw new ERR_DNS_ZONE(name, `it is not inside the configured zone ${this.#zone}`)
      return this.#zone
    }
    const known = this.#zones.get(name)
    if (known) return known
    const query = encodeQuery(name, 'SOA', false)
    const response = decode(await exchange(this.#server, query.bytes, { timeoutMs: this.#timeoutMs, signal }))
    const soa = [...response.answers, ...response.authorities].find((r) => r.type === 'SOA')
    if ((response.rcode !== 0 && response.rcode !== 3) || !soa || !response.authoritative) {
      throw new ERR_DNS_ZONE(
        name,
        `${formatServer(this.#server)} answered ${rcodeName(response.rcode)}${soa ? '' : ' without an SOA'}${
          response.authoritative ? '' : ', not authoritatively'
        }; is it the primary server of the zone? Set \`zone\` to skip this lookup`,
      )
    }
    this.#zones.set(name, soa.name)
    return soa.name
  }

  async #update(change: TxtChange, signal: AbortSignal): Promise<void> {
    const zone = await this.zoneOf(change.name, signal)
    const server = formatServer(this.#server)
    const message = encodeUpdate(zone, [change])
    const signed = this.#key ? signMessage(message.bytes, this.#key) : undefined
    const bytes = await exchange(this.#server, signed?.bytes ?? message.bytes, { timeoutMs: this.#timeoutMs, signal })
    const response = decode(bytes)
    const verdict = this.#key && signed ? verifyResponse(bytes, signed.mac, this.#key) : undefined
    // TSIG errors come as RCODE NOTAUTH (or any) with the TSIG error field set, unsigned except BADTIME.
    if (verdict && verdict.kind !== 'missing' && verdict.error !== 0) {
      throw coded(
        new ERR_DNS_TSIG(server, `${rcodeName(verdict.error)} for key ${this.#key!.name}`),
        rcodeName(verdict.error),
      )
    }
    if (response.rcode !== 0) {
      const rcode = rcodeName(response.rcode)
      throw coded(new ERR_DNS_UPDATE_REFUSED(server, change.name, zone, `${rcode}: ${hint(rcode)}`), rcode)
    }
    if (verdict && !(verdict.kind === 'signed' && verdict.valid)) {
      // Accepted, but the answer is not provably from the holder of the key: treat it as a TSIG failure.
      throw coded(
        new ERR_DNS_TSIG(
          server,
          verdict.kind === 'missing' ? 'the response carries no TSIG' : 'the response MAC does not verify',
        ),
        'BADSIG',
      )
    }
  }
}

function coded(error: Error, rcode: string): DnsRcodeError {
  return Object.assign(error, { rcode }) as DnsRcodeError
}

function hint(rcode: string): string {
  switch (rcode) {
    case 'REFUSED':
      return 'the server does not allow this key (or this address) to update the zone: check its allow-update / update-policy'
    case 'NOTAUTH':
      return 'the server is not authoritative for the zone: send updates to its primary server, or check `zone`'
    case 'NOTZONE':
      return 'the record name is outside the zone'
    case 'SERVFAIL':
      return 'the server failed to apply the update: see its log'
    default:
      return 'see the server log'
  }
}
