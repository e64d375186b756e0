// Owns a TCP round-robin balancer on loopback: what a load balancer in front of several instances of an app does,
// small enough to reason about in a test. Each new connection goes to the next target; a target that refuses (a
// killed instance) is skipped and the following one tried. Bytes are piped untouched (TLS passes through), so the
// instance that takes a connection is the one that answers its handshake, whoever it is: Pebble's validation
// connections land on any instance, as they would behind a real balancer.
import { connect, createServer, type Server, type Socket } from 'node:net'

/** Options of {@link startBalancer}. */
export interface BalancerOptions {
  /**
   * Ports on `host` to forward to, in round-robin order. A function is read at every new connection, so the set can
   * follow instances that start and stop; {@link Balancer.add} / {@link Balancer.remove} change a fixed list.
   */
  targets: number[] | (() => number[])
  /** Host of the targets. Default `127.0.0.1`. */
  host?: string
  /** Port to listen on, on 127.0.0.1 (e.g. `pebble.tlsPort`). Default: a free port picked by the kernel. */
  port?: number
  /** Bound on connecting to one target before trying the next. Default 2000 ms. */
  connectTimeoutMs?: number
}

/** A running balancer started by {@link startBalancer}. */
export interface Balancer {
  /** Port it listens on, on 127.0.0.1. */
  port: number
  /** Connections forwarded so far, per target port (a target tried and refused is not counted here). */
  readonly connections: ReadonlyMap<number, number>
  /** Connect attempts to a target that failed (refused, reset or timed out), per target port. */
  readonly refused: ReadonlyMap<number, number>
  /** Client connections closed because no target accepted them. */
  readonly dropped: number
  /** The targets as the next connection will see them. */
  targets(): number[]
  /** Append a target (no effect when `targets` was given as a function, or when present). */
  add(port: number): void
  /** Remove a target: new connections skip it; connections already forwarded to it stay open. */
  remove(port: number): void
  /** Stop listening and destroy every connection it holds. Idempotent. */
  stop(): Promise<void>
}

const DEFAULT_CONNECT_TIMEOUT_MS = 2_000

function listen(server: Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen({ host: '127.0.0.1', port, exclusive: true }, () => {
      server.off('error', reject)
      const address = server.address()
      if (address === null || typeof address === 'string') reject(new Error('balancer has no TCP port'))
      else resolve(address.port)
    })
  })
}

/** Connect to host:port; resolves with the open socket, or undefined when it refuses or does not answer in time. */
function dial(host: string, port: number, timeoutMs: number): Promise<Socket | undefined> {
  return new Promise((resolve) => {
    const upstream = connect({ host, port, allowHalfOpen: true })
    const fail = () => {
      upstream.destroy()
      resolve(undefined)
    }
    upstream.setTimeout(timeoutMs, fail)
    upstream.once('error', fail)
    upstream.once('connect', () => {
      upstream.setTimeout(0)
      upstream.off('error', fail)
      resolve(upstream)
    })
  })
}

/**
 * Start a TCP round-robin balancer on 127.0.0.1 in front of `targets`. Each accepted connection is paused while a
 * target is dialled: the next one in turn, then the following ones if it refuses; when none accepts, the client
 * connection is closed (counted in {@link Balancer.dropped}).
 */
export async function startBalancer(options: BalancerOptions): Promise<Balancer> {
  const host = options.host ?? '127.0.0.1'
  const timeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS
  const fixed = typeof options.targets === 'function' ? undefined : [...options.targets]
  const current = (): number[] => (fixed ? [...fixed] : (options.targets as () => number[])())
  const connections = new Map<number, number>()
  const refused = new Map<number, number>()
  const open = new Set<Socket>()
  let next = 0
  let dropped = 0
  const bump = (map: Map<number, number>, port: number) => map.set(port, (map.get(port) ?? 0) + 1)

  const track = (socket: Socket) => {
    open.add(socket)
    socket.once('close', () => open.delete(socket))
  }

  const forward = async (client: Socket): Promise<void> => {
    track(client)
    client.pause()
    // A client that goes away while a target is dialled must not crash the process.
    client.on('error', () => client.destroy())
    const list = current()
    const start = next++
    for (let i = 0; i < list.length && !client.destroyed; i++) {
      const port = list[(start + i) % list.length]!
      const upstream = await dial(host, port, timeoutMs)
      if (!upstream) {
        bump(refused, port)
        continue
      }
      if (client.destroyed) {
        upstream.destroy()
        return
      }
      track(upstream)
      bump(connections, port)
      // Either side failing (reset) resets both; an orderly end (FIN) is passed on by pipe() after the bytes before
      // it, so half-closed protocols still work; a side closed without a FIN ends the other once its bytes are out.
      upstream.on('error', () => client.destroy())
      client.on('error', () => upstream.destroy())
      upstream.once('close', () => client.end())
      client.once('close', () => upstream.end())
      client.pipe(upstream)
      upstream.pipe(client)
      client.resume()
      return
    }
    dropped++
    // Closed with a FIN, what was sent read and discarded: destroying a socket with unread bytes would reset it.
    client.resume()
    client.end()
  }

  const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
    void forward(client)
  })
  const port = await listen(server, options.port ?? 0)

  let stopping: Promise<void> | undefined
  return {
    port,
    connections,
    refused,
    get dropped() {
      return dropped
    },
    targets: current,
    add(target) {
      if (fixed && !fixed.includes(target)) fixed.push(target)
    },
    remove(target) {
      if (!fixed) return
      const index = fixed.indexOf(target)
      if (index >= 0) fixed.splice(index, 1)
    },
    stop() {
      stopping ??= new Promise<void>((resolve) => {
        server.close(() => resolve())
        for (const socket of open) socket.destroy()
      })
      return stopping
    },
  }
}
