// The `app.acme` decorator: the public, read-mostly face of the manager. Built synchronously at register time;
// live state is read through methods and getters, never copied.

import type { TlsAlpnResponder } from './challenge-tls-alpn.js'
import type { AcmeEventEmitter } from './events.js'
import type { CertificateManager, NameStatus } from './manager.js'
import type { CertResolver } from './resolver.js'

export interface FastifyAcme {
  /** The SNI resolver serving this app's certificates (add manual pairs with resolver.set()). */
  readonly resolver: CertResolver
  /** Managed names, canonical (lower case, punycode). */
  readonly names: readonly string[]
  readonly directoryUrl: string
  /** Orders sent to the CA by this process. */
  readonly ordersSent: number
  /** Counters of the TLS-ALPN-01 responder: connections peeked, diverted to the challenge server, timed out. */
  readonly tlsAlpnStats: TlsAlpnResponder['stats']
  status(name: string): NameStatus | undefined
  statuses(): NameStatus[]
  /** Order a certificate for a managed name now, whatever its schedule. */
  issue(name: string): Promise<NameStatus>
  /** Resolves when a certificate for `name` is being served. */
  waitForCertificate(name: string): Promise<NameStatus>
  on: AcmeEventEmitter['on']
  once: AcmeEventEmitter['once']
  off: AcmeEventEmitter['off']
  /** Key authorization for a pending HTTP-01 token (used by the acmeHttp01 plugin). */
  http01(token: string): string | undefined
  /** Called by acmeHttp01 when it is registered, so orders may use HTTP-01. */
  markHttp01Mounted(): void
}

export function createDecorator(
  manager: CertificateManager,
  resolver: CertResolver,
  events: AcmeEventEmitter,
  responder: TlsAlpnResponder,
  names: readonly string[],
  directoryUrl: string,
  onHttp01Mounted: () => void,
): FastifyAcme {
  return {
    resolver,
    names,
    directoryUrl,
    get ordersSent() {
      return manager.ordersSent
    },
    tlsAlpnStats: responder.stats,
    status: (name) => manager.status(name),
    statuses: () => manager.statuses(),
    issue: (name) => manager.issueNow(name),
    waitForCertificate: (name) => manager.waitForCertificate(name),
    on: (event, listener) => events.on(event, listener),
    once: (event, listener) => events.once(event, listener),
    off: (event, listener) => events.off(event, listener),
    http01: (token) => manager.http01(token),
    markHttp01Mounted: onHttp01Mounted,
  }
}
