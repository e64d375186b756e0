// @ts-check
// Peer: the floor under the design, for the moonshot question (issue 16): Node's own HTTP/2 + HTTP/1.1 TLS server
// and undici, with no Fastify, no reply-from and no routing: each request is streamed with undici's stream() to
// the one upstream, status and the content headers copied, the body written straight into the response. What no
// proxy built on Node's HTTP stack can beat without leaving it. Same 256 KiB write buffer on HTTP/1.1 connections
// as proxy-preset (server.ts). Not a usable proxy: no forwarding headers, no hop-by-hop handling, no errors pages.
//
//   node bench/servers/node-floor.js --port=8443 --upstream=http://127.0.0.1:8080 --cert=C --key=K
import { readFileSync } from 'node:fs'
import { createSecureServer } from 'node:http2'
import { createSecureContext } from 'node:tls'
import { parseArgs } from 'node:util'
import { Agent } from 'undici'

const { values } = parseArgs({
  options: {
    port: { type: 'string' },
    upstream: { type: 'string' },
    cert: { type: 'string' },
    key: { type: 'string' },
    // --sni=true: the certificate comes from an SNICallback returning one prebuilt context, as in proxy-preset
    // (what selecting a certificate per connection costs in Node's TLS server).
    sni: { type: 'string' },
  },
})
const origin = new URL(String(values.upstream)).origin
const agent = new Agent()

/** @param {any} req @param {any} res */
function handle(req, res) {
  agent.stream(
    { origin, path: req.url, method: req.method, headers: { 'x-forwarded-proto': 'https' } },
    ({ statusCode, headers }) => {
      res.writeHead(statusCode, {
        'content-length': headers['content-length'],
        'content-type': headers['content-type'],
      })
      return res
    },
    (err) => {
      if (err) res.destroy(err)
    },
  )
}

const pair = { key: readFileSync(String(values.key)), cert: readFileSync(String(values.cert)) }
const context = createSecureContext(pair)
const server = createSecureServer(
  values.sni === 'true'
    ? { allowHTTP1: true, SNICallback: (_name, cb) => cb(null, context) }
    : { allowHTTP1: true, ...pair },
  handle,
)
server.on('secureConnection', (socket) => {
  const state = socket._writableState
  if (socket.alpnProtocol !== 'h2' && state) state.highWaterMark = 256 * 1024
})
server.listen(Number(values.port), '127.0.0.1')
process.once('SIGTERM', () => {
  server.close()
  process.exit(0)
})
