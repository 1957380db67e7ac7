/** What the heartbeat reports about the handshake slots (ages in seconds, 0 when none). */
export interface SlotStats {
	limit: number
	/** Slots held now (handshakes in progress). */
	active: number
	/** Attempts queued for a slot. */
	waiting: number
	/** How long the oldest holder has held its slot. */
	oldest_active_s: number
	/** How long the oldest waiter has waited for a slot. */
	oldest_waiting_s: number
}

/**
 * At most `limit` holders at once (the handshakes); the rest wait in FIFO order.
 *
 * Every holder and waiter is timestamped, so a slot that is never given back shows up in
 * `stats()` (and from there in the heartbeat and `/readyz`) instead of freezing every
 * later handshake in silence.
 */
export class Semaphore {
	/** Holders by token, with the time each got its slot. */
	private readonly holders = new Map<symbol, number>()
	private readonly waiting: { token: symbol; since: number; grant: () => void }[] = []

	constructor(
		readonly limit: number,
		private readonly now: () => number = Date.now,
	) {}

	get inUse(): number {
		return this.holders.size
	}

	get queued(): number {
		return this.waiting.length
	}

	/** Resolves with a release function; calling it more than once is harmless. */
	async acquire(): Promise<() => void> {
		const token = Symbol('slot')
		if (this.holders.size < this.limit && this.waiting.length === 0) this.holders.set(token, this.now())
		else await new Promise<void>(grant => this.waiting.push({ token, since: this.now(), grant }))
		return () => {
			if (!this.holders.delete(token)) return
			// The freed slot goes straight to the next waiter, synchronously: nobody who
			// calls acquire() in between can take it past the FIFO order or the limit.
			const next = this.waiting.shift()
			if (next === undefined) return
			this.holders.set(next.token, this.now())
			next.grant()
		}
	}

	stats(): SlotStats {
		const now = this.now()
		let oldestHeld = now
		for (const since of this.holders.values()) oldestHeld = Math.min(oldestHeld, since)
		const oldestWaiting = this.waiting[0]?.since ?? now
		return {
			limit: this.limit,
			active: this.holders.size,
			waiting: this.waiting.length,
			oldest_active_s: (now - oldestHeld) / 1000,
			oldest_waiting_s: (now - oldestWaiting) / 1000,
		}
	}
}
