// Graceful shutdown: on close() (or SIGINT/SIGTERM), stop accepting, let in-flight requests finish, close idle
// keep-alive connections as they become idle, and after `graceMs` destroy whatever is still open. A second signal
// during the grace period ends the process at once.
import type { Server, Socket } from 'node:net'
import type { FastifyBaseLogger } from 'fastify'

/** Remembers every socket a server accepted, so they can be destroyed when the grace period is over. */
export class ConnectionTracker {
  readonly #sockets = new Set<Socket>()

  track(server: Server): void {
    server.on('connection', (socket: Socket) => {
      this.#sockets.add(socket)
      socket.once('close', () => this.#sockets.delete(socket))
    })
  }

  get size(): number {
    return this.#sockets.size
  }

  destroyAll(): void {
    for (const socket of this.#sockets) socket.destroy()
    this.#sockets.clear()
  }
}

export interface GracefulCloseDeps {
  graceMs: number
  log: FastifyBaseLogger
  tracker: ConnectionTracker
  /** Servers whose idle keep-alive connections are closed while draining. */
  servers: Array<{ closeIdleConnections?: () => void }>
  /** Closes the apps (stop listening, wait for connections). */
  close(): Promise<void>
  /** Called when the grace period is over, after the connections are destroyed (e.g. to abort upstream requests). */
  onForce?: () => void
}

/** Runs deps.close() with a bound: after graceMs, every remaining connection is destroyed. */
export async function gracefulClose(deps: GracefulCloseDeps): Promise<void> {
  const started = Date.now()
  // Connections finishing their last request become idle; close them promptly instead of at keep-alive expiry.
  const idleSweep = setInterval(() => {
    for (const server of deps.servers) server.closeIdleConnections?.()
  }, 50)
  idleSweep.unref()
  const force = setTimeout(() => {
    deps.log.warn({ open: deps.tracker.size, graceMs: deps.graceMs }, 'grace period over: closing open connections')
    deps.tracker.destroyAll()
    deps.onForce?.()
  }, deps.graceMs)
  force.unref()
  try {
    await deps.close()
  } finally {
    clearInterval(idleSweep)
    clearTimeout(force)
  }
  deps.log.info({ ms: Date.now() - started }, 'proxy closed')
}

/** Installs handlers for `signals`; returns the uninstaller. */
export function onSignals(
  signals: readonly NodeJS.Signals[],
  log: FastifyBaseLogger,
  shutdown: (signal: NodeJS.Signals) => Promise<void>,
): () => void {
  let received: NodeJS.Signals | undefined
  const handler = (signal: NodeJS.Signals): void => {
    if (received !== undefined) {
      log.warn({ signal }, 'second signal during shutdown: exiting now')
      process.exit(130)
    }
    received = signal
    log.info({ signal }, 'shutting down gracefully')
    void shutdown(signal)
  }
  for (const signal of signals) process.on(signal, handler)
  return () => {
    for (const signal of signals) process.off(signal, handler)
  }
}
