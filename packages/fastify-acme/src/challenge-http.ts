// HTTP-01: a small Fastify plugin to register on a plain-HTTP listener (port 80 in production). It answers
// GET /.well-known/acme-challenge/:token with the key authorization while that challenge is pending, 404 otherwise.
import type { FastifyInstance, FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import type { FastifyAcme } from './decorator.js'

export const HTTP01_PREFIX = '/.well-known/acme-challenge/'
const TOKEN = /^[A-Za-z0-9_-]{1,256}$/

export interface Http01Options {
  /** The `acme` decorator of the HTTPS app whose orders this listener answers for. */
  acme: FastifyAcme
}

const http01: FastifyPluginAsync<Http01Options> = async (app: FastifyInstance, opts) => {
  opts.acme.markHttp01Mounted()
  app.get<{ Params: { token: string } }>(`${HTTP01_PREFIX}:token`, { logLevel: 'warn' }, async (request, reply) => {
    const token = request.params.token
    const answer = TOKEN.test(token) ? opts.acme.http01(token) : undefined
    if (answer === undefined) return reply.code(404).type('text/plain').send('no such challenge\n')
    return reply.type('text/plain').send(answer)
  })
}

/** `httpApp.register(acmeHttp01, { acme: app.acme })` */
export const acmeHttp01 = fp(http01, { fastify: '5.x', name: '@autotls/fastify-acme/http-01' })
