// startBalancer(): round robin over real TCP servers on loopback, a refusing target skipped, targets changed at
// runtime, a half-closed request still answered, nothing left open after stop().
import assert from 'node:assert/strict'
import { connect, createServer, type Server } from 'node:net'
import { test } from 'node:test'
import { freePort, startBalancer } from '../src/index.js'

/** A server that reads until the client half-closes, then answers `<id>:<what it read>` and ends. */
async function namedServer(id: string): Promise<{ server: Server; port: number }> {
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    let got = ''
    socket.on('data', (d: Buffer) => {
      got += d.toString()
    })
    socket.on('end', () => socket.end(`${id}:${got}`))
  })
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve))
  return { server, port: (server.address() as { port: number }).port }
}

/** Sends `text`, half-closes, and resolves with the whole answer ('' when the connection is closed unanswered). */
function ask(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, allowHalfOpen: true })
    let answer = ''
    socket.on('data', (d: Buffer) => {
      answer += d.toString()
    })
    socket.on('error', reject)
    socket.on('close', () => resolve(answer))
    socket.end(text)
  })
}

test('startBalancer: round robin, refused targets skipped, runtime changes, dropped when none answers', async (t) => {
  const servers = await Promise.all(['a', 'b', 'c'].map(namedServer))
  t.after(() => Promise.all(servers.map(({ server }) => new Promise((r) => server.close(r)))))
  const [a, b, c] = servers.map((s) => s.port) as [number, number, number]
  const balancer = await startBalancer({ targets: [a, b, c] })
  t.after(() => balancer.stop())

  const answers: string[] = []
  for (let i = 0; i < 6; i++) answers.push(await ask(balancer.port, `m${i}`))
  assert.deepEqual(answers, ['a:m0', 'b:m1', 'c:m2', 'a:m3', 'b:m4', 'c:m5'], 'in turn, bytes both ways')
  assert.deepEqual(
    [...balancer.connections],
    [
      [a, 2],
      [b, 2],
      [c, 2],
    ],
  )

  // b goes away as a killed instance would: its port refuses, the balancer tries the next target.
  await new Promise((r) => servers[1]!.server.close(r))
  const afterKill: string[] = []
  for (let i = 0; i < 4; i++) afterKill.push((await ask(balancer.port, 'x')).split(':')[0]!)
  assert.equal(afterKill.includes('b'), false)
  assert.equal(afterKill.length, 4)
  assert.ok((balancer.refused.get(b) ?? 0) >= 1, 'the refused connect was counted')

  balancer.remove(b)
  balancer.remove(a)
  assert.deepEqual(balancer.targets(), [c])
  assert.equal(await ask(balancer.port, 'y'), 'c:y')
  balancer.add(a)
  balancer.add(a)
  assert.deepEqual(balancer.targets(), [c, a])

  // Nothing accepts: the client's connection is closed, and counted.
  const dead = await freePort()
  const lonely = await startBalancer({ targets: () => [dead] })
  t.after(() => lonely.stop())
  assert.equal(await ask(lonely.port, 'z'), '')
  assert.equal(lonely.dropped, 1)
  assert.equal(lonely.refused.get(dead), 1)
})

test('startBalancer: listens on a given port; stop() closes the connections it holds', async (t) => {
  // A target that never answers: the connection stays open until the balancer is stopped.
  const silent = createServer(() => {})
  await new Promise<void>((resolve) => silent.listen({ host: '127.0.0.1', port: 0 }, resolve))
  t.after(() => new Promise((r) => silent.close(r)))
  const port = await freePort()
  const balancer = await startBalancer({ targets: [(silent.address() as { port: number }).port], port })
  assert.equal(balancer.port, port)
  const socket = connect({ host: '127.0.0.1', port })
  socket.on('error', () => {})
  await new Promise((resolve) => socket.once('connect', resolve))
  const closed = new Promise((resolve) => socket.once('close', resolve))
  // The balancer has forwarded it once the target saw the connection.
  while ([...balancer.connections.values()].reduce((s, n) => s + n, 0) === 0) await new Promise((r) => setImmediate(r))
  await balancer.stop()
  await balancer.stop()
  await closed
  await assert.rejects(
    new Promise((resolve, reject) =>
      connect({ host: '127.0.0.1', port }).once('connect', resolve).once('error', reject),
    ),
    /ECONNREFUSED/,
  )
})
