import { LRUCache } from 'lru-cache'

/**
 * One least-recently-used map with a byte budget, shared by every socket of the process
 * (design.md, Memory): memory grows with traffic, not with the number of sessions.
 * `lru-cache` (already Baileys' own dependency) with `maxSize` as the budget and each
 * entry's size given at `set`. Entries may carry a TTL, checked lazily on read: no timer
 * per entry (Baileys' own per-entry LRU timers were the largest retained item per socket
 * in the benchmark), and none for the clock either (`ttlResolution: 0`).
 */
/** Rough bytes an entry holds; exactness does not matter, proportionality does. */
export function roughSize(value: unknown): number {
	if (value === null || value === undefined) return 8
	if (typeof value === 'number' || typeof value === 'boolean') return 8
	if (typeof value === 'string') return 2 * value.length
	if (value instanceof Uint8Array) return value.byteLength
	if (Array.isArray(value)) return value.reduce((n: number, v) => n + roughSize(v), 16)
	if (typeof value === 'object') {
		let n = 32
		for (const [k, v] of Object.entries(value)) n += 2 * k.length + roughSize(v)
		return n
	}
	return 16
}

const ENTRY_OVERHEAD = 96

export class BudgetLru {
	// lru-cache takes no null or undefined values; a miss is undefined either way.
	private readonly cache: LRUCache<string, NonNullable<unknown>>

	constructor(readonly budgetBytes: number) {
		// An entry bigger than the whole budget is not stored (maxEntrySize = maxSize):
		// it would evict everything and then itself.
		this.cache = new LRUCache({ maxSize: budgetBytes, ttlResolution: 0 })
	}

	get bytes(): number {
		return this.cache.calculatedSize
	}

	get size(): number {
		return this.cache.size
	}

	get(key: string): unknown {
		return this.cache.get(key)
	}

	has(key: string): boolean {
		return this.get(key) !== undefined
	}

	set(key: string, value: unknown, ttlMs = 0, size = roughSize(value)): void {
		if (value === undefined || value === null) {
			this.cache.delete(key)
			return
		}
		this.cache.set(key, value, { ttl: ttlMs > 0 ? ttlMs : undefined, size: Math.ceil(size) + ENTRY_OVERHEAD + 2 * key.length })
	}

	delete(key: string): boolean {
		return this.cache.delete(key)
	}

	/** Forget every key starting with `prefix` (a session going away); O(entries). */
	deletePrefix(prefix: string): number {
		let n = 0
		for (const key of [...this.cache.keys()]) {
			if (key.startsWith(prefix) && this.cache.delete(key)) n++
		}
		return n
	}
}
