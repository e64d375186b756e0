// ARI and renewal-policy maths, and the order budget kept in storage: pure logic and MemoryStorage, no network.
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { MemoryStorage } from '../src/index.js'
import {
  ARI_POLL_DEFAULT_MS,
  ARI_POLL_MAX_MS,
  ARI_POLL_MIN_MS,
  afterAnswer,
  afterFailure,
} from '../src/lifecycle/ari.js'
import { OrderBudget } from '../src/lifecycle/rate-limit.js'
import { EMERGENCY_FRACTION, renewalPolicy } from '../src/lifecycle/renewal-policy.js'
import { keys } from '../src/storage/index.js'

const HOUR = 3600_000
const DAY = 24 * HOUR

describe('ARI window and polls', () => {
  const info = (start: number, end: number, retryAfterMs?: number) => ({
    start,
    end,
    explanationURL: undefined,
    retryAfterMs,
  })

  test('the picked time is uniform in the window and kept while the window does not change', () => {
    const picks: number[] = []
    for (let i = 0; i < 1000; i++) {
      const s = afterAnswer(undefined, 'id', info(1000, 2000), 0, Math.random)
      assert.ok(s.selectedAt >= 1000 && s.selectedAt <= 2000)
      picks.push(s.selectedAt)
    }
    // Each tenth of the window gets a share near 10%.
    for (let d = 0; d < 10; d++) {
      const share = picks.filter((p) => p >= 1000 + d * 100 && p < 1100 + d * 100).length / picks.length
      assert.ok(share > 0.05 && share < 0.15, `decile ${d}: ${share}`)
    }
    const first = afterAnswer(undefined, 'id', info(1000, 2000), 0, () => 0.25)
    const same = afterAnswer(first, 'id', info(1000, 2000), 50, () => 0.9)
    assert.equal(same.selectedAt, first.selectedAt, 'same window: same pick')
    const moved = afterAnswer(first, 'id', info(3000, 4000), 50, () => 0.5)
    assert.equal(moved.selectedAt, 3500, 'new window: new pick')
    const otherCert = afterAnswer(first, 'other', info(1000, 2000), 50, () => 0.9)
    assert.equal(otherCert.selectedAt, 1900, 'another certificate: new pick')
  })

  test('next poll: Retry-After clamped to 1 min .. 1 day, 6 h without; errors back off or wait hours', () => {
    assert.equal(afterAnswer(undefined, 'id', info(0, 1, 5_000), 0, Math.random).nextPollAt, ARI_POLL_MIN_MS)
    assert.equal(afterAnswer(undefined, 'id', info(0, 1, 3 * DAY), 0, Math.random).nextPollAt, ARI_POLL_MAX_MS)
    assert.equal(afterAnswer(undefined, 'id', info(0, 1, 2 * HOUR), 0, Math.random).nextPollAt, 2 * HOUR)
    assert.equal(afterAnswer(undefined, 'id', info(0, 1), 0, Math.random).nextPollAt, ARI_POLL_DEFAULT_MS)
    // Temporary errors: 1 min, doubling, at most the default interval.
    assert.equal(
      afterFailure(1, false, undefined, 0, () => 0),
      ARI_POLL_MIN_MS,
    )
    assert.equal(
      afterFailure(2, false, undefined, 0, () => 0),
      2 * ARI_POLL_MIN_MS,
    )
    assert.equal(
      afterFailure(20, false, undefined, 0, () => 0),
      ARI_POLL_DEFAULT_MS,
    )
    // Long-term errors (unusable answers): the default interval; a Retry-After wins, clamped.
    assert.equal(
      afterFailure(1, true, undefined, 0, () => 0),
      ARI_POLL_DEFAULT_MS,
    )
    assert.equal(
      afterFailure(1, true, 10, 0, () => 0),
      ARI_POLL_MIN_MS,
    )
  })
})

