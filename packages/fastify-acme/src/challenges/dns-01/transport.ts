// Sends one DNS message to one server and returns the matching response: UDP first (resent every second until the
// deadline), TCP when the UDP answer is truncated or when asked. Every socket and timer is released on return.
import { createSocket } from 'node:dgram'
import { isIPv6, Socket } from 'node:net'
import { ERR_DNS_NO_ANSWER } from './errors.js'

export interface DnsServer {
  host: string
  port: number
}

export function formatServer(server: DnsServer): string {
  return isIPv6(server.host) ? `[${server.host}]:${server.port}` : `${server.host}:${server.port}`
}

/** `host`, `host:port`, `[v6]:port` or a bare IPv6 address; the default port is 53. */
export function parseServer(address: string, defaultPort = 53): DnsServer {
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(address)
  if (bracketed) return { host: bracketed[1]!, port: bracketed[2] ? Number(bracketed[2]) : defaultPort }
  if (isIPv6(address)) return { host: address, port: defaultPort }
  const [host, port] = address.split(':')
  if (!host || (port !== undefined && !/^\d{1,5}$/.test(port)))
    throw new TypeError(`not a DNS server address: ${JSON.stringify(address)}`)
  return { host, port: port === undefined ? defaultPort : Number(port) }
}

const UDP_RESEND_MS = 1_000

export interface ExchangeOptions {
  timeoutMs: number
  signal?: AbortSignal | undefined
  /** Skip UDP (e.g. a message larger than 512 bytes). */
  tcp?: boolean
}

/** The response to `message` (same ID) from `server`; rejects with FACME_DNS_NO_ANSWER after `timeoutMs`. */
export async function exchange(server: DnsServer, message: Buffer, options: ExchangeOptions): Promise<Buffer> {
  const deadline = Date.now() + options.timeoutMs
  if (!options.tcp && message.length <= 512) {
    const response = await overUdp(server, message, options.timeoutMs, options.signal)
    const truncated = (response.readUInt16BE(2) & 0x0200) !== 0
    if (!truncated) return response
  }
  return overTcp(server, message, Math.max(deadline - Date.now(), 1_000), options.signal)
}

function abortReason(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new Error('aborted')
}

function overUdp(server: DnsServer, message: Buffer, timeoutMs: number, signal?: AbortSignal): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortReason(signal))
    const socket = createSocket(isIPv6(server.host) ? 'udp6' : 'udp4')
    const id = message.readUInt16BE(0)
    let resend: NodeJS.Timeout | undefined
    let done = false
    const finish = (error: Error | undefined, response?: Buffer) => {
      if (done) return
      done = true
      clearTimeout(timer)
      clearInterval(resend)
      signal?.removeEventListener('abort', onAbort)
      socket.close()
      if (error) reject(error)
      else resolve(response!)
    }
    const onAbort = () => finish(abortReason(signal!))
    const timer = setTimeout(
      () => finish(new ERR_DNS_NO_ANSWER(formatServer(server), `no UDP response within ${timeoutMs} ms`)),
      timeoutMs,
    )
    signal?.addEventListener('abort', onAbort, { once: true })
    socket.on('message', (response) => {
      // A connected socket only gets datagrams from the server; the ID check drops late answers to older messages.
      if (response.length >= 12 && response.readUInt16BE(0) === id) finish(undefined, response)
    })
    // Connected, so an ICMP port unreachable surfaces as ECONNREFUSED at once instead of a timeout.
    socket.on('error', (error) => finish(new ERR_DNS_NO_ANSWER(formatServer(server), error.message, { cause: error })))
    socket.connect(server.port, server.host, () => {
      const send = () => socket.send(message, (error) => error && socket.emit('error', error))
      send()
      resend = setInterval(send, UDP_RESEND_MS)
    })
  })
}

function overTcp(server: DnsServer, message: Buffer, timeoutMs: number, signal?: AbortSignal): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortReason(signal))
    const socket = new Socket()
    let received = Buffer.alloc(0)
    let done = false
    const finish = (error: Error | undefined, response?: Buffer) => {
      if (done) return
      done = true
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
      socket.destroy()
      if (error) reject(error)
      else resolve(response!)
    }
    const onAbort = () => finish(abortReason(signal!))
    const timer = setTimeout(
      () => finish(new ERR_DNS_NO_ANSWER(formatServer(server), `no TCP response within ${timeoutMs} ms`)),
      timeoutMs,
    )
    signal?.addEventListener('abort', onAbort, { once: true })
    socket.on('error', (error) => finish(new ERR_DNS_NO_ANSWER(formatServer(server), error.message, { cause: error })))
    socket.on('data', (chunk) => {
      received = Buffer.concat([received, chunk])
      if (received.length >= 2 && received.length >= 2 + received.readUInt16BE(0))
        finish(undefined, received.subarray(2, 2 + received.readUInt16BE(0)))
    })
    socket.on('end', () =>
      finish(new ERR_DNS_NO_ANSWER(formatServer(server), 'TCP connection closed before a full response')),
    )
    socket.connect(server.port, server.host, () => {
      const length = Buffer.alloc(2)
      length.writeUInt16BE(message.length)
      socket.write(Buffer.concat([length, message]))
    })
  })
}
