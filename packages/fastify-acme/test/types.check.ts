// Type tests for the public API: this file is only type-checked (`tsc --noEmit`), never run.
import Fastify from 'fastify'
import { acmeHttp01, acmeServerFactory, type FastifyAcmeOptions, fastifyAcme, type NameStatus } from '../src/index.js'

async function https1(): Promise<void> {
  const app = Fastify({ serverFactory: acmeServerFactory() })
  const options: FastifyAcmeOptions = {
    names: ['example.com'],
    directory: 'letsencrypt-staging',
    termsOfServiceAgreed: true,
  }
  await app.register(fastifyAcme, options)
  const status: NameStatus | undefined = app.acme.status('example.com')
  const issued: Promise<NameStatus> = app.acme.issue('example.com')
  const off: () => void = app.acme.on('certificate-issued', (e) => {
    const serial: string = e.serial
    const renewal: boolean = e.renewal
    void serial
    void renewal
  })
  app.acme.on('order-failed', (e) => {
    const err: Error = e.error
    void err
  })
  // @ts-expect-error: not an event
  app.acme.on('no-such-event', () => {})
  // @ts-expect-error: names is required
  await app.register(fastifyAcme, { directory: 'letsencrypt-staging', termsOfServiceAgreed: true })
  const http = Fastify()
  await http.register(acmeHttp01, { acme: app.acme })
  void status
  void issued
  void off
}

async function http2(): Promise<void> {
  const app = Fastify({ http2: true, serverFactory: acmeServerFactory({ http2: true }) })
  await app.register(fastifyAcme, {
    names: ['example.com'],
    directory: 'letsencrypt-staging',
    termsOfServiceAgreed: true,
  })
  app.get('/', async () => 'ok')
}

void https1
void http2
