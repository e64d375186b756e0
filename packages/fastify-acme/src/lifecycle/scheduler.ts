// One timer for all names: a min-heap of (due time, name) and a single unref()ed timeout armed for the earliest
// entry, so thousands of managed names cost one timer, not one each. Rescheduling a name supersedes its old entry
// (lazy deletion by generation number).
import type { Clock } from '../options.js'

interface Item {
  at: number
  name: string
  gen: number
}

/** setTimeout's limit; longer waits are re-armed in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1

export class Scheduler {
  readonly #heap: Item[] = []
  readonly #current = new Map<string, Item>()
  readonly #clock: Clock
  readonly #fire: (name: string) => void
  #timer: unknown
  #timerAt = Number.POSITIVE_INFINITY
  #gen = 0
  #stopped = false

  constructor(clock: Clock, fire: (name: string) => void) {
    this.#clock = clock
    this.#fire = fire
  }

  /** Schedules (or reschedules) `name` at time `at` (ms since epoch). */
  schedule(name: string, at: number): void {
    if (this.#stopped) return
    const item = { at, name, gen: ++this.#gen }
    this.#current.set(name, item)
    this.#push(item)
    if (at < this.#timerAt) this.#arm()
  }

  cancel(name: string): void {
    this.#current.delete(name)
  }

  /** The pending due time of `name`, if any. */
  dueAt(name: string): number | undefined {
    return this.#current.get(name)?.at
  }

  get size(): number {
    return this.#current.size
  }

  stop(): void {
    this.#stopped = true
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer)
    this.#timer = undefined
    this.#current.clear()
    this.#heap.length = 0
  }

  #arm(): void {
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer)
    this.#timer = undefined
    this.#timerAt = Number.POSITIVE_INFINITY
    this.#dropStale()
    const top = this.#heap[0]
    if (top === undefined || this.#stopped) return
    const delay = Math.min(MAX_TIMER_MS, Math.max(0, top.at - this.#clock.now()))
    this.#timerAt = top.at
    const handle = this.#clock.setTimeout(() => this.#run(), delay)
    ;(handle as { unref?: () => unknown })?.unref?.()
    this.#timer = handle
  }

  #run(): void {
    this.#timer = undefined
    this.#timerAt = Number.POSITIVE_INFINITY
    const now = this.#clock.now()
    const due: string[] = []
    for (;;) {
      this.#dropStale()
      const top = this.#heap[0]
      if (top === undefined || top.at > now) break
      this.#pop()
      this.#current.delete(top.name)
      due.push(top.name)
    }
    this.#arm()
    for (const name of due) this.#fire(name)
  }

  #dropStale(): void {
    for (;;) {
      const top = this.#heap[0]
      if (top === undefined || this.#current.get(top.name) === top) return
      this.#pop()
    }
  }

  #push(item: Item): void {
    const h = this.#heap
    h.push(item)
    let i = h.length - 1
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (h[parent]!.at <= h[i]!.at) break
      ;[h[parent], h[i]] = [h[i]!, h[parent]!]
      i = parent
    }
  }

  #pop(): void {
    const h = this.#heap
    const last = h.pop()
    if (h.length === 0 || last === undefined) return
    h[0] = last
    let i = 0
    for (;;) {
      const l = 2 * i + 1
      const r = l + 1
      let m = i
      if (l < h.length && h[l]!.at < h[m]!.at) m = l
      if (r < h.length && h[r]!.at < h[m]!.at) m = r
      if (m === i) break
      ;[h[m], h[i]] = [h[i]!, h[m]!]
      i = m
    }
  }
}
