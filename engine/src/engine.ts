import { randomUUID } from 'node:crypto'
import { hostname } from 'node:os'
import type { Redis } from 'ioredis'
import { registerBallast } from './ballast.js'
import { CommandParser } from './command-parser.js'
import { CommandConsumer, type ConsumerOptions } from './consumer.js'
import { CommandDispatcher } from './dispatcher.js'
import { EventPublisher } from './events.js'
import type { EngineRuntimeConfig } from './generated/contracts.js'
import { Heartbeat } from './heartbeat.js'
import { engineKeys } from './keys.js'
import { LagGuard } from './lag-guard.js'
import type { Logger } from './log.js'
import { closeRedis, connectRedis } from './redis.js'
import { registerLifecycleHandlers } from './sessions/handlers.js'
import { SessionManager } from './sessions/manager.js'
import type { EngineContext, EngineModule } from './sessions/types.js'
import { setupUpstream } from './upstream/index.js'

export interface EngineOptions {
	config: EngineRuntimeConfig
	/** The root logger; each part takes its own `.child({ component })`. */
	log: Logger
	startedAt?: Date
	/** Feature modules (messaging), started after the session manager, stopped before it. */
	modules?: EngineModule[]
	/** Consumer tuning for tests; production uses the consumer's defaults. */
	consumer?: Pick<ConsumerOptions, 'blockMs' | 'batch' | 'claimIdleMs' | 'claimEveryMs'>
}

/**
 * The engine process's parts, wired once: two Redis connections, the heartbeat, the
 * session manager with its lifecycle handlers, the feature modules, the control-stream
 * consumer and the lag guard every command reader consults. main.ts owns the process
 * (config, signals, exit codes); this owns start and stop order.
 *
 * Start: upstream trust, manager (master key), heartbeat, modules, consumer, then the
 * sessions of the registry. Stop: no new commands (guard, consumer), modules
 * finish their in-flight sends, sockets closed WITHOUT logging out, auth writes flushed,
 * heartbeat stopped, Redis closed.
 */
export class Engine {
	readonly dispatcher = new CommandDispatcher()
	/** Unique per process: `<host>:<pid>:<random>`; a restarted engine is a new consumer. */
	readonly consumerName = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`
	private readonly keys
	private reader: Redis | undefined
	private writer: Redis | undefined
	private heartbeat: Heartbeat | undefined
	private consumer: CommandConsumer | undefined
	private lagGuard: LagGuard | undefined
	private manager: SessionManager | undefined
	private readonly modulesStarted: EngineModule[] = []
	private starting: Promise<void> | undefined
	private stopping: Promise<void> | undefined
	private started = false
	// Rejects when stop() comes during start(): ioredis never settles a command queued while
	// it waits to reconnect if the connection is then disconnected, so start cannot rely on
	// its Redis calls failing; each start step races this instead.
	private abortStart: (reason: Error) => void = () => undefined
	private readonly startAborted = new Promise<never>((_, reject) => {
		this.abortStart = reject
	})

	constructor(private readonly opts: EngineOptions) {
		this.keys = engineKeys(opts.config.upstream)
		this.startAborted.catch(() => undefined) // only ever observed through step()
	}

	/** The session registry, once started (tests, diagnostics). */
	get sessions(): SessionManager | undefined {
		return this.manager
	}

	get isStopping(): boolean {
		return this.stopping !== undefined
	}

	start(): Promise<void> {
		this.starting ??= this.doStart()
		return this.starting
	}

	/** Idempotent; safe at any point of start. */
	stop(): Promise<void> {
		this.stopping ??= this.doStop()
		return this.stopping
	}

	private async doStart(): Promise<void> {
		const { config, log } = this.opts
		const name = `wapp-engine:${config.upstream}`
		this.writer = connectRedis(config.redis_url, 'writer', name, log.child({ component: 'redis' }))
		this.reader = connectRedis(config.redis_url, 'reader', name, log.child({ component: 'redis' }))

		const upstream = setupUpstream(config, log.child({ component: 'upstream' }))
		const events = new EventPublisher(this.writer, this.keys.eventStream)
		const manager = new SessionManager({ config, redis: this.writer, events, log, upstream })
		this.manager = manager
		const lagGuard = new LagGuard({ pauseAboveMs: config.sessions.loop_lag_pause_ms, log: log.child({ component: 'engine' }) })
		this.lagGuard = lagGuard
		lagGuard.start()

		this.heartbeat = new Heartbeat({
			redis: this.writer,
			key: this.keys.heartbeat,
			upstream: config.upstream,
			intervalMs: Math.round(config.heartbeat_interval_s * 1000),
			ttlMs: Math.round(config.heartbeat_ttl_s * 1000),
			startedAt: this.opts.startedAt ?? new Date(),
			sessions: () => manager.count,
			liveness: manager,
			log: log.child({ component: 'heartbeat' }),
		})
		await this.step(this.heartbeat.start())

		registerLifecycleHandlers(this.dispatcher, manager)
		registerBallast(this.dispatcher, config, log.child({ component: 'ballast' }))
		const ctx: EngineContext = {
			config,
			log,
			writer: this.writer,
			connectReader: role => connectRedis(config.redis_url, 'reader', `${name}:${role}`, log.child({ component: 'redis' })),
			events,
			registry: manager,
			dispatcher: this.dispatcher,
			consumerName: this.consumerName,
			readingAllowed: () => lagGuard.readingAllowed(),
		}
		for (const module of this.opts.modules ?? []) {
			await this.step(module.start(ctx))
			this.modulesStarted.push(module)
		}

		this.consumer = new CommandConsumer({
			...this.opts.consumer,
			reader: this.reader,
			writer: this.writer,
			stream: this.keys.commandStream,
			group: this.keys.consumerGroup,
			consumer: this.consumerName,
			parser: new CommandParser(),
			dispatcher: this.dispatcher,
			events,
			log: log.child({ component: 'commands' }),
			readingAllowed: () => lagGuard.readingAllowed(),
		})
		await this.step(this.consumer.start())
		this.started = true
		log.child({ component: 'engine' }).info({ stream: this.keys.commandStream, group: this.keys.consumerGroup, consumer: this.consumerName, heartbeat_key: this.keys.heartbeat }, 'engine started')
		await this.step(manager.restore())
	}

	private step<T>(work: Promise<T>): Promise<T> {
		return Promise.race([work, this.startAborted])
	}

	private async doStop(): Promise<void> {
		// A start still waiting on Redis is cut short: nothing of it needs finishing.
		if (!this.started) {
			this.abortStart(new Error('stopped during start'))
			this.reader?.disconnect()
			this.writer?.disconnect()
		}
		this.lagGuard?.stop()
		await this.starting?.catch(() => undefined)
		await this.consumer?.stop()
		for (const module of this.modulesStarted.reverse()) {
			await module.stop().catch((err: Error) => this.opts.log.error({ module: module.name, err: err.message }, 'stopping a module failed'))
		}
		await this.manager?.shutdown()
		await this.heartbeat?.stop()
		if (this.writer) await closeRedis(this.writer)
		this.reader?.disconnect()
	}
}
