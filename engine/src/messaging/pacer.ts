/**
 * The anti-ban pacer of one session (design.md, "Anti-ban pacing"): a token bucket of
 * one send per interval drawn uniformly from [min, max], a daily cap that ramps up for
 * young numbers, and how long to show `composing` before a text.
 *
 * The pacer decides; it never sleeps and never holds work. A session's command stream is
 * read only when `readyAt()` has passed, so queued messages wait in Redis. Its state (last
 * send, sends today) is kept in Redis by `PacerStore` so a restart neither bursts nor
 * forgets the day's count.
 */
import type { SessionPacing } from '../sessions/types.js'

export interface PacerState {
	/** Epoch ms of the last send, 0 if none known. */
	lastSendAt: number
	/** UTC day (YYYY-MM-DD) the count belongs to. */
	day: string
	sentToday: number
}

export type Random = () => number

const DAY_MS = 86_400_000
/** Characters of text that earn the longest `composing` (a long message "takes" longer to type). */
const COMPOSING_FULL_AT_CHARS = 200

export function utcDay(at: number): string {
	return new Date(at).toISOString().slice(0, 10)
}

export class Pacer {
	private state: PacerState
	/** Epoch ms at which the next send may happen (drawn once per send, so it is stable). */
	private nextSendAt: number

	constructor(
		readonly pacing: SessionPacing,
		private readonly pairedAt: Date | undefined,
		state: PacerState | undefined,
		private readonly random: Random = Math.random,
	) {
		this.state = state ?? { lastSendAt: 0, day: '', sentToday: 0 }
		this.nextSendAt = this.state.lastSendAt === 0 ? 0 : this.state.lastSendAt + this.drawIntervalMs()
	}

	get enabled(): boolean {
		return this.pacing.enabled
	}

	snapshot(): PacerState {
		return { ...this.state }
	}

	/**
	 * The daily cap in effect on `now`: `daily_cap`, or for a number paired fewer than
	 * `warmup_days` ago a linear ramp from `warmup_daily_cap` (day 0) towards it.
	 */
	dailyCap(now: number): number {
		const { daily_cap, warmup_days, warmup_daily_cap } = this.pacing
		if (this.pairedAt === undefined || warmup_days <= 0) return daily_cap
		const ageDays = Math.floor((now - this.pairedAt.getTime()) / DAY_MS)
		if (ageDays >= warmup_days) return daily_cap
		const start = Math.min(warmup_daily_cap, daily_cap)
		return Math.floor(start + ((daily_cap - start) * Math.max(0, ageDays)) / warmup_days)
	}

	sentToday(now: number): number {
		return this.state.day === utcDay(now) ? this.state.sentToday : 0
	}

	/** True when today's cap is used up: nothing is read until the next UTC day. */
	capped(now: number): boolean {
		return this.pacing.enabled && this.sentToday(now) >= this.dailyCap(now)
	}

	/**
	 * Epoch ms from which the session may take its next command off the stream. With a
	 * lead of up to `composing_max_s` (never more than the interval), so a text's typing
	 * indicator fits inside the interval and sends land `interval` apart, not
	 * `interval + composing`. Infinity when capped for the day (the caller rechecks at
	 * midnight UTC).
	 */
	readyAt(now: number): number {
		if (!this.pacing.enabled) return 0
		if (this.capped(now)) return nextUtcMidnight(now)
		return this.nextSendAt - this.leadMs()
	}

	/** When the command in hand may actually be sent (after any composing): the token's time. */
	sendAt(): number {
		return this.pacing.enabled ? this.nextSendAt : 0
	}

	/** How long to show `composing` before this text: 1-3 s (by default), longer for longer text. */
	composingMs(text: string): number {
		const { composing_min_s: lo, composing_max_s: hi } = this.pacing
		if (!this.pacing.enabled || hi <= 0) return 0
		const share = Math.min(1, text.length / COMPOSING_FULL_AT_CHARS)
		// A little jitter so equal texts do not type for exactly equal times.
		const jitter = (this.random() - 0.5) * 0.2 * (hi - lo)
		return Math.round(Math.min(hi, Math.max(lo, lo + (hi - lo) * share + jitter)) * 1000)
	}

	/** Record a send at `at`: counts toward today's cap and draws the next interval. */
	recordSend(at: number): void {
		const day = utcDay(at)
		this.state = { lastSendAt: at, day, sentToday: (this.state.day === day ? this.state.sentToday : 0) + 1 }
		this.nextSendAt = this.pacing.enabled ? at + this.drawIntervalMs() : 0
	}

	private drawIntervalMs(): number {
		const { min_interval_s: lo, max_interval_s: hi } = this.pacing
		return Math.round((lo + (Math.max(hi, lo) - lo) * this.random()) * 1000)
	}

	private leadMs(): number {
		return Math.min(this.pacing.composing_max_s, this.pacing.min_interval_s) * 1000
	}
}

function nextUtcMidnight(now: number): number {
	return (Math.floor(now / DAY_MS) + 1) * DAY_MS
}
