// The plain-HTTP listener (port 80): answers ACME HTTP-01 challenges (fastify-acme's acmeHttp01 plugin) and
// redirects everything else to HTTPS with 308, keeping the path and query byte for byte. Only hosts this proxy
// serves are redirected; any other Host gets a 421 with a clear body, so the listener is no open redirector.
import { acmeHttp01, type FastifyAcme } from '@autotls/fastify-acme'
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import { ERR_UNKNOWN_HOST } from './errors.js'
import { type HealthState, registerHealth } from './health.js'
import { requestHost } from './hosts.js'
import type { ResolvedProxyOptions } from './options.js'
import { applyHttpLimits } from './server.js'

export interface RedirectDeps {
  options: NonNullable<ResolvedProxyOptions['http']>
  health: ResolvedProxyOptions['health']
  healthState: HealthState
  limits: ResolvedProxyOptions['limits']
  /** Whether the proxy serves this (normalised) host over HTTPS. */
  knows(host: string): boolean
  acme: FastifyAcme | undefined
  log: FastifyBaseLogger
}

export function httpsLocation(host: string, port: number, url: string): string {
  const authority = port === 443 ? host : `${host}:${port}`
  return `https://${authority}${url.startsWith('/') ? url : `/${url}`}`
}

export async function buildRedirectApp(deps: RedirectDeps): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: deps.log,
    bodyLimit: 1024,
    keepAliveTimeout: deps.limits.keepAliveTimeoutMs,
    requestTimeout: deps.limits.requestTimeoutMs,
  })
  applyHttpLimits(app.server, deps.limits)
  if (deps.acme && deps.options.acmeChallenges) await app.register(acmeHttp01, { acme: deps.acme })
  if (deps.health) registerHealth(app, deps.health, deps.healthState)
  app.setNotFoundHandler((request, reply) => {
    const host = requestHost(request.headers)
    if (host === undefined || !deps.knows(host)) {
      return reply.send(new ERR_UNKNOWN_HOST(host ?? '(none or malformed)'))
    }
    if (!deps.options.redirect) {
      return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: 'This site is served over HTTPS' })
    }
    return reply
      .code(308)
      .header('location', httpsLocation(host, deps.options.redirectPort, request.url))
      .send()
  })
  return app
}
