/**
 * One least-recently-used map with a byte budget, shared by every socket of the process
 * (design.md, Memory): memory grows with traffic, not with the number of sessions.
 * Entries may carry a TTL, checked lazily on read: no timer per entry (Baileys' own
 * per-entry LRU timers were the largest retained item per socket in the benchmark).
 */
interface Entry {
	value: unknown
	size: number
	expiresAt: number
}

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
	private readonly map = new Map<string, Entry>()
	private total = 0

	constructor(readonly budgetBytes: number) {}

	get bytes(): number {
		return this.total
	}

	get size(): number {
		return this.map.size
	}

	get(key: string): unknown {
		const entry = this.map.get(key)
		if (entry === undefined) return undefined
		if (entry.expiresAt !== 0 && entry.expiresAt <= Date.now()) {
			this.delete(key)
			return undefined
		}
		// Re-insert: Map iteration order is insertion order, so the oldest is first.
		this.map.delete(key)
		this.map.set(key, entry)
		return entry.value
	}

	has(key: string): boolean {
		return this.get(key) !== undefined
	}

	set(key: string, value: unknown, ttlMs = 0, size = roughSize(value)): void {
		this.delete(key)
		const entry = { value, size: size + ENTRY_OVERHEAD + 2 * key.length, expiresAt: ttlMs > 0 ? Date.now() + ttlMs : 0 }
		// An entry bigger than the whole budget would evict everything and then itself.
		if (entry.size > this.budgetBytes) return
		this.map.set(key, entry)
		this.total += entry.size
		for (const [oldest, e] of this.map) {
			if (this.total <= this.budgetBytes) break
			this.map.delete(oldest)
			this.total -= e.size
		}
	}

	delete(key: string): boolean {
		const entry = this.map.get(key)
		if (entry === undefined) return false
		this.map.delete(key)
		this.total -= entry.size
		return true
	}

	/** Forget every key starting with `prefix` (a session going away); O(entries). */
	deletePrefix(prefix: string): number {
		let n = 0
		for (const key of [...this.map.keys()]) {
			if (key.startsWith(prefix) && this.delete(key)) n++
		}
		return n
	}
}
