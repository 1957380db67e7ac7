/** At most `limit` holders at once; the rest wait in FIFO order (handshakes, item 1). */
export class Semaphore {
	private active = 0
	private readonly waiting: (() => void)[] = []

	constructor(readonly limit: number) {}

	get inUse(): number {
		return this.active
	}

	/** Resolves with a release function; calling it more than once is harmless. */
	async acquire(): Promise<() => void> {
		if (this.active >= this.limit) await new Promise<void>(resolve => this.waiting.push(resolve))
		else this.active++
		let released = false
		return () => {
			if (released) return
			released = true
			const next = this.waiting.shift()
			// Hand the slot straight to the next waiter: `active` stays the same.
			if (next) next()
			else this.active--
		}
	}
}
