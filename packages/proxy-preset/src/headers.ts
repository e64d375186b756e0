// Hop-by-hop headers: those that describe one connection and must not be forwarded (RFC 9110 section 7.6.1, plus
// the legacy ones proxies are expected to drop, and every header the Connection header names). The hot path copies
// a header object without them in one pass: deleting properties from Node's header objects is slower.

export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
])

/** The header names a Connection header lists (lower case). */
export function connectionTokens(value: unknown): string[] {
  const text = Array.isArray(value) ? value.join(',') : typeof value === 'string' ? value : ''
  if (text === '') return []
  return text
    .toLowerCase()
    .split(',')
    .map((t) => t.trim())
    .filter((t) => t !== '')
}

/** Removes hop-by-hop headers and every header the Connection header names, in place. */
export function stripHopByHop(headers: Record<string, unknown>): void {
  for (const name of connectionTokens(headers['connection'])) delete headers[name]
  for (const name of HOP_BY_HOP) delete headers[name]
}

/**
 * A copy of `headers` (lower-case names, as Node and undici give them) without its hop-by-hop headers, those its
 * Connection header names, and those `drop` refuses.
 */
export function endToEndCopy(
  headers: Record<string, unknown>,
  drop?: (name: string) => boolean,
): Record<string, unknown> {
  const connection = headers['connection']
  const listed = connection === undefined ? undefined : connectionTokens(connection)
  const out: Record<string, unknown> = {}
  for (const name of Object.keys(headers)) {
    if (HOP_BY_HOP.has(name)) continue
    if (listed?.includes(name)) continue
    if (drop?.(name)) continue
    out[name] = headers[name]
  }
  return out
}
