// The `app.acme` decorator: the public, read-mostly face of the manager. Built synchronously at register time;
// live state is read through methods and getters, never copied.

import type { TlsAlpnResponder } from './challenge-tls-alpn.js'
import type { AcmeEventEmitter } from './events.js'
import type { Http01Tokens } from './lifecycle/challenges.js'
import type { CertificateManager } from './lifecycle/manager.js'
import type { NameStatus } from './lifecycle/state.js'
import type { CertResolver } from './resolver.js'

/** Where acmeHttp01 finds the HTTP-01 tokens of the app it answers for (not part of the public members). */
export const kHttp01 = Symbol.for('@autotls/fastify-acme.http01')

export interface FastifyAcme {
  /** The SNI resolver serving this app's certificates (add manual pairs with resolver.set()). */
  readonly resolver: CertResolver
  /** Managed names, canonical (lower case, punycode): configured, added, and obtained on demand. */
  readonly names: readonly string[]
  readonly directoryUrl: string
  /** New orders sent to the CA by this process (an order resumed after a restart is not a new one). */
  readonly ordersSent: number
  /** Counters of the TLS-ALPN-01 responder: connections peeked, diverted to the challenge server, timed out. */
  readonly tlsAlpnStats: TlsAlpnResponder['stats']
  status(name: string): NameStatus | undefined
  statuses(): NameStatus[]
  /** Order a certificate for a managed name now, whatever its schedule. */
  issue(name: string): Promise<NameStatus>
  /** Resolves when a certificate for `name` is being served. */
  waitForCertificate(name: string): Promise<NameStatus>
  /**
   * Manages more names from now on (validated like `names`: FACME_INVALID_NAME): stored certificates are served at
   * once, missing ones ordered under the same concurrency, budget and backoff rules. Resolves with their statuses.
   */
  add(names: string | readonly string[]): Promise<NameStatus[]>
  /** Stops renewing and serving names; stored files are kept unless `deleteStored`. */
  remove(names: string | readonly string[], options?: { deleteStored?: boolean }): Promise<void>
  on: AcmeEventEmitter['on']
  once: AcmeEventEmitter['once']
  off: AcmeEventEmitter['off']
  /** The HTTP-01 challenge tokens, for the acmeHttp01 route plugin. */
  readonly [kHttp01]: Http01Tokens
}

export function createDecorator(
  manager: CertificateManager,
  resolver: CertResolver,
  events: AcmeEventEmitter,
  responder: TlsAlpnResponder,
  http01: Http01Tokens,
  directoryUrl: string,
): FastifyAcme {
  const list = (names: string | readonly string[]) => (typeof names === 'string' ? [names] : names)
  return {
    resolver,
    get names() {
      return manager.names()
    },
    directoryUrl,
    get ordersSent() {
      return manager.ordersSent
    },
    tlsAlpnStats: responder.stats,
    status: (name) => manager.status(name),
    statuses: () => manager.statuses(),
    issue: (name) => manager.issueNow(name),
    waitForCertificate: (name) => manager.waitForCertificate(name),
    add: (names) => manager.add(list(names)),
    remove: (names, options) => manager.remove(list(names), options),
    on: (event, listener) => events.on(event, listener),
    once: (event, listener) => events.once(event, listener),
    off: (event, listener) => events.off(event, listener),
    [kHttp01]: http01,
  }
}
