// A counting semaphore: at most `size` orders run at once; the others wait in arrival order.
export class Slots {
  #free: number
  readonly #queue: Array<() => void> = []

  constructor(size: number) {
    this.#free = size
  }

  async acquire(): Promise<void> {
    if (this.#free > 0) {
      this.#free--
      return
    }
    await new Promise<void>((resolve) => this.#queue.push(resolve))
  }

  release(): void {
    const next = this.#queue.shift()
    if (next) next()
    else this.#free++
  }
}
