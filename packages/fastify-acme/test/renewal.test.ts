// Renewal maths, the scheduler and the order limiter: pure logic, with a controllable clock where time matters.
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { parseRetryAfter } from '../src/acme.js'
import {
  clampRetryAfter,
  FAILED_VALIDATION_DELAY_MS,
  nextAttemptDelay,
  RETRY_AFTER_MAX_MS,
  RETRY_AFTER_MIN_MS,
  retryDelay,
} from '../src/lifecycle/backoff.js'
import { OrderLimiter } from '../src/lifecycle/rate-limit.js'
import { JITTER_FRACTION, renewalTime, renewalWindow } from '../src/lifecycle/renewal-policy.js'
import { Scheduler } from '../src/lifecycle/scheduler.js'
import type { Clock } from '../src/options.js'

const HOUR = 3600_000
const DAY = 24 * HOUR
const lifetimes: Array<[string, number]> = [
  ['90-day', 90 * DAY],
  ['45-day', 45 * DAY],
  ['6-day (160-hour)', 160 * HOUR],
]

describe('renewal window', () => {
  for (const [label, lifetime] of lifetimes) {
    test(`${label}: renew when a third remains, jitter within 5% of the lifetime before that`, () => {
      const nb = Date.UTC(2026, 0, 1)
      const na = nb + lifetime
      const w = renewalWindow(nb, na, 1 / 3)
      assert.equal(Math.round(na - w.latest), Math.round(lifetime / 3))
      assert.equal(Math.round(w.latest - w.earliest), Math.round(lifetime * JITTER_FRACTION))
      assert.equal(
        renewalTime(nb, na, 1 / 3, () => 0),
        Math.round(w.latest),
      )
      assert.equal(
        renewalTime(nb, na, 1 / 3, () => 1),
        Math.round(w.earliest),
      )
      for (let i = 0; i < 1000; i++) {
        const t = renewalTime(nb, na, 1 / 3)
        assert.ok(t >= Math.floor(w.earliest) && t <= Math.ceil(w.latest))
        // Always well before expiry: at least a quarter of the lifetime remains.
        assert.ok(na - t > lifetime / 4)
      }
    })
  }
  test('an expired certificate is due at once (renewal time in the past)', () => {
    const now = Date.UTC(2026, 5, 1)
    assert.ok(renewalTime(now - 100 * DAY, now - 10 * DAY, 1 / 3) < now)
  })
  test('a configurable ratio moves the window', () => {
    const w = renewalWindow(0, 100 * DAY, 0.5)
    assert.equal(w.latest, 50 * DAY)
  })
  test('50 names issued together spread over the jitter span', () => {
    const nb = Date.UTC(2026, 0, 1)
    const na = nb + 90 * DAY
    const times = Array.from({ length: 50 }, () => renewalTime(nb, na, 1 / 3))
    const spread = Math.max(...times) - Math.min(...times)
    assert.ok(new Set(times).size >= 45, 'nearly all distinct')
    assert.ok(spread > 0.5 * JITTER_FRACTION * 90 * DAY, `spread ${spread} ms covers most of the span`)
  })
})

describe('retry backoff', () => {
  test('capped exponential sequence: minutes, then hours, at most a day', () => {
    const seq = Array.from({ length: 14 }, (_, i) => retryDelay(i + 1, 60_000, DAY, () => 0))
    assert.deepEqual(seq.slice(0, 5), [60_000, 120_000, 240_000, 480_000, 960_000])
    assert.ok(
      seq.every((d, i) => i === 0 || d >= seq[i - 1]!),
      'never shrinks',
    )
    assert.equal(seq.at(-1), DAY)
    assert.ok(
      seq.some((d) => d >= HOUR && d < DAY),
      'passes through hours',
    )
  })
  test('jitter adds 0-25%, never past the cap', () => {
    for (let a = 1; a < 30; a++) {
      const lo = retryDelay(a, 60_000, DAY, () => 0)
      const hi = retryDelay(a, 60_000, DAY, () => 0.9999)
      assert.ok(hi >= lo && hi <= Math.min(DAY, lo * 1.25 + 1))
    }
    assert.equal(
      retryDelay(1000, 60_000, DAY, () => 1),
      DAY,
    )
  })
  test('Retry-After is clamped to [1 s, 24 h] and wins over a shorter backoff', () => {
    assert.equal(clampRetryAfter(0), RETRY_AFTER_MIN_MS)
    assert.equal(clampRetryAfter(10 * DAY), RETRY_AFTER_MAX_MS)
    assert.equal(clampRetryAfter(30_000), 30_000)
    const policy = { retryMinMs: 1000, retryMaxMs: DAY }
    assert.equal(
      nextAttemptDelay(1, { retryAfterMs: 3 * HOUR }, policy, () => 0),
      3 * HOUR,
    )
    assert.equal(
      nextAttemptDelay(1, { retryAfterMs: 30 * DAY }, policy, () => 0),
      RETRY_AFTER_MAX_MS,
    )
    assert.equal(
      nextAttemptDelay(1, { retryAfterMs: 10 }, policy, () => 0),
      1000,
    )
  })
  test('a failed validation waits at least 15 minutes (5 failures per name per hour at most)', () => {
    const policy = { retryMinMs: 1000, retryMaxMs: DAY }
    const delays = Array.from({ length: 5 }, (_, i) => nextAttemptDelay(i + 1, { validation: true }, policy, () => 0))
    assert.ok(delays.every((d) => d >= FAILED_VALIDATION_DELAY_MS))
    assert.ok(delays.slice(0, 4).reduce((a, b) => a + b, 0) >= HOUR, 'five validation failures span an hour or more')
  })
  test('Retry-After header forms', () => {
    const now = Date.UTC(2026, 0, 1, 12)
    assert.equal(parseRetryAfter('120', now), 120_000)
    assert.equal(parseRetryAfter(new Date(now + 90_000).toUTCString(), now), 90_000)
    assert.equal(parseRetryAfter('garbage', now), undefined)
    assert.equal(parseRetryAfter(undefined, now), undefined)
    assert.equal(parseRetryAfter(new Date(now - 90_000).toUTCString(), now), 0)
  })
})

