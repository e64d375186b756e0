// Owns loopback port reservation: the harness never hard-codes ports so parallel test files cannot collide.
import { createServer, type Server } from 'node:net'

function listenEphemeral(): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => resolve(server))
  })
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
 * Reserve a free TCP port on 127.0.0.1: listen on port 0, read the port the kernel picked, close.
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
