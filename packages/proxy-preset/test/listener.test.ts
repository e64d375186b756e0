// What an operator sees of the HTTPS listener: its start line says https://, and a name the proxy has no
// certificate for gets the unrecognized_name alert (RFC 6066), not a bare end of connection.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { connect } from 'node:tls'
import { createProxy } from '../src/index.js'
import { certFiles, h1, startUpstream } from './helpers.js'

test('the start line says https; an unknown name gets the unrecognized_name alert', async (t) => {
  const files = await certFiles(['known.listener.test'])
  t.after(() => files.remove())
  const upstream = await startUpstream('web')
  t.after(() => upstream.close())
  const lines: string[] = []
  const proxy = await createProxy({
    logger: { level: 'info', stream: { write: (line: string) => lines.push(line) } },
    https: { host: '127.0.0.1', port: 0 },
    http: false,
    certificates: [{ cert: files.cert, key: files.key }],
    routes: [{ host: 'known.listener.test', upstream: upstream.url }],
  } as never)
  t.after(() => proxy.close())
  const { https } = await proxy.listen()
  const start = lines.map((l) => JSON.parse(l) as { msg: string }).find((l) => l.msg.startsWith('Server listening'))
  assert.equal(start?.msg, `Server listening at https://127.0.0.1:${https.port}`)
  assert.equal((await h1({ port: https.port, host: 'known.listener.test', ca: files.ca })).status, 200)
  const refused = await new Promise<Error & { code?: string }>((resolve) => {
    const socket = connect({ host: '127.0.0.1', port: https.port, servername: 'unknown.listener.test', ca: files.ca })
    socket.once('secureConnect', () => resolve(Object.assign(new Error('handshake completed'), { code: 'NONE' })))
    socket.once('error', resolve)
  })
  assert.equal(refused.code, 'ERR_SSL_TLSV1_UNRECOGNIZED_NAME', refused.message)
})
