// The built-in health endpoint: answers from the proxy's own state (listening, draining, certificates), never from
// an upstream, so a load balancer can tell "the proxy is up" apart from "an app is up". Registered on both
// listeners; 503 while draining so balancers stop sending new traffic during a graceful shutdown.
import type { FastifyInstance } from 'fastify'
import { requestHost } from './hosts.js'

export interface HealthState {
  draining(): boolean
  /** Certificate counts by source; `pending` = ACME names not served yet. */
  certificates(): { acme: number; acmeValid: number; manual: number }
  sites(): number
}

export function registerHealth(
  app: FastifyInstance,
  options: { path: string; host: string | undefined },
  state: HealthState,
): void {
  const started = Date.now()
  app.get(options.path, { logLevel: 'warn' }, async (request, reply) => {
    if (options.host !== undefined && requestHost(request.headers) !== options.host) return reply.callNotFound()
    const draining = state.draining()
    reply.header('cache-control', 'no-store')
    return reply.code(draining ? 503 : 200).send({
      status: draining ? 'draining' : 'ok',
      uptimeSeconds: Math.round((Date.now() - started) / 1000),
      sites: state.sites(),
      certificates: state.certificates(),
    })
  })
}
