// floor experiments: node https server + undici
import { readFileSync } from 'node:fs'
import http2 from 'node:http2'
import https from 'node:https'
import { Agent } from 'undici'

const [mode, port, up, cert, key, hwm] = process.argv.slice(2)
const agent = new Agent({ connections: 256 })
const upstream = new URL(up)
const handler = (req, res) => {
  if (mode === 'stream') {
    agent.stream(
      { origin: upstream.origin, path: req.url, method: 'GET' },
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
  } else {
    agent.request({ origin: upstream.origin, path: req.url, method: 'GET' }).then(
      ({ statusCode, headers, body }) => {
        res.writeHead(statusCode, {
          'content-length': headers['content-length'],
          'content-type': headers['content-type'],
        })
        body.pipe(res)
      },
      (err) => res.destroy(err),
    )
  }
}
const opts = { key: readFileSync(key), cert: readFileSync(cert) }
const server = mode.endsWith('h2')
  ? http2.createSecureServer({ ...opts, allowHTTP1: true }, handler)
  : https.createServer(opts, handler)
if (hwm)
  server.on('secureConnection', (s) => {
    s._writableState.highWaterMark = Number(hwm)
  })
server.listen(Number(port), '127.0.0.1')
