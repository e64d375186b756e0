// HTTP-01: a small Fastify plugin to register on a plain-HTTP listener (port 80 in production). It answers
// GET /.well-known/acme-challenge/:token with the key authorization while that challenge is pending, 404 otherwise.
// Registering it is what makes HTTP-01 answerable for the app whose `acme` decorator it is given: it mounts that
// app's token capability; the manager sees the capability, not a flag on the public decorator.
import type { FastifyInstance, FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { type FastifyAcme, kHttp01 } from './decorator.js'

export const HTTP01_PREFIX = '/.well-known/acme-challenge/'
const TOKEN = /^[A-Za-z0-9_-]{1,256}$/

export interface Http01Options {
  /** The `acme` decorator of the HTTPS app whose orders this listener answers for. */
  acme: FastifyAcme
}

const http01: FastifyPluginAsync<Http01Options> = async (app: FastifyInstance, opts) => {
  const tokens = opts.acme[kHttp01]
  tokens.mount()
  app.get<{ Params: { token: string } }>(`${HTTP01_PREFIX}:token`, { logLevel: 'warn' }, async (request, reply) => {
    const token = request.params.token
    const answer = TOKEN.test(token) ? await tokens.answer(token) : undefined
    if (answer === undefined) return reply.code(404).type('text/plain').send('no such challenge\n')
    return reply.type('text/plain').send(answer)
  })
}

/** `httpApp.register(acmeHttp01, { acme: app.acme })` */
export const acmeHttp01 = fp(http01, { fastify: '5.x', name: '@autotls/fastify-acme/http-01' })
