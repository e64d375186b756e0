// Handshake load: `concurrency` loops, each opening a TLS connection (no session offered, so every handshake is a
// full one), waiting for secureConnect, counting it, closing with close_notify and starting the next, until
// `seconds` have passed. The SNI is fixed or drawn at random per connection from n<i>.<suffix>. Prints one JSON line
// with the number of handshakes, how many the server resumed (isSessionReused(): must be 0) and errors.
//
//   node --import tsx bench/clients/handshakes.ts --port=8443 --seconds=4 --concurrency=16 --servername=localhost
import { connect } from 'node:tls'
import { parseArgs } from 'node:util'

const { values } = parseArgs({
  options: {
    port: { type: 'string' },
    host: { type: 'string', default: '127.0.0.1' },
    seconds: { type: 'string', default: '4' },
    concurrency: { type: 'string', default: '16' },
    servername: { type: 'string', default: 'localhost' },
    names: { type: 'string', default: '0' },
    suffix: { type: 'string', default: '' },
  },
})
const port = Number(values.port)
const seconds = Number(values.seconds)
const concurrency = Number(values.concurrency)
const names = Number(values.names)
const suffix = values.suffix
const deadline = performance.now() + seconds * 1000
const started = performance.now()

let handshakes = 0
let resumed = 0
let errors = 0
let lastError = ''
let running = concurrency

function servername(): string {
  return names > 0 ? `n${Math.floor(Math.random() * names)}.${suffix}` : values.servername
}

function loop(): void {
  if (performance.now() >= deadline) {
    running--
    if (running === 0) done()
    return
  }
  let settled = false
  const next = (): void => {
    if (settled) return
    settled = true
    setImmediate(loop)
  }
  const socket = connect({
    host: values.host,
    port,
    servername: servername(),
    rejectUnauthorized: false,
    // No session is offered: a full handshake each time (checked below with isSessionReused()).
    session: undefined,
  })
  socket.once('secureConnect', () => {
    handshakes++
    if (socket.isSessionReused()) resumed++
    socket.end()
    next()
  })
  socket.on('error', (err) => {
    if (!settled) {
      errors++
      lastError = err.message
    }
    socket.destroy()
    next()
  })
  socket.setTimeout(5000, () => socket.destroy(new Error('timeout')))
}

function done(): void {
  const elapsed = (performance.now() - started) / 1000
  console.log(JSON.stringify({ handshakes, resumed, errors, lastError, seconds: elapsed }))
  process.exit(0)
}

for (let i = 0; i < concurrency; i++) loop()
