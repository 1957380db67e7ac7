import type { Redis } from 'ioredis'
import type { EngineHeartbeat, EngineRuntimeConfig, HandshakeSlots } from './generated/contracts.js'
import type { Logger } from './log.js'
import { LoopLagMonitor } from './loop-lag.js'
import { waVersionInUse } from './upstream/version.js'

/** How many sessions the engine holds; the session manager provides it. */
export type SessionCount = () => number

/** The sessions the engine holds (name -> state) and its handshake slots, for the api. */
export interface Liveness {
	states(): EngineHeartbeat['session_states']
	handshakes(): HandshakeSlots
}

export interface HeartbeatOptions {
	redis: Redis
	key: string
	upstream: EngineRuntimeConfig['upstream']
	intervalMs: number
	ttlMs: number
	startedAt: Date
	sessions: SessionCount
	/** Per-session truth for the api (which sessions are held, in which state). */
	liveness?: Liveness
	log: Logger
}

/**
 * `SET <key> <EngineHeartbeat json> PX <ttl>` now and every interval (arq's record_health).
 * The key expiring is the signal: `/readyz` and the watchdog treat a missing key as a dead
 * engine. It is never deleted here, not even on shutdown; the TTL ends it.
 */
export class Heartbeat {
	private readonly lag = new LoopLagMonitor()
	private timer: NodeJS.Timeout | undefined
	private pending: Promise<void> = Promise.resolve()
	private stopped = false

	constructor(private readonly opts: HeartbeatOptions) {}

	/** Write the first heartbeat (awaited), then keep writing every interval. */
	async start(): Promise<void> {
		this.lag.start()
		await this.beat()
		this.schedule()
	}

	/** Stop the timer and wait for a write already on its way. */
	async stop(): Promise<void> {
		this.stopped = true
		clearTimeout(this.timer)
		this.lag.stop()
		await this.pending
	}

	snapshot(): EngineHeartbeat {
		const mem = process.memoryUsage()
		return {
			pid: process.pid,
			upstream: this.opts.upstream,
			started_at: this.opts.startedAt.toISOString(),
			uptime_s: Math.max(0, (Date.now() - this.opts.startedAt.getTime()) / 1000),
			rss_bytes: mem.rss,
			heap_used_bytes: mem.heapUsed,
			heap_total_bytes: mem.heapTotal,
			sessions: this.opts.sessions(),
			loop_lag_ms: this.lag.takeP99Ms(),
			node_version: process.version,
			at: new Date().toISOString(),
			session_states: this.opts.liveness?.states() ?? {},
			handshakes: this.opts.liveness?.handshakes() ?? null,
			wa_version: waVersionInUse(),
		}
	}

	// setTimeout after each write rather than setInterval: a slow Redis never stacks writes.
	private schedule(): void {
		if (this.stopped) return
		this.timer = setTimeout(() => {
			this.pending = this.beat().finally(() => this.schedule())
		}, this.opts.intervalMs)
	}

	private async beat(): Promise<void> {
		const value = this.snapshot()
		try {
			await this.opts.redis.set(this.opts.key, JSON.stringify(value), 'PX', this.opts.ttlMs)
			this.opts.log.debug({ heartbeat: value }, 'heartbeat written')
		} catch (err) {
			// Keep beating: a Redis blip must not stop the engine, and the key's TTL tells
			// the watchdog the truth in the meantime.
			this.opts.log.warn({ err: (err as Error).message }, 'heartbeat write failed')
		}
	}
}
