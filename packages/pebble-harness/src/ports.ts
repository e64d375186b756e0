// Owns loopback port reservation: the harness never hard-codes ports so parallel test files cannot collide.
import { createServer, type Server } from 'node:net'

/**
 * Ports are picked below Linux's ephemeral range (32768-60999 by default): the kernel hands those out to every
 * `listen(0)` and every outgoing connection of the other test files running in parallel, so a port picked there and
 * released until its server binds it could be taken meanwhile (EADDRINUSE). Below it, only another pick can collide.
 */
const PICK_MIN = 20_000
const PICK_MAX = 32_767

function listenOn(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen({ host: '127.0.0.1', port, exclusive: true }, () => resolve(server))
  })
}

async function listenEphemeral(): Promise<Server> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = PICK_MIN + Math.floor(Math.random() * (PICK_MAX - PICK_MIN + 1))
    try {
      return await listenOn(port)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err
    }
  }
  // A crowded range: let the kernel pick.
  return listenOn(0)
}

function portOf(server: Server): number {
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('listening socket has no TCP port')
  return address.port
}

function close(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()))
}

/**
 * Reserve a free TCP port on 127.0.0.1: listen on a random port below the ephemeral range, close.
 *
 * The port is free when the promise resolves, but nothing holds it afterwards: bind it soon.
 */
export async function freePort(): Promise<number> {
  const server = await listenEphemeral()
  const port = portOf(server)
  await close(server)
  return port
}

/**
 * Reserve `count` distinct free ports, none of them in `avoid`.
 *
 * All listeners stay open until every port is picked: closing each before opening the next could let the kernel hand
 * the same port out twice.
 */
export async function freePorts(count: number, avoid: Iterable<number> = []): Promise<number[]> {
  const excluded = new Set(avoid)
  const held: Server[] = []
  const ports: number[] = []
  try {
    // Bounded so an unlucky `avoid` set cannot spin forever.
    for (let attempts = 0; ports.length < count && attempts < count + 64; attempts++) {
      const server = await listenEphemeral()
      held.push(server)
      const port = portOf(server)
      if (!excluded.has(port)) ports.push(port)
    }
  } finally {
    await Promise.all(held.map(close))
  }
  if (ports.length < count) throw new Error(`could not reserve ${count} free ports on 127.0.0.1`)
  return ports
}
