// Entry point: the Fastify plugin (wrapped with fastify-plugin so `app.acme` is visible to the whole app), its
// registration checks, lifecycle hooks, and the public exports.
import { hostname } from 'node:os'
import { resolve } from 'node:path'
import { Server as TlsServer } from 'node:tls'
import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { createDecorator, type FastifyAcme } from './decorator.js'
import { ERR_INVALID_OPTIONS, ERR_NOT_HTTPS, ERR_SERVER_NOT_WIRED } from './errors.js'
import { AcmeEventEmitter } from './events.js'
import { type ChallengeResponder, dns01Responder, Http01Tokens, tlsAlpnResponder } from './lifecycle/challenges.js'
import { issuersFrom } from './lifecycle/issuers.js'
import { CertificateManager } from './lifecycle/manager.js'
import { SharedChallenges } from './lifecycle/shared-challenges.js'
import { OnDemand } from './on-demand/index.js'
import { type FastifyAcmeOptions, resolveOptions, systemClock } from './options.js'
import { wiringOf } from './server.js'
import { SessionTickets } from './session-tickets.js'
import { FileStorage } from './storage/file.js'
import type { Storage } from './storage/index.js'

declare module 'fastify' {
  interface FastifyInstance {
    acme: FastifyAcme
  }
}

function checkStorage(storage: unknown): Storage {
  const s = storage as Record<string, unknown>
  for (const method of ['get', 'put', 'delete', 'list', 'lock']) {
    if (typeof s?.[method] !== 'function') throw new ERR_INVALID_OPTIONS(`storage must implement ${method}()`)
  }
  return storage as Storage
}

const plugin: FastifyPluginAsync<FastifyAcmeOptions> = async (fastify, rawOptions) => {
  const options = resolveOptions(rawOptions)
  const server = fastify.server as unknown
  if (!(server instanceof TlsServer)) throw new ERR_NOT_HTTPS()
  const wiring = wiringOf(server)
  if (!wiring) throw new ERR_SERVER_NOT_WIRED()
  const storage: Storage = rawOptions.storage
    ? checkStorage(rawOptions.storage)
    : new FileStorage(resolve(options.cacheDir))
  const log = fastify.log.child({ plugin: 'fastify-acme' })
  const events = new AcmeEventEmitter()
  // The primary CA's folder in the storage: shared challenges and session tickets live there.
  const home = issuersFrom(options)[0]!.dir
  // A storage shared with other instances (it has watch()): challenges are shared too, so the CA's validator may
  // reach any instance behind a load balancer.
  const shared = storage.watch
    ? new SharedChallenges({
        storage: storage as Storage & { watch: NonNullable<Storage['watch']> },
        dir: home,
        resolver: wiring.resolver,
        log,
        self: `${process.pid}@${hostname()}`,
      })
    : undefined
  if (shared) wiring.resolver.setChallengeLookup((name) => shared.tlsAlpnLookup(name))
  const share = <T extends ChallengeResponder>(responder: T): ChallengeResponder =>
    shared ? shared.share(responder) : responder
  // The ways this server answers challenges, handed to the manager as capabilities: TLS-ALPN-01 on this TLS port
  // once it listens, HTTP-01 once an acmeHttp01 route is mounted with this app's decorator.
  const http01 = new Http01Tokens(shared ? (token) => shared.http01Answer(token) : undefined)
  const manager = new CertificateManager({
    options,
    storage,
    resolver: wiring.resolver,
    clock: rawOptions.clock ?? systemClock,
    log,
    events,
    responders: [
      share(tlsAlpnResponder(wiring.resolver, server)),
      share(http01),
      ...(options.dns01 ? [dns01Responder(options.dns01)] : []),
    ],
  })
  fastify.decorate(
    'acme',
    createDecorator(manager, wiring.resolver, events, wiring.responder, http01, options.directoryUrl),
  )
  if (options.onDemand) {
    const onDemand = new OnDemand({ options: options.onDemand, manager, resolver: wiring.resolver, events, log })
    wiring.resolver.setUnknownNameHandler(onDemand.handler)
    fastify.addHook('preClose', async () => wiring.resolver.setUnknownNameHandler(undefined))
  }
  // Cached certificates are served from the first handshake, before any CA contact.
  await manager.load()
  if (options.sessionTickets) {
    const tickets = new SessionTickets({
      server,
      storage: options.sessionTickets.shared ? storage : undefined,
      dir: home,
      rotateAfterMs: options.sessionTickets.rotateAfterMs,
      clock: rawOptions.clock ?? systemClock,
      log: log.child({ component: 'session-tickets' }),
    })
    await tickets.start()
    fastify.addHook('preClose', () => tickets.close())
  }
  fastify.addHook('onListen', async () => {
    await manager.start()
  })
  fastify.addHook('preClose', async () => {
    await manager.close()
    shared?.close()
    wiring.resolver.setChallengeLookup(undefined)
    events.removeAll()
    wiring.closeHttp2Sessions()
  })
}

export const fastifyAcme = fp(plugin, { fastify: '5.x', name: '@autotls/fastify-acme' })
export default fastifyAcme

export { ACME_REQUEST_CHANNEL } from './acme.js'
// The public surface: what an application needs. Helpers for tests, the benchmark and proxy-preset live behind
// `@autotls/fastify-acme/internal` (src/internal.ts), which is no stable API.
export type { CertificateInfo } from './certificate.js'
export { acmeHttp01 } from './challenge-http.js'
// DNS-01: the provider contract, the built-in providers and their coded errors.
export {
  ERR_DNS_EXEC,
  ERR_DNS_NO_ANSWER,
  ERR_DNS_OPTIONS,
  ERR_DNS_PROPAGATION_TIMEOUT,
  ERR_DNS_TSIG,
  ERR_DNS_UPDATE_REFUSED,
  ERR_DNS_ZONE,
} from './challenges/dns-01/errors.js'
export { ExecProvider, type ExecProviderOptions } from './challenges/dns-01/exec.js'
export type { DnsProvider } from './challenges/dns-01/provider.js'
export { type Rfc2136Options, Rfc2136Provider } from './challenges/dns-01/rfc2136.js'
export type { FastifyAcme } from './decorator.js'
export type { CaFacts } from './error-facts.js'
export * from './errors.js'
export type { AcmeEventName, AcmeEvents, OrderReason } from './events.js'
export type { NameState, NameStatus } from './lifecycle/state.js'
export {
  type AcmeOptionsData,
  AcmeOptionsSchema,
  type ChallengeType,
  type Clock,
  DEFAULT_CACHE_DIR,
  DEFAULT_CHALLENGES,
  DEFAULT_KEY_TYPE,
  DEFAULT_RENEW_RATIO,
  type FastifyAcmeOptions,
  type KeyType,
  LETSENCRYPT_PRODUCTION,
  LETSENCRYPT_STAGING,
} from './options.js'
export { CertResolver, type KeyCertPair } from './resolver.js'
export { type AcmeServerOptions, acmeServerFactory } from './server.js'
export { FileStorage } from './storage/file.js'
export type { Lease, LockOptions, Storage, StorageChange, StorageWatch } from './storage/index.js'
export { MemoryStorage } from './storage/memory.js'
