/**
 * Exponential backoff with full jitter (design.md): a uniform delay in
 * [0, min(cap, base * 2^attempt)). `attempt` counts from 0; full jitter spreads a crowd of
 * sessions dropped at once (a network blip) over the whole window instead of a storm.
 */
export function backoffMs(attempt: number, baseMs: number, capMs: number, random: () => number = Math.random): number {
	const ceiling = Math.min(capMs, baseMs * 2 ** Math.max(0, attempt))
	return Math.floor(random() * ceiling)
}
