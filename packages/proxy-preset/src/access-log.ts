// The access log (option `accessLog`, off by default): one JSON line per request through the proxy's logger, with
// time, host, method, path, status, bytes, duration, upstream and route. Registered on a routing generation only
// when on, so a proxy without it runs no per-request hook at all.
import { PassThrough } from 'node:stream'
import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import type { ResolvedRoute } from './route-options.js'

const kBytes = Symbol('proxy-preset.access-bytes')

export function registerAccessLog(app: FastifyInstance, log: FastifyBaseLogger): void {
  const access = log.child({ type: 'access' })
  // Proxied bodies are streams of unknown length: count what is sent.
  app.addHook('onSend', (_request, reply, payload, done) => {
    if (payload !== null && typeof (payload as { pipe?: unknown }).pipe === 'function') {
      const counter = new PassThrough()
      const holder = reply as unknown as { [kBytes]?: number }
      holder[kBytes] = 0
      counter.on('data', (chunk: Buffer) => {
        holder[kBytes]! += chunk.length
      })
      ;(payload as NodeJS.ReadableStream).on('error', (err) => counter.destroy(err))
      done(null, (payload as NodeJS.ReadableStream).pipe(counter))
      return
    }
    done(null, payload)
  })
  app.addHook('onResponse', (request, reply, done) => {
    const route = (request.routeOptions.config as unknown as { proxyRoute?: ResolvedRoute }).proxyRoute
    const url = (request.raw as { originalUrl?: string }).originalUrl ?? request.url
    const q = url.indexOf('?')
    const counted = (reply as unknown as { [kBytes]?: number })[kBytes]
    const length = Number(reply.getHeader('content-length'))
    access.info(
      {
        host: request.headers[':authority'] ?? request.headers.host,
        method: request.method,
        path: q < 0 ? url : url.slice(0, q),
        status: reply.statusCode,
        bytes: counted ?? (Number.isFinite(length) ? length : 0),
        durationMs: Math.round(reply.elapsedTime * 1000) / 1000,
        upstream: route ? route.upstreams.join(' ') : null,
        route: route?.label ?? null,
      },
      'access',
    )
    done()
  })
}
