// Where challenges are answered. Each responder is a capability handed to the manager at construction: TLS-ALPN-01
// on the server's own TLS port (through the resolver's challenge map, read only by the TLS-ALPN-01 responder),
// HTTP-01 through the tokens an acmeHttp01 route serves. presenterFor() turns them into the presenter one order gets.
import type { ChallengePresenter, ChallengeToPresent } from '../acme.js'
import { cleanupDns01, presentDns01 } from '../challenges/dns-01/solver.js'
import type { ChallengeType, ResolvedDns01 } from '../options.js'
import type { CertResolver } from '../resolver.js'
import type { NameEntry, NameStates } from './state.js'

export interface ChallengeResponder {
  readonly type: ChallengeType
  /** True when a validator can reach this responder now (a listening TLS port, a mounted HTTP-01 route). */
  available(): boolean
  present(challenge: ChallengeToPresent, signal: AbortSignal): void | Promise<void>
  remove(challenge: ChallengeToPresent): void | Promise<void>
}

/** TLS-ALPN-01 on the TLS port of `server`: answerable once it listens. */
export function tlsAlpnResponder(resolver: CertResolver, server: { readonly listening: boolean }): ChallengeResponder {
  return {
    type: 'tls-alpn-01',
    available: () => server.listening,
    present: (c) => {
      if (c.tlsAlpn) resolver.setChallenge(c.name, c.tlsAlpn)
    },
    remove: (c) => resolver.deleteChallenge(c.name),
  }
}

/**
 * HTTP-01 tokens of pending challenges. The acmeHttp01 route plugin mounts it (one or more plain-HTTP listeners);
 * until one is mounted, orders do not choose HTTP-01.
 */
export class Http01Tokens implements ChallengeResponder {
  readonly type = 'http-01' as const
  readonly #tokens = new Map<string, string>()
  readonly #elsewhere: ((token: string) => Promise<string | undefined>) | undefined
  #mounted = 0

  /** `elsewhere`: where to look for a token this process does not hold (another instance's pending order). */
  constructor(elsewhere?: (token: string) => Promise<string | undefined>) {
    this.#elsewhere = elsewhere
  }

  /** Called once per listener that serves the route. */
  mount(): void {
    this.#mounted++
  }

  available(): boolean {
    return this.#mounted > 0
  }

  /** The key authorization of a pending token (ours, else another instance's), or undefined. */
  answer(token: string): string | undefined | Promise<string | undefined> {
    const own = this.#tokens.get(token)
    if (own !== undefined || this.#elsewhere === undefined) return own
    return this.#elsewhere(token)
  }

  present(c: ChallengeToPresent): void {
    this.#tokens.set(c.token, c.keyAuthorization)
  }

  remove(c: ChallengeToPresent): void {
    this.#tokens.delete(c.token)
  }
}

/**
 * The presenter for one order of `entry`: the configured types this server can answer now, a type whose validation
 * just failed for the name last (so a name with both types configured tries the other one).
 */
export function presenterFor(
  entry: NameEntry,
  configured: readonly ChallengeType[],
  responders: readonly ChallengeResponder[],
  challengeKey: () => Promise<string>,
  states: NameStates,
): ChallengePresenter {
  const byType = new Map(responders.map((r) => [r.type, r]))
  const usable = configured.filter((type) => byType.get(type)?.available())
  const types = [...usable.filter((t) => !entry.failedTypes.has(t)), ...usable.filter((t) => entry.failedTypes.has(t))]
  let key: Promise<string> | undefined
  return {
    types,
    get challengeKey() {
      key ??= challengeKey()
      return key
    },
    present: async (c, signal) => {
      await byType.get(c.type)?.present(c, signal)
      states.apply(entry, { to: 'challenge', type: c.type })
    },
    remove: (c) => byType.get(c.type)?.remove(c),
  }
}

/**
 * DNS-01 through a DNS provider: present() writes the TXT record (where a CNAME on `_acme-challenge.<name>` points,
 * when it does) and waits until every authoritative server answers it; remove() deletes exactly that value.
 */
export function dns01Responder(dns: ResolvedDns01): ChallengeResponder {
  const written = new Map<string, string>()
  const options = {
    ...(dns.resolvers ? { resolvers: dns.resolvers } : {}),
    ...(dns.nameserverPort !== undefined ? { nameserverPort: dns.nameserverPort } : {}),
    ...(dns.propagationTimeoutMs !== undefined ? { timeoutMs: dns.propagationTimeoutMs } : {}),
    ...(dns.propagationIntervalMs !== undefined ? { intervalMs: dns.propagationIntervalMs } : {}),
    followCname: dns.followCname,
  }
  return {
    type: 'dns-01',
    available: () => true,
    present: async (c, signal) => {
      await presentDns01(dns.provider, c.name, c.keyAuthorization, { ...options, signal }, (fqdn) =>
        written.set(c.token, fqdn),
      )
    },
    remove: async (c) => {
      const fqdn = written.get(c.token)
      if (fqdn === undefined) return
      written.delete(c.token)
      await cleanupDns01(dns.provider, fqdn, c.keyAuthorization)
    },
  }
}
