// Live reload under continuous load: HTTP/1.1 clients (kept-alive connections and a new connection per request)
// and an HTTP/2 session keep requesting a route that stays while the configuration is reloaded: a route added, an
// invalid configuration (refused, the running one kept), a route removed and the certificate files switched, an
// upstream changed. Requests on the route that stays: 0 failed. New routes answer, removed ones are gone, new
// connections get the new certificate, and each replaced generation closes under load.
import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import { connect as h2connect } from 'node:http2'
import { Agent, request as httpsRequest } from 'node:https'
import type { AddressInfo } from 'node:net'
import { after, before, describe, test } from 'node:test'
import type { TLSSocket } from 'node:tls'
import WebSocket, { WebSocketServer } from 'ws'
import { createProxy, type ProxyHandle, type ProxyOptions } from '../src/index.js'
import { type CertFiles, certFiles, h1, startUpstream, type Upstream } from './helpers.js'

const STAY = 'stay.reload.test'
const GONE = 'gone.reload.test'
const NEW = 'new.reload.test'
const NAMES = [STAY, GONE, NEW]

interface Tally {
  ok: number
  failed: string[]
  upstreams: Map<string, number>
  serials: Set<string>
}

describe('reload under load', () => {
  let a: Upstream
  let b: Upstream
  let c: Upstream
  let first: CertFiles
  let second: CertFiles
  let proxy: ProxyHandle
  let port: number
  let cas: string[]

  const config = (routes: ProxyOptions['routes'], certs: CertFiles): ProxyOptions => ({
    logger: false,
    https: { host: '127.0.0.1', port: 0 },
    http: false,
    shutdown: { signals: false },
    certificates: [{ cert: certs.cert, key: certs.key }],
    routes,
  })

  before(async () => {
    ;[a, b, c] = await Promise.all([startUpstream('a'), startUpstream('b'), startUpstream('c')])
    first = await certFiles(NAMES)
    second = await certFiles(NAMES)
    cas = [first.ca, second.ca]
    proxy = await createProxy(
      config(
        [
          { host: STAY, upstream: a.url },
          { host: GONE, upstream: b.url },
        ],
        first,
      ),
    )
    port = (await proxy.listen()).https.port
  })
  after(async () => {
    await proxy?.close()
    await Promise.all([a?.close(), b?.close(), c?.close(), first?.remove(), second?.remove()])
  })

  test('routes added/removed, certificate files changed, an invalid file in between: 0 failed requests', async (t) => {
    const tally: Tally = { ok: 0, failed: [], upstreams: new Map(), serials: new Set() }
    const record = (status: number, body: string, serial?: string) => {
      if (status !== 200) {
        tally.failed.push(`status ${status}: ${body.slice(0, 200)}`)
        return
      }
      tally.ok++
      const name = JSON.parse(body).upstream as string
      tally.upstreams.set(name, (tally.upstreams.get(name) ?? 0) + 1)
      if (serial) tally.serials.add(serial.toUpperCase())
    }
    let running = true
    const keepAlive = new Agent({ keepAlive: true, maxSockets: 2, ca: cas })
    const h1Loop = async (fresh: boolean) => {
      while (running) {
        await new Promise<void>((resolve) => {
          const req = httpsRequest(
            {
              host: '127.0.0.1',
              port,
              path: '/load',
              servername: STAY,
              headers: { host: STAY },
              ...(fresh ? { agent: false, ca: cas } : { agent: keepAlive }),
            },
            (res) => {
              let body = ''
              res.setEncoding('utf8')
              res.on('data', (d: string) => {
                body += d
              })
              res.on('end', () => {
                record(
                  res.statusCode ?? 0,
                  body,
                  fresh ? (res.socket as TLSSocket).getPeerCertificate().serialNumber : undefined,
                )
                resolve()
              })
              res.on('error', (err) => {
                tally.failed.push(`h1 response: ${err.message}`)
                resolve()
              })
            },
          )
          req.on('error', (err) => {
            tally.failed.push(`h1${fresh ? ' (new connection)' : ''}: ${err.message}`)
            resolve()
          })
          req.end()
        })
      }
    }
    const session = h2connect(`https://127.0.0.1:${port}`, { ca: cas, servername: STAY })
    session.on('error', (err) => tally.failed.push(`h2 session: ${err.message}`))
    const h2Loop = async () => {
      while (running) {
        await new Promise<void>((resolve) => {
          const stream = session.request({ ':path': '/load', ':authority': STAY })
          let status = 0
          let body = ''
          stream.setEncoding('utf8')
          stream.on('response', (h) => {
            status = Number(h[':status'])
          })
          stream.on('data', (d: string) => {
            body += d
          })
          stream.on('end', () => {
            record(status, body)
            resolve()
          })
          stream.on('error', (err) => {
            tally.failed.push(`h2 stream: ${err.message}`)
            resolve()
          })
        })
      }
    }
    const loops = [h1Loop(false), h1Loop(false), h1Loop(true), h2Loop(), h2Loop(), h2Loop()]
    const started = performance.now()
    // Progress is judged by requests answered, never by time.
    const requestsFrom = async (upstream: string, count: number) => {
      const target = (tally.upstreams.get(upstream) ?? 0) + count
      while ((tally.upstreams.get(upstream) ?? 0) < target) {
        if (tally.failed.length > 0) throw new Error(`failed: ${tally.failed.join('; ')}`)
        await new Promise((r) => setImmediate(r))
      }
    }
    try {
      await requestsFrom('a', 200)

      // 1. Add a host and a prefix on the host that stays.
      const added = await proxy.reload(
        config(
          [
            { host: STAY, upstream: a.url },
            { host: STAY, path: '/api', upstream: c.url },
            { host: GONE, upstream: b.url },
            { host: NEW, upstream: c.url },
          ],
          first,
        ),
      )
      assert.equal(added.applied, true, added.errors.join('\n'))
      assert.deepEqual(added.routesAdded.sort(), [`${NEW}/`, `${STAY}/api`])
      assert.equal((await h1({ port, host: NEW, ca: cas })).status, 200)
      const api = await h1({ port, host: STAY, path: '/api/x', ca: cas })
      assert.equal(JSON.parse(api.body).upstream, 'c')
      await requestsFrom('a', 200)

      // 2. An invalid configuration: refused with its errors, the running one kept.
      const invalid = await proxy.reload(config([{ host: STAY, upstream: '127.0.0.1:1' }], first))
      assert.equal(invalid.applied, false)
      assert.match(invalid.errors[0] ?? '', /routes\.0\.upstream.*write "http:\/\/127\.0\.0\.1:1"/)
      assert.equal(invalid.generation, added.generation)
      assert.equal((await h1({ port, host: NEW, ca: cas })).status, 200)
      await requestsFrom('a', 200)

      // 3. Remove a host and serve other certificate files.
      const secondSerial = new X509Certificate(await readFile(second.cert)).serialNumber.toUpperCase()
      const removed = await proxy.reload(
        config(
          [
            { host: STAY, upstream: a.url },
            { host: NEW, upstream: c.url },
          ],
          second,
        ),
      )
      assert.equal(removed.applied, true, removed.errors.join('\n'))
      assert.deepEqual(removed.routesRemoved.sort(), [`${GONE}/`, `${STAY}/api`])
      assert.equal((await h1({ port, host: GONE, ca: cas })).status, 421)
      const fresh = await h1({ port, host: NEW, ca: [second.ca] })
      assert.equal(fresh.cert?.serialNumber.toUpperCase(), secondSerial, 'a new connection gets the new files')
      while (!tally.serials.has(secondSerial)) await new Promise((r) => setImmediate(r))

      // 4. Change the upstream of the route that stays.
      const moved = await proxy.reload(config([{ host: STAY, upstream: b.url }], second))
      assert.equal(moved.applied, true)
      await requestsFrom('b', 300)
      // Every replaced generation closes while the load goes on.
      await proxy.settled()
      await requestsFrom('b', 200)
    } finally {
      running = false
      await Promise.all(loops)
      session.close()
      keepAlive.destroy()
    }
    t.diagnostic(
      `${tally.ok} requests in ${((performance.now() - started) / 1000).toFixed(1)} s over 4 reloads ` +
        `(1 refused), failed: ${tally.failed.length}; by upstream ${JSON.stringify(Object.fromEntries(tally.upstreams))}`,
    )
    assert.deepEqual(tally.failed, [])
    assert.equal(proxy.generation, 4)
  })
})

