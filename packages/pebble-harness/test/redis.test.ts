// startRedis(): a redis-server on a free loopback port, no persistence, restart on the same port with no data, and
// nothing left running or on disk after stop().
import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { test } from 'node:test'
import { isAlive, startRedis } from '../src/index.js'

/** One inline command over a fresh socket; the raw RESP reply. */
function command(port: number, line: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port })
    let reply = ''
    socket.on('error', reject)
    socket.on('connect', () => socket.write(`${line}\r\n`))
    socket.on('data', (chunk) => {
      reply += chunk.toString()
      if (reply.endsWith('\r\n')) {
        socket.destroy()
        resolve(reply)
      }
    })
  })
}

test('startRedis: no persistence, restart() keeps the port and loses the data, stop() leaves no process', async () => {
  const started = performance.now()
  const redis = await startRedis()
  const startMs = performance.now() - started
  try {
    assert.equal(redis.url, `redis://127.0.0.1:${redis.port}`)
    assert.match(await command(redis.port, 'CONFIG GET save'), /\$4\r\nsave\r\n\$0\r\n\r\n$/)
    assert.match(await command(redis.port, 'CONFIG GET appendonly'), /\r\nno\r\n$/)
    assert.equal(await command(redis.port, 'SET k v'), '+OK\r\n')
    const first = redis.pid
    const restartedAt = performance.now()
    await redis.restart()
    const restartMs = performance.now() - restartedAt
    assert.notEqual(redis.pid, first)
    assert.equal(isAlive(first), false)
    assert.equal(await command(redis.port, 'GET k'), '$-1\r\n', 'no data survives a restart')
    await redis.kill()
    assert.equal(redis.running, false)
    await assert.rejects(command(redis.port, 'PING'), /ECONNREFUSED/)
    await redis.restart()
    assert.equal(await command(redis.port, 'PING'), '+PONG\r\n')
    console.log(`# redis-server started in ${startMs.toFixed(0)} ms, restarted in ${restartMs.toFixed(0)} ms`)
  } finally {
    const pid = redis.pid
    await redis.stop()
    await redis.stop()
    assert.equal(isAlive(pid), false)
  }
})
