// The TLS-ALPN-01 responder on the server's own TLS port. While a challenge is pending, each new TCP connection's
// ClientHello is read before TLS starts; a connection that offers exactly ["acme-tls/1"] for a name with a pending
// challenge is handed to a separate, never-listening TLS server that knows only challenge certificates, speaks only
// acme-tls/1, sends no application data and closes after the handshake. Every other connection goes to the
// original TLS listener untouched. With no challenge pending there is no peek at all.
import { constants } from 'node:crypto'
import type { Socket } from 'node:net'
import { createServer, type Server as TlsServer } from 'node:tls'
import { peekClientHello } from './client-hello.js'
import type { CertResolver } from './resolver.js'

export const ACME_TLS_ALPN = 'acme-tls/1'
export const DEFAULT_PEEK_TIMEOUT_MS = 10_000
export const CHALLENGE_HANDSHAKE_TIMEOUT_MS = 10_000

type ConnectionListener = (this: TlsServer, socket: Socket) => void

export interface TlsAlpnResponder {
  readonly stats: { peeked: number; diverted: number; timeouts: number; closedEarly: number; rejected: number }
  /** Handshakes completed by the challenge server (what a validator gets). */
  readonly challengeServer: TlsServer
}

function offersOnlyAcmeTls(alpn: readonly string[] | undefined): boolean {
  return alpn !== undefined && alpn.length === 1 && alpn[0] === ACME_TLS_ALPN
}

/** The one decision that matters for safety; exported so it is tested on its own. */
export function isChallengeHello(
  alpn: readonly string[] | undefined,
  serverName: string | undefined,
  resolver: CertResolver,
): boolean {
  return offersOnlyAcmeTls(alpn) && serverName !== undefined && serverName !== '' && resolver.hasChallenge(serverName)
}

/**
 * Takes over the 'connection' event of `server` (a tls.Server, https.Server or http2 secure server): the listeners
 * it had (Node's TLS handling) are kept and called for every connection that is not a validator's.
 */
export function installTlsAlpnResponder(
  server: TlsServer,
  resolver: CertResolver,
  peekTimeoutMs = DEFAULT_PEEK_TIMEOUT_MS,
): TlsAlpnResponder {
  const original = server.listeners('connection') as ConnectionListener[]
  server.removeAllListeners('connection')

  const challengeServer = createServer({
    ALPNProtocols: [ACME_TLS_ALPN],
    SNICallback: resolver.challengeSni,
    minVersion: 'TLSv1.2',
    // A validator finishes in milliseconds; anything slower is not one and must not hold the port's close().
    handshakeTimeout: CHALLENGE_HANDSHAKE_TIMEOUT_MS,
    // No session tickets: nothing but the handshake is ever sent on a validation connection.
    secureOptions: constants.SSL_OP_NO_TICKET,
  })
  challengeServer.on('secureConnection', (tlsSocket) => {
    tlsSocket.on('error', () => {})
    tlsSocket.end()
    tlsSocket.setTimeout(5_000, () => tlsSocket.destroy())
  })
  challengeServer.on('tlsClientError', (_err, tlsSocket) => tlsSocket.destroy())

  const stats = { peeked: 0, diverted: 0, timeouts: 0, closedEarly: 0, rejected: 0 }
  const pass = (socket: Socket): void => {
    for (const listener of original) listener.call(server, socket)
  }

  server.on('connection', (socket: Socket) => {
    if (!resolver.challengesPending) {
      pass(socket)
      return
    }
    stats.peeked++
    // The peek removes its own listeners when it settles; this guard covers the gap until TLS adds its own.
    const guard = (): void => {}
    socket.on('error', guard)
    void peekClientHello(socket, { timeoutMs: peekTimeoutMs }).then((result) => {
      socket.off('error', guard)
      if (result.kind === 'timeout') {
        stats.timeouts++
        socket.destroy()
      } else if (result.kind === 'closed') {
        stats.closedEarly++
        socket.destroy()
      } else if (result.kind === 'malformed' || result.kind === 'not-tls') {
        // TLS would refuse these too, but only after waiting for bytes that may never come.
        stats.rejected++
        socket.destroy()
      } else if (
        result.kind === 'hello' &&
        isChallengeHello(result.info.alpnProtocols, result.info.serverName, resolver)
      ) {
        stats.diverted++
        challengeServer.emit('connection', socket)
      } else if (result.kind === 'hello' && offersOnlyAcmeTls(result.info.alpnProtocols) && result.info.serverName) {
        // A validator for a name with no challenge here yet: another instance's order whose challenge is being read
        // from storage (connections are peeked from its notification on; the ordering instance waits for the
        // echo and a settle time before the CA validates). Only validators offer nothing but acme-tls/1, so no
        // normal client waits for this look.
        socket.on('error', guard)
        void resolver.lookupChallenge(result.info.serverName).then((found) => {
          socket.off('error', guard)
          if (socket.destroyed) return
          if (found && isChallengeHello(result.info.alpnProtocols, result.info.serverName, resolver)) {
            stats.diverted++
            challengeServer.emit('connection', socket)
          } else pass(socket)
        })
      } else {
        pass(socket)
      }
    })
  })

  return { stats, challengeServer }
}
