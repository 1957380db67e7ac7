import { monitorEventLoopDelay } from 'node:perf_hooks'
import type { Logger } from './log.js'

const RESOLUTION_MS = 10

export interface LagGuardOptions {
	/** Pause reading above this p99 lag (ms) over one window. */
	pauseAboveMs: number
	/** Resume once a window's p99 lag is below this; half the threshold by default (hysteresis). */
	resumeBelowMs?: number
	windowMs?: number
	/** Consecutive calm windows before reading resumes, so one quiet window after a stall is not taken for recovery. */
	calmWindows?: number
	log: Logger
}

/**
 * The event-loop-lag guard. A saturated loop misses WhatsApp keep-alives and
 * drops sockets (408), so above a threshold the engine stops taking new work: every
 * command reader consults `readingAllowed()` before its next read. Work already in hand
 * goes on; queued commands wait in Redis, where they are safe.
 */
export class LagGuard {
	private readonly histogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS })
	private timer: NodeJS.Timeout | undefined
	private paused = false
	private stopped = false
	private lastLagMs = 0
	private calm = 0

	constructor(private readonly o: LagGuardOptions) {}

	start(): void {
		this.histogram.enable()
		this.timer = setInterval(() => this.sample(), this.o.windowMs ?? 1000)
		this.timer.unref()
	}

	/** Shutdown: reading is over for good. */
	stop(): void {
		this.stopped = true
		clearInterval(this.timer)
		this.histogram.disable()
	}

	readingAllowed(): boolean {
		return !this.paused && !this.stopped
	}

	get lagMs(): number {
		return this.lastLagMs
	}

	private sample(): void {
		const h = this.histogram
		const lag = h.count === 0 ? 0 : Math.max(0, h.percentile(99) / 1e6 - RESOLUTION_MS)
		h.reset()
		this.lastLagMs = lag
		const resumeBelow = this.o.resumeBelowMs ?? this.o.pauseAboveMs / 2
		if (!this.paused && lag > this.o.pauseAboveMs) {
			this.paused = true
			this.o.log.warn({ loop_lag_ms: Math.round(lag), threshold_ms: this.o.pauseAboveMs }, 'event loop lagging: reading new commands paused')
		} else if (this.paused) {
			this.calm = lag < resumeBelow ? this.calm + 1 : 0
			if (this.calm < (this.o.calmWindows ?? 2)) return
			this.calm = 0
			this.paused = false
			this.o.log.info({ loop_lag_ms: Math.round(lag) }, 'event loop recovered: reading commands again')
		}
	}
}
