// The hot-path header rewriting (one-pass copies) against the in-place functions it replaced (kept here verbatim
// as the oracle), on generated header sets, and the path guard's fast path against the full decoding check.
import assert from 'node:assert/strict'
import { isIP } from 'node:net'
import { test } from 'node:test'
import { upstreamRequestHeaders } from '../src/forwarded.js'
import { endToEndCopy } from '../src/headers.js'
import { pathProblem } from '../src/routes.js'

// --- the oracle: the in-place functions as they were before the one-pass copies (commit 99aff04), verbatim ----

const OLD_HOP_BY_HOP = [
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
]
function oldConnectionTokens(value: unknown): string[] {
  const text = Array.isArray(value) ? value.join(',') : typeof value === 'string' ? value : ''
  return text
    .toLowerCase()
    .split(',')
    .map((t) => t.trim())
    .filter((t) => t !== '')
}
function oldStripHopByHop(headers: Record<string, unknown>): void {
  for (const name of oldConnectionTokens(headers['connection'])) delete headers[name]
  for (const name of OLD_HOP_BY_HOP) delete headers[name]
}
const OLD_FORWARDING = [
  'forwarded',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'x-forwarded-port',
  'x-real-ip',
]
const OLD_FORWARDING_SET = new Set<string>(OLD_FORWARDING)
function oldPlainAddress(address: string | undefined): string | undefined {
  if (address === undefined) return undefined
  return address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address
}
function oldHeaderValue(value: unknown): string | undefined {
  if (typeof value === 'string') return value
  if (Array.isArray(value)) return value.join(', ')
  return undefined
}
function oldApplyForwardingHeaders(
  headers: Record<string, unknown>,
  ctx: {
    peer: string | undefined
    secure: boolean
    host: string | undefined
    trusted: (a: string | undefined) => boolean
  },
): void {
  const peer = oldPlainAddress(ctx.peer)
  const trusted = ctx.trusted(peer)
  const previousFor = trusted ? oldHeaderValue(headers['x-forwarded-for']) : undefined
  const previousProto = trusted ? oldHeaderValue(headers['x-forwarded-proto']) : undefined
  const previousHost = trusted ? oldHeaderValue(headers['x-forwarded-host']) : undefined
  const previousRealIp = trusted ? oldHeaderValue(headers['x-real-ip']) : undefined
  const previousForwarded = trusted ? oldHeaderValue(headers['forwarded']) : undefined
  for (const name of OLD_FORWARDING) delete headers[name]
  for (const name of Object.keys(headers)) {
    if (name.includes('_') && OLD_FORWARDING_SET.has(name.toLowerCase().replace(/_/g, '-'))) delete headers[name]
  }
  if (peer !== undefined) {
    headers['x-forwarded-for'] = previousFor ? `${previousFor}, ${peer}` : peer
    const firstHop = previousFor?.split(',')[0]?.trim()
    headers['x-real-ip'] = previousRealIp ?? (firstHop || peer)
  }
  headers['x-forwarded-proto'] = previousProto ?? (ctx.secure ? 'https' : 'http')
  const host = previousHost ?? ctx.host
  if (host !== undefined) headers['x-forwarded-host'] = host
  if (previousForwarded !== undefined) headers['forwarded'] = previousForwarded
}

/** A small deterministic generator (mulberry32), so a failure can be replayed from its seed. */
function random(seed: number): () => number {
  let a = seed
  return () => {
    a = (a + 0x6d2b79f5) | 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const NAMES = [
  'host',
  'accept',
  'cookie',
  'connection',
  'keep-alive',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'proxy-authorization',
  'http2-settings',
  'forwarded',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'x-forwarded-port',
  'x-real-ip',
  'x_forwarded_for',
  'x-forwarded_host',
  'x_real_ip',
  'x-custom',
  'x_custom',
  'authorization',
  'set-cookie',
]

function headerSet(next: () => number): Record<string, unknown> {
  const headers: Record<string, unknown> = {}
  for (const name of NAMES) {
    if (next() < 0.4) continue
    headers[name] = next() < 0.1 ? [`${name}-a`, `${name}-b`] : `${name}-value`
  }
  if ('connection' in headers && next() < 0.7) {
    const listed = NAMES.filter(() => next() < 0.2)
    headers['connection'] = [...listed, 'close'].join(next() < 0.5 ? ', ' : ',')
  }
  if ('x-forwarded-for' in headers && next() < 0.5) headers['x-forwarded-for'] = '10.0.0.1, 10.0.0.2'
  return headers
}

test('upstreamRequestHeaders() equals the old stripHopByHop() + applyForwardingHeaders() on 5,000 header sets', () => {
  const next = random(2026)
  for (let i = 0; i < 5000; i++) {
    const headers = headerSet(next)
    const trustedPeer = next() < 0.5
    const ctx = {
      peer: next() < 0.1 ? undefined : next() < 0.5 ? '::ffff:127.0.0.1' : '192.0.2.7',
      secure: next() < 0.8,
      host: next() < 0.1 ? undefined : 'site.test',
      trusted: () => trustedPeer,
    }
    const expected = structuredClone(headers)
    oldStripHopByHop(expected)
    oldApplyForwardingHeaders(expected, ctx)
    const before = structuredClone(headers)
    const actual = upstreamRequestHeaders(headers, ctx)
    assert.deepEqual(actual, expected, `case ${i}: ${JSON.stringify(headers)}`)
    assert.deepEqual(headers, before, 'the input is not modified')
  }
})

test('endToEndCopy() equals the old stripHopByHop() on 5,000 header sets', () => {
  const next = random(7)
  for (let i = 0; i < 5000; i++) {
    const headers = headerSet(next)
    const expected = structuredClone(headers)
    oldStripHopByHop(expected)
    assert.deepEqual(endToEndCopy(headers), expected, `case ${i}: ${JSON.stringify(headers)}`)
  }
})

/** The guard without its fast path: every path decoded and split (what pathProblem did for every request). */
function fullCheck(rawPath: string, allowSemicolon: boolean): boolean {
  if (rawPath.includes('\\')) return true
  let decoded: string
  try {
    decoded = decodeURIComponent(rawPath)
  } catch {
    return true
  }
  if (decoded.includes('\\') || decoded.includes('\0')) return true
  if (!allowSemicolon && decoded.includes(';')) return true
  for (const segment of decoded.split('/')) {
    const bare = allowSemicolon ? (segment.split(';')[0] ?? '') : segment
    if (bare === '.' || bare === '..') return true
  }
  return /%(?:2e|2f|5c|00)/i.test(decoded)
}

test('pathProblem() refuses exactly what the full check refuses, on 50,000 generated paths', () => {
  const next = random(99)
  const pieces = [
    '/',
    '/',
    'a',
    'bc',
    '.',
    '..',
    '%2e',
    '%2E',
    '%25',
    '%2f',
    '%5c',
    '%00',
    '%zz',
    ';',
    '\\',
    '\0',
    '.js',
    '?',
  ]
  for (let i = 0; i < 50_000; i++) {
    let path = '/'
    const length = 1 + Math.floor(next() * 8)
    for (let j = 0; j < length; j++) path += pieces[Math.floor(next() * pieces.length)]
    for (const allow of [false, true]) {
      assert.equal(pathProblem(path, allow) !== undefined, fullCheck(path, allow), `${JSON.stringify(path)} ${allow}`)
    }
  }
})