describe('renewal policy', () => {
  const policy = renewalPolicy(1 / 3)
  const cert = (lifetime: number, ari?: { start: number; end: number; selectedAt: number }) => ({
    name: 'x',
    notBefore: 0,
    notAfter: lifetime,
    ari,
  })

  test('ratio rule: 1/3 left for 90 days, 1/2 left for certificates of 10 days or less', () => {
    const long = policy.renewAt(cert(90 * DAY), () => 0)
    assert.equal(long.source, 'ratio')
    assert.equal(long.at, 60 * DAY)
    const short = policy.renewAt(cert(160 * HOUR), () => 0)
    assert.equal(short.at, 80 * HOUR)
    assert.equal(policy.renewAt(cert(10 * DAY), () => 0).at, 5 * DAY)
  })

  test("the CA's window wins over the ratio, and nothing is later than 1/50 of the lifetime left", () => {
    const withAri = policy.renewAt(cert(90 * DAY, { start: 70 * DAY, end: 72 * DAY, selectedAt: 71 * DAY }), () => 0)
    assert.deepEqual(withAri, { at: 71 * DAY, source: 'ari' })
    const past = policy.renewAt(cert(90 * DAY, { start: -2, end: -1, selectedAt: -1 }), () => 0)
    assert.deepEqual(past, { at: -1, source: 'ari' }, 'a window in the past: renew now')
    const late = policy.renewAt(cert(90 * DAY, { start: 89 * DAY, end: 90 * DAY, selectedAt: 89.9 * DAY }), () => 0)
    assert.deepEqual(late, { at: 90 * DAY - 90 * DAY * EMERGENCY_FRACTION, source: 'emergency' })
  })
})

describe('order budget in storage', () => {
  test('a new instance on the same storage (a restart) continues the window instead of starting a new one', async () => {
    const storage = new MemoryStorage()
    const first = new OrderBudget(storage, 'dir', 3, 1000)
    assert.equal(await first.take(0), 0)
    assert.equal(await first.take(10), 0)
    const restarted = new OrderBudget(storage, 'dir', 3, 1000)
    assert.equal(await restarted.take(20), 0)
    assert.equal(await restarted.take(30), 970, 'the fourth order waits for the first to leave the window')
    assert.equal(await new OrderBudget(storage, 'dir', 3, 1000).take(1001), 0, 'the window slid')
  })

  test('a store that comes back empty does not hand out a new budget: the instance puts back what it knew', async () => {
    const storage = new MemoryStorage()
    const a = new OrderBudget(storage, 'dir', 3, 10_000)
    const b = new OrderBudget(storage, 'dir', 3, 10_000)
    assert.equal(await a.take(1_000), 0)
    assert.equal(await b.take(2_000), 0)
    assert.equal(await a.take(3_000), 0, "a's read saw b's order")
    const key = keys.orderBudget('dir')
    const before = JSON.parse(String(await storage.get(key))) as { orders: number[] }
    assert.deepEqual(before.orders, [1_000, 2_000, 3_000])
    await storage.delete(key) // the store restarted empty
    assert.equal(await a.take(4_000), 7_000, 'still three orders in the window: wait for the first to leave it')
    const after = JSON.parse(String(await storage.get(key))) as { orders: number[] }
    assert.deepEqual(after.orders, [1_000, 2_000, 3_000], 'put back for every instance sharing the store')
    assert.equal(await b.take(4_500), 6_500, 'the other instance reads the restored log')
    assert.equal(await a.take(11_000), 0, 'the window slid')
  })

  test('times are kept in numeric order (a sliding log of timestamps of different lengths)', async () => {
    const storage = new MemoryStorage()
    const budget = new OrderBudget(storage, 'dir', 2, 1_000_000)
    await storage.put(keys.orderBudget('dir'), JSON.stringify({ orders: [100_000, 99_999] }))
    assert.equal(await budget.take(100_500), 999_499, 'the oldest (99,999) leaves the window first')
  })
})
