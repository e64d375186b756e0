// Example: fastify-acme inside an ordinary Fastify app (no proxy). The app serves HTTPS (HTTP/2 with HTTP/1.1
// fallback) with certificates obtained and renewed over ACME (TLS-ALPN-01 on the same port), and answers HTTP-01
// on a second, plain-HTTP listener.
//
//   DOMAINS=example.com,www.example.com ACME_DIRECTORY=letsencrypt-staging node --import tsx examples/plugin-in-app.ts
import { pathToFileURL } from 'node:url'
import { acmeHttp01, acmeServerFactory, type FastifyAcmeOptions, fastifyAcme } from '@autotls/fastify-acme'
import Fastify, { type FastifyInstance } from 'fastify'

export interface PluginAppOptions {
  names: string[]
  acme: Omit<FastifyAcmeOptions, 'names'>
  host?: string
  httpsPort?: number
  /** Plain-HTTP port for HTTP-01; undefined: no HTTP listener. */
  httpPort?: number
  logger?: boolean
}

export interface PluginApp {
  app: FastifyInstance
  http: FastifyInstance | undefined
  close(): Promise<void>
}

export async function main(opts: PluginAppOptions): Promise<PluginApp> {
  const app = Fastify({
    http2: true,
    serverFactory: acmeServerFactory(),
    logger: opts.logger ?? true,
  } as never) as unknown as FastifyInstance
  await app.register(fastifyAcme, { ...opts.acme, names: opts.names })
  app.get('/', async (request) => ({
    hello: request.hostname,
    protocol: request.raw.httpVersion === '2.0' ? 'h2' : 'http/1.1',
    certificate: app.acme.status(request.hostname)?.serial,
  }))
  let http: FastifyInstance | undefined
  if (opts.httpPort !== undefined) {
    http = Fastify({ logger: opts.logger ?? true })
    await http.register(acmeHttp01, { acme: app.acme })
    await http.listen({ host: opts.host ?? '::', port: opts.httpPort })
  }
  await app.listen({ host: opts.host ?? '::', port: opts.httpsPort ?? 443 })
  return {
    app,
    http,
    close: async () => {
      await app.close()
      await http?.close()
    },
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const running = await main({
    names: (process.env['DOMAINS'] ?? '').split(',').filter(Boolean),
    acme: {
      directory: process.env['ACME_DIRECTORY'] ?? 'letsencrypt-staging',
      termsOfServiceAgreed: true,
      ...(process.env['ACME_CONTACT'] ? { contact: [`mailto:${process.env['ACME_CONTACT']}`] } : {}),
    },
    httpPort: 80,
  })
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void running.close())
}
