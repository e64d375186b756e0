// @ts-check
// Peer: what a Node user writes today for an HTTPS reverse proxy: Fastify 5 with a static certificate (HTTP/2 with
// HTTP/1.1 fallback) and @fastify/http-proxy. Fastify's defaults otherwise (no logger). Plain JavaScript, run by
// plain `node` (no TypeScript loader in the process: tsx's off-thread loader alone adds 40-60 MiB of RSS).
//
//   node bench/servers/fastify-plain.js --port=8443 --upstream=http://127.0.0.1:8080 --cert=C --key=K
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import proxy from '@fastify/http-proxy'
import Fastify from 'fastify'

const { values } = parseArgs({
  options: {
    port: { type: 'string' },
    upstream: { type: 'string' },
    cert: { type: 'string' },
    key: { type: 'string' },
  },
})

const app = Fastify({
  http2: true,
  https: { allowHTTP1: true, key: readFileSync(String(values.key)), cert: readFileSync(String(values.cert)) },
})
await app.register(proxy, { upstream: String(values.upstream) })
await app.listen({ host: '127.0.0.1', port: Number(values.port) })
process.once('SIGTERM', () => {
  void app.close().then(() => process.exit(0))
})
