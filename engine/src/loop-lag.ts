import { monitorEventLoopDelay } from 'node:perf_hooks'

const RESOLUTION_MS = 10

/**
 * Event-loop lag from perf_hooks. The histogram records the whole time between its timer's
 * ticks (so an idle loop reads ~RESOLUTION_MS); the lag is what exceeds the resolution.
 * A saturated loop misses WhatsApp keep-alives, so this number matters (the lag guard
 * pauses reading commands above a threshold; the heartbeat reports it).
 */
export class LoopLagMonitor {
	private readonly histogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS })

	start(): void {
		this.histogram.enable()
	}

	stop(): void {
		this.histogram.disable()
	}

	/**
	 * The p99 lag in ms since the previous call, then start a new window. p99 rather than
	 * the mean so short stalls are not averaged away, rather than the max so one GC pause
	 * does not dominate.
	 */
	takeP99Ms(): number {
		const h = this.histogram
		const lag = h.count === 0 ? 0 : Math.max(0, h.percentile(99) / 1e6 - RESOLUTION_MS)
		h.reset()
		return Math.round(lag * 1000) / 1000
	}
}