describe('20 reloads with websockets', () => {
  test('HTTP/1.1, HTTP/2 and websockets keep working on the routes that stay; each new route answers at once', async (t) => {
    const web = await startUpstream('web')
    const other = await startUpstream('other')
    const wsHttp = createServer((_req, res) => res.end('plain'))
    const wss = new WebSocketServer({ server: wsHttp })
    wss.on('connection', (socket) => socket.on('message', (data) => socket.send(`echo:${data.toString()}`)))
    await new Promise<void>((resolve) => wsHttp.listen(0, '127.0.0.1', resolve))
    const wsUrl = `http://127.0.0.1:${(wsHttp.address() as AddressInfo).port}`
    const certs = await certFiles([STAY, NEW])
    t.after(async () => {
      wss.close()
      await new Promise<void>((resolve) => wsHttp.close(() => resolve()))
      await Promise.all([web.close(), other.close(), certs.remove()])
    })
    const routes = (extra: ProxyOptions['routes']): ProxyOptions => ({
      logger: false,
      https: { host: '127.0.0.1', port: 0 },
      http: false,
      shutdown: { signals: false },
      certificates: [{ cert: certs.cert, key: certs.key }],
      routes: [
        { host: STAY, upstream: web.url },
        { host: STAY, path: '/socket', upstream: wsUrl, websocket: true },
        { host: NEW, upstream: other.url },
        ...extra,
      ],
    })
    const proxy = await createProxy(routes([]))
    t.after(() => proxy.close())
    const port = (await proxy.listen()).https.port
    const failed: string[] = []
    let ok = 0
    let echoes = 0
    let running = true
    const keepAlive = new Agent({ keepAlive: true, maxSockets: 2, ca: certs.ca })
    const h1Loop = async () => {
      while (running) {
        try {
          const res = await h1({ port, host: STAY, path: '/load', ca: certs.ca })
          if (res.status === 200) ok++
          else failed.push(`h1 status ${res.status}`)
        } catch (err) {
          failed.push(`h1: ${(err as Error).message}`)
        }
      }
    }
    const keptLoop = async () => {
      while (running) {
        await new Promise<void>((resolve) => {
          const req = httpsRequest(
            { host: '127.0.0.1', port, path: '/kept', servername: STAY, headers: { host: STAY }, agent: keepAlive },
            (res) => {
              res.resume()
              res.on('end', () => {
                if (res.statusCode === 200) ok++
                else failed.push(`kept status ${res.statusCode}`)
                resolve()
              })
            },
          )
          req.on('error', (err) => {
            failed.push(`kept: ${err.message}`)
            resolve()
          })
          req.end()
        })
      }
    }
    const session = h2connect(`https://127.0.0.1:${port}`, { ca: certs.ca, servername: STAY })
    session.on('error', (err) => failed.push(`h2 session: ${err.message}`))
    const h2Loop = async () => {
      while (running) {
        await new Promise<void>((resolve) => {
          const stream = session.request({ ':path': '/h2', ':authority': STAY })
          stream.on('response', (h) => {
            if (Number(h[':status']) === 200) ok++
            else failed.push(`h2 status ${h[':status']}`)
          })
          stream.resume()
          stream.on('end', () => resolve())
          stream.on('error', (err) => {
            failed.push(`h2 stream: ${err.message}`)
            resolve()
          })
        })
      }
    }
    // One websocket opened before the reloads and kept through all of them, plus a new one now and then.
    const openSocket = () =>
      new Promise<WebSocket>((resolve, reject) => {
        const socket = new WebSocket(`wss://127.0.0.1:${port}/socket`, {
          ca: certs.ca,
          servername: STAY,
          headers: { host: STAY },
        } as WebSocket.ClientOptions)
        socket.once('open', () => resolve(socket))
        socket.once('error', reject)
      })
    const roundTrip = (socket: WebSocket, message: string) =>
      new Promise<void>((resolve, reject) => {
        socket.once('message', (data) =>
          data.toString() === `echo:${message}` ? resolve() : reject(new Error(`got ${data}`)),
        )
        socket.once('close', () => reject(new Error('websocket closed')))
        socket.send(message)
      })
    const kept = await openSocket()
    const wsLoop = async () => {
      let i = 0
      while (running) {
        try {
          await roundTrip(kept, `kept-${i}`)
          echoes++
          if (i % 20 === 0) {
            const fresh = await openSocket()
            await roundTrip(fresh, `fresh-${i}`)
            fresh.close()
            echoes++
          }
        } catch (err) {
          failed.push(`websocket: ${(err as Error).message}`)
          return
        }
        i++
      }
    }
    const loops = [h1Loop(), keptLoop(), h2Loop(), wsLoop()]
    const firstAnswers: number[] = []
    let refused = 0
    try {
      for (let i = 0; i < 20; i++) {
        if (i % 5 === 4) {
          // An invalid configuration in between: refused, the running one kept.
          const bad = await proxy.reload(routes([{ host: NEW, path: '/bad', upstream: 'nowhere:1' }]))
          assert.equal(bad.applied, false)
          refused++
          continue
        }
        const path = `/p${i}`
        const before = performance.now()
        const result = await proxy.reload(routes(i % 2 === 0 ? [{ host: NEW, path, upstream: web.url }] : []))
        assert.equal(result.applied, true, result.errors.join('\n'))
        if (i % 2 === 0) {
          const res = await h1({ port, host: NEW, path, ca: certs.ca })
          firstAnswers.push(performance.now() - before)
          assert.equal(JSON.parse(res.body).upstream, 'web', 'the new route answers')
        } else {
          const res = await h1({ port, host: NEW, path: `/p${i - 1}`, ca: certs.ca })
          assert.equal(JSON.parse(res.body).upstream, 'other', 'the removed route falls back to the host route')
        }
        // Some load between reloads.
        const target = ok + 50
        while (ok < target && failed.length === 0) await new Promise((r) => setImmediate(r))
      }
    } finally {
      running = false
      await Promise.all(loops)
      kept.close()
      session.close()
      keepAlive.destroy()
    }
    console.log(
      `# 20 reloads (${refused} refused) under load: ${ok} HTTP requests and ${echoes} websocket echoes ok, ${failed.length} failed; a new route answered ${Math.max(...firstAnswers).toFixed(0)} ms after its reload at most`,
    )
    assert.deepEqual(failed, [])
    assert.ok(echoes > 20)
  })
})
