// Session-ticket keys (option sessionTickets): two servers sharing a storage resume each other's TLS sessions, two
// servers with their own keys do not; after a rotation every server uses the new key (old tickets no longer resume
// anywhere, new ones resume everywhere); the key is never logged; an unshared key is rotated too.
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { connect } from 'node:tls'
import { makeTestCertificates } from '@autotls/pebble-harness'
import Fastify from 'fastify'
import { type CertificateRecord, recordDigest, recordSeal } from '../src/certificate.js'
import { acmeServerFactory, FileStorage, fastifyAcme, type Storage } from '../src/index.js'
import { directoryKey, keys } from '../src/storage/index.js'
import { until } from './helpers.js'

const DIRECTORY = 'https://127.0.0.1:9/dir'
const NAME = 'tickets.test'

async function storeCertificate(storage: Storage): Promise<string> {
  const certs = await makeTestCertificates({ names: [NAME] })
  const now = Date.now()
  const record: CertificateRecord = {
    name: NAME,
    keyPem: certs.key,
    chainPem: certs.cert,
    keyType: 'P-256',
    notBefore: new Date(now - 3_600_000).toISOString(),
    notAfter: new Date(now + 30 * 86_400_000).toISOString(),
    serial: '01',
    issuer: 'CN=test',
    issuedAt: new Date(now).toISOString(),
    digest: recordDigest(certs.key, certs.cert),
  }
  record.seal = recordSeal(record)
  await storage.put(keys.certificate(directoryKey(DIRECTORY), NAME), JSON.stringify(record))
  return certs.caCert
}

/** Things to stop after a case, in reverse order (the servers before the folder they write in is removed). */
type Scope = { after: (fn: () => unknown) => void }
function scope(t: Scope): Scope {
  const stops: Array<() => unknown> = []
  t.after(async () => {
    for (const stop of stops.reverse()) await stop()
  })
  return { after: (fn) => stops.push(fn) }
}