/** A clock whose time only moves when the test says so. */
function fakeClock(start = 0): Clock & { advance(ms: number): void; timers: number } {
  let now = start
  let timers: Array<{ at: number; fn: () => void; id: number }> = []
  let next = 1
  return {
    now: () => now,
    setTimeout(fn, ms) {
      const id = next++
      timers.push({ at: now + ms, fn, id })
      return id
    },
    clearTimeout(id) {
      timers = timers.filter((t) => t.id !== id)
    },
    advance(ms) {
      const target = now + ms
      for (;;) {
        timers.sort((a, b) => a.at - b.at)
        const t = timers[0]
        if (!t || t.at > target) break
        timers.shift()
        now = t.at
        t.fn()
      }
      now = target
    },
    get timers() {
      return timers.length
    },
  }
}

describe('scheduler', () => {
  test('one timer for many names, fired in order, rescheduling supersedes', () => {
    const clock = fakeClock()
    const fired: string[] = []
    const s = new Scheduler(clock, (n) => fired.push(n))
    for (let i = 0; i < 1000; i++) s.schedule(`n${i}`, 1000 + ((i * 7919) % 1000))
    assert.equal(clock.timers, 1, 'a single timer')
    s.schedule('n0', 5000)
    s.cancel('n1')
    clock.advance(2000)
    assert.equal(fired.length, 998)
    assert.ok(!fired.includes('n0') && !fired.includes('n1'))
    clock.advance(3000)
    assert.deepEqual(fired.slice(998), ['n0'])
    assert.equal(clock.timers, 0)
    s.stop()
  })
  test('waits longer than setTimeout allows are re-armed', () => {
    const clock = fakeClock()
    const fired: string[] = []
    const s = new Scheduler(clock, (n) => fired.push(n))
    s.schedule('far', 60 * DAY)
    clock.advance(30 * DAY)
    assert.deepEqual(fired, [])
    clock.advance(30 * DAY)
    assert.deepEqual(fired, ['far'])
  })
  test('stop clears every timer', () => {
    const clock = fakeClock()
    const s = new Scheduler(clock, () => assert.fail('fired after stop'))
    s.schedule('a', 10)
    s.stop()
    assert.equal(clock.timers, 0)
    clock.advance(100)
  })
})

describe('order limiter', () => {
  test('caps orders per window and says how long to wait', () => {
    const l = new OrderLimiter(3, 1000)
    assert.equal(l.take(0), 0)
    assert.equal(l.take(10), 0)
    assert.equal(l.take(20), 0)
    assert.equal(l.take(30), 970)
    assert.equal(l.take(1000), 0, 'the first slot freed')
    assert.equal(l.used, 3)
  })
})

describe('resolver', async () => {
  const { CertResolver } = await import('../src/resolver.js')
  const { makeTestCertificates } = await import('@autotls/pebble-harness')
  const a = await makeTestCertificates({ names: ['*.example.test', 'example.test'] })
  const b = await makeTestCertificates({ names: ['www.example.test'] })
  test('exact name, then one-label wildcard, then fallback; case and trailing dot ignored', () => {
    const r = new CertResolver()
    r.set('*.example.test', { key: a.key, cert: a.cert })
    r.set('www.example.test', { key: b.key, cert: b.cert })
    const wild = r.lookup('api.example.test')
    assert.ok(wild)
    assert.equal(r.lookup('API.Example.Test.'), wild)
    assert.notEqual(r.lookup('www.example.test'), wild)
    assert.equal(r.lookup('a.b.example.test'), undefined, 'a wildcard covers one label only')
    assert.equal(r.lookup('example.test'), undefined)
    r.setFallback({ key: b.key, cert: b.cert })
    assert.ok(r.lookup('other.test'))
  })
  test('setMany shares one context and refuses a bad pair without changing anything', () => {
    const r = new CertResolver()
    r.setMany(['example.test', '*.example.test'], { key: a.key, cert: a.cert })
    assert.equal(r.lookup('example.test'), r.lookup('x.example.test'))
    const before = r.lookup('example.test')
    assert.throws(() => r.setMany(['example.test', 'new.test'], { key: b.key, cert: a.cert }))
    assert.equal(r.lookup('example.test'), before)
    assert.equal(r.has('new.test'), false)
  })
})