async function server(
  t: Scope,
  storage: Storage,
  sessionTickets: { shared?: boolean; rotateAfterMs?: number } | undefined,
) {
  const lines: string[] = []
  const app = Fastify({
    serverFactory: acmeServerFactory(),
    logger: { level: 'info', stream: { write: (l: string) => lines.push(l) } },
  })
  t.after(() => app.close())
  app.get('/', async () => 'ok')
  await app.register(fastifyAcme, {
    names: [NAME],
    directory: DIRECTORY,
    termsOfServiceAgreed: true,
    storage,
    issueOnStart: false,
    ...(sessionTickets ? { sessionTickets } : {}),
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as { port: number }).port
  /** The key creation times this server logged it put in use. */
  const inUse = () =>
    lines
      .map((l) => JSON.parse(l) as { msg: string; created?: string })
      .filter((l) => l.msg === 'session ticket key in use')
      .map((l) => l.created!)
  return { app, port, lines, inUse }
}

/** One HTTPS request; `session` offered for resumption. Resolves with whether it was resumed and the new ticket. */
function request(
  port: number,
  ca: string,
  session?: Buffer | undefined,
): Promise<{ reused: boolean; session: Buffer | undefined }> {
  return new Promise((resolve, reject) => {
    let ticket: Buffer | undefined
    const socket = connect({ host: '127.0.0.1', port, servername: NAME, ca, ...(session ? { session } : {}) })
    socket.on('session', (s: Buffer) => {
      ticket = s
    })
    let reused = false
    socket.on('secureConnect', () => {
      reused = socket.isSessionReused()
      socket.write(`GET / HTTP/1.1\r\nHost: ${NAME}\r\nConnection: close\r\n\r\n`)
    })
    let body = ''
    socket.on('data', (d: Buffer) => {
      body += d.toString()
    })
    socket.on('error', reject)
    socket.on('close', () => {
      if (!body.startsWith('HTTP/1.1 200')) reject(new Error(`unexpected answer: ${body.slice(0, 80)}`))
      // A resumed TLS 1.3 connection may get no new ticket.
      else if (!ticket && !reused) reject(new Error('no session ticket received'))
      else resolve({ reused, session: ticket })
    })
  })
}

async function tempStorage(t: Scope) {
  const root = await mkdtemp(join(tmpdir(), 'facme-tickets-'))
  t.after(() => rm(root, { recursive: true, force: true }))
  return root
}

test('shared key: a session from one server resumes on another sharing the storage; own keys: it does not', async (context) => {
  const t = scope(context)
  const root = await tempStorage(t)
  // Two FileStorage objects on one folder, as two processes have.
  const ca = await storeCertificate(new FileStorage(root))
  const a = await server(t, new FileStorage(root), {})
  const b = await server(t, new FileStorage(root), {})
  const first = await request(a.port, ca)
  assert.equal(first.reused, false)
  assert.equal((await request(b.port, ca, first.session)).reused, true, 'resumed on the other server')
  assert.equal((await request(a.port, ca, first.session)).reused, true, 'and on the one that issued it')
  // One key, created once (the second server found the first one's under the lock).
  assert.deepEqual(a.inUse(), b.inUse())
  assert.equal(a.inUse().length, 1)
  const stored = JSON.parse(
    await readFile(join(root, ...keys.sessionTicketKey(directoryKey(DIRECTORY)).split('/')), 'utf8'),
  )
  assert.equal(Buffer.from(stored.key, 'base64').length, 48)
  for (const line of [...a.lines, ...b.lines]) assert.ok(!line.includes(stored.key), 'the key is never logged')

  // The same two servers without the option: Node's own random key per server.
  const c = await server(t, new FileStorage(root), undefined)
  const d = await server(t, new FileStorage(root), undefined)
  const own = await request(c.port, ca)
  assert.equal((await request(c.port, ca, own.session)).reused, true, 'resumes on the server that issued it')
  assert.equal((await request(d.port, ca, own.session)).reused, false, 'not on another one')
  // And unshared keys (shared: false) are per server too.
  const e = await server(t, new FileStorage(root), { shared: false })
  assert.equal((await request(e.port, ca, first.session)).reused, false)
})

test('rotation: after rotateAfterMs every server uses the new key; old tickets stop resuming, new ones resume anywhere', async (context) => {
  const t = scope(context)
  const root = await tempStorage(t)
  const ca = await storeCertificate(new FileStorage(root))
  const rotateAfterMs = 2_000
  const a = await server(t, new FileStorage(root), { rotateAfterMs })
  const b = await server(t, new FileStorage(root), { rotateAfterMs })
  const before = await request(a.port, ca)
  assert.equal((await request(b.port, ca, before.session)).reused, true)
  const first = a.inUse()[0]!
  // Both servers put a second key in use (the event that proves the rotation reached them), the same one.
  await until(() => a.inUse().length >= 2 && b.inUse().length >= 2, 10_000, 'a rotated key in use on both servers')
  assert.equal(a.inUse()[1], b.inUse()[1])
  assert.ok(Date.parse(a.inUse()[1]!) >= Date.parse(first) + rotateAfterMs)
  const rotations = [...a.lines, ...b.lines].filter((l) => l.includes('"session ticket key rotated"')).length
  // One creation at start and one rotation (unless the next rotation is already due while this runs).
  assert.ok(rotations >= 2 && rotations <= a.inUse().length, `${rotations} rotations for ${a.inUse().length} keys`)
  // Until a third key: a ticket issued now resumes on both, the ticket of the first key on neither.
  if (a.inUse().length === 2 && b.inUse().length === 2) {
    const after = await request(b.port, ca)
    assert.equal((await request(a.port, ca, after.session)).reused, true, 'a new ticket resumes on the other server')
    assert.equal((await request(a.port, ca, before.session)).reused, false, 'an old ticket does not resume')
    assert.equal((await request(b.port, ca, before.session)).reused, false)
  }
})

test('an unshared key (shared: false) is rotated by its own timer', async (context) => {
  const t = scope(context)
  const root = await tempStorage(t)
  const ca = await storeCertificate(new FileStorage(root))
  const a = await server(t, new FileStorage(root), { shared: false, rotateAfterMs: 1_000 })
  const before = await request(a.port, ca)
  assert.equal((await request(a.port, ca, before.session)).reused, true)
  await until(() => a.inUse().length >= 2, 10_000, 'a second key')
  // Checked again only if no third key came in between.
  const keysBefore = a.inUse().length
  const resumed = (await request(a.port, ca, before.session)).reused
  if (a.inUse().length === keysBefore) assert.equal(resumed, false, 'a ticket of the first key no longer resumes')
  await assert.rejects(readFile(join(root, ...keys.sessionTicketKey(directoryKey(DIRECTORY)).split('/'))), {
    code: 'ENOENT',
  })
})
