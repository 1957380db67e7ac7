/**
 * The session manager: every Baileys socket of this engine, started, stopped,
 * logged out and restarted on command, restored at start. The engine cannot read SQL, so
 * it keeps its own registry in Redis, `wapp:engine:{upstream}:sessions` (hash: session ->
 * its `session_start` payload as JSON), written on start and removed on stop and logout;
 * at start every entry is started again, at most `max_concurrent_handshakes` at once.
 */
import { randomUUID } from 'node:crypto'
import type { Redis } from 'ioredis'
import { EventEmitter } from 'node:events'
import { BudgetLru } from '../auth/lru.js'
import { MasterKeyring } from '../auth/crypto.js'
import { RedisAuthStore } from '../auth/redis-auth.js'
import { CommandRejection } from '../dispatcher.js'
import type { EventPublisher } from '../events.js'
import type { EngineRuntimeConfig, SessionStartPayload } from '../generated/contracts.js'
import { fillKey, redisKeyTemplates } from '../keys.js'
import type { Logger } from '../log.js'
import type { UpstreamTarget } from '../upstream/index.js'
import { Semaphore, type SlotStats } from './semaphore.js'
import { Session, type SessionHost } from './session.js'
import { cachePrefix, socketCaches } from './socket-caches.js'
import { StatePublisher } from './state-events.js'
import type { ManagedSession, SessionPacing, SessionRegistry, SessionState, SocketConfigContributor, SocketHook, Unsubscribe } from './types.js'

const MB = 1024 * 1024

export interface ManagerOptions {
	config: EngineRuntimeConfig
	/** The engine's writer connection (never blocked). */
	redis: Redis
	events: EventPublisher
	/** The root logger. */
	log: Logger
	upstream: UpstreamTarget
}

export class SessionManager implements SessionRegistry {
	private readonly sessions = new Map<string, Session>()
	private readonly emitter = new EventEmitter()
	private readonly hooks = new Set<SocketHook>()
	private readonly contributors = new Set<SocketConfigContributor>()
	private readonly masterKey: MasterKeyring
	private readonly lru: BudgetLru
	private readonly handshakeSlots: Semaphore
	private readonly publisher: StatePublisher
	private readonly log: Logger
	private readonly registryKey: string
	private shuttingDown = false

	/** Throws MasterKeyError when the master key file is unusable (a configuration error). */
	constructor(private readonly o: ManagerOptions) {
		this.masterKey = new MasterKeyring(o.config.master_key_file)
		this.lru = new BudgetLru(o.config.sessions.cache_budget_mb * MB)
		this.handshakeSlots = new Semaphore(o.config.sessions.max_concurrent_handshakes)
		this.log = o.log.child({ component: 'sessions' })
		this.publisher = new StatePublisher(o.events, this.log)
		this.registryKey = fillKey(redisKeyTemplates.engine_sessions_key, { upstream: o.config.upstream })
		this.emitter.setMaxListeners(0)
	}

	get count(): number {
		return this.sessions.size
	}

	/** Bytes held by the shared caches (signal keys, devices, retries, groups). */
	get cacheBytes(): number {
		return this.lru.bytes
	}

	/** Every session held, with its state (the heartbeat's `session_states`). */
	states(): Record<string, SessionState> {
		const states: Record<string, SessionState> = {}
		for (const [name, session] of this.sessions) states[name] = session.state
		return states
	}

	/** The handshake slots: held, waited for, and for how long (the heartbeat's `handshakes`). */
	handshakes(): SlotStats {
		return this.handshakeSlots.stats()
	}

	get(name: string): ManagedSession | undefined {
		return this.sessions.get(name)
	}

	list(): ManagedSession[] {
		return [...this.sessions.values()]
	}

	on(event: 'open' | 'removed', listener: (session: ManagedSession) => void): Unsubscribe
	on(event: 'closed', listener: (session: ManagedSession, code: number | undefined) => void): Unsubscribe
	on(event: 'open' | 'closed' | 'removed', listener: (session: ManagedSession, code?: number) => void): Unsubscribe {
		this.emitter.on(event, listener)
		return () => void this.emitter.off(event, listener)
	}

	onSocket(hook: SocketHook): Unsubscribe {
		this.hooks.add(hook)
		return () => void this.hooks.delete(hook)
	}

	addSocketConfig(contributor: SocketConfigContributor): Unsubscribe {
		this.contributors.add(contributor)
		return () => void this.contributors.delete(contributor)
	}

	/** `session_start`: create and connect, or (already running) take the new settings. */
	async start(name: string, settings: SessionStartPayload, traceId?: string): Promise<void> {
		if (this.shuttingDown) throw new Error('the engine is shutting down')
		if (settings.upstream !== this.o.config.upstream) {
			throw new CommandRejection('INVALID_COMMAND', `session ${name} is for upstream ${settings.upstream}, this engine serves ${this.o.config.upstream}`)
		}
		await this.o.redis.hset(this.registryKey, name, JSON.stringify(settings))
		const existing = this.sessions.get(name)
		if (existing !== undefined) {
			const before = existing.settings
			existing.traceId = traceId
			existing.settings = settings
			Object.assign(existing.pacing, this.pacingFor(settings))
			if (existing.state === 'failed' || existing.state === 'stopped') {
				await existing.setState({ state: 'created' })
				existing.start()
			} else if (existing.state !== 'connected' && (before.pairing !== settings.pairing || before.phone !== settings.phone)) {
				// Not paired yet and asked to pair another way (the api's "pairing code"
				// request for a session showing QRs): a fresh socket, paired the new way.
				this.log.info({ session: name, pairing: settings.pairing }, 'session_start changes how an unpaired session pairs: reconnecting')
				await existing.restart()
			} else {
				this.log.info({ session: name, state: existing.state }, 'session_start for a running session: settings updated')
			}
			return
		}
		const session = new Session(name, settings, this.pacingFor(settings), this.o.log.child({ component: 'session', session: name }), this.host(name))
		session.traceId = traceId
		this.sessions.set(name, session)
		await session.setState({ state: 'created' })
		session.start()
	}

	/** `session_stop`: close the socket (no logout), keep the auth, forget the session. */
	async stop(name: string, traceId?: string): Promise<void> {
		const session = this.held(name)
		session.traceId = traceId
		await session.halt()
		await session.closeAuth()
		// Unregistered before the event goes out: whoever reads the event sees it done.
		await this.remove(session)
		await session.setState({ state: 'stopped', reason: 'stop requested' })
	}

	/** `session_logout`: log out at WhatsApp, delete the auth state, forget the session. */
	async logout(name: string, traceId?: string): Promise<void> {
		const session = this.sessions.get(name)
		if (session === undefined) return this.logoutStored(name, traceId)
		session.traceId = traceId
		await session.logout()
		await this.remove(session)
		await session.setState({ state: 'logged_out', reason: 'logout requested' })
	}

	/** `session_restart`: a new socket now, the failure count reset (also revives `failed`). */
	async restart(name: string, traceId?: string): Promise<void> {
		const session = this.held(name)
		session.traceId = traceId
		await session.restart()
	}

	/** Start every session of the registry; the handshake semaphore staggers them. */
	async restore(): Promise<number> {
		const entries = await this.o.redis.hgetall(this.registryKey)
		let restored = 0
		for (const [name, json] of Object.entries(entries)) {
			if (this.sessions.has(name)) continue
			try {
				// One trace id per restored session, so its events read as one story.
				await this.start(name, JSON.parse(json) as SessionStartPayload, randomUUID())
				restored++
			} catch (err) {
				this.log.error({ session: name, err: (err as Error).message }, 'restoring a session failed')
			}
		}
		this.log.info({ restored, registry: this.registryKey }, 'sessions restored')
		return restored
	}

	/** Shutdown: close every socket WITHOUT logging out and flush the auth writes. */
	async shutdown(): Promise<void> {
		this.shuttingDown = true
		await Promise.all(
			[...this.sessions.values()].map(s => s.halt().catch(err => this.log.error({ session: s.name, err: (err as Error).message }, 'closing a session at shutdown failed'))),
		)
		await Promise.all([...this.sessions.values()].map(s => s.closeAuth().catch(err => this.log.error({ session: s.name, err: (err as Error).message }, 'flushing auth state at shutdown failed'))))
	}

	private held(name: string): Session {
		const session = this.sessions.get(name)
		if (session === undefined) throw new CommandRejection('UNKNOWN_SESSION', `this ${this.o.config.upstream} engine holds no session ${name}`)
		return session
	}

	/** Logout of a session not running here: its stored auth is all there is to delete. */
	private async logoutStored(name: string, traceId?: string): Promise<void> {
		const key = this.authKey(name)
		if ((await this.o.redis.exists(key)) === 0) this.held(name)
		await this.o.redis.multi().del(key).hdel(this.registryKey, name).exec()
		this.lru.deletePrefix(`${key}\0`)
		await this.publisher.publish(name, traceId, { state: 'logged_out', reason: 'logout requested; the session was not running, its stored auth state was deleted' })
	}

	private async remove(session: Session): Promise<void> {
		if (this.sessions.get(session.name) !== session) return
		this.sessions.delete(session.name)
		await this.o.redis.hdel(this.registryKey, session.name)
		this.lru.deletePrefix(cachePrefix(session.name))
		this.lru.deletePrefix(`${this.authKey(session.name)}\0`)
		this.emitter.emit('removed', session)
	}

	private authKey(name: string): string {
		return fillKey(redisKeyTemplates.auth_key, { session: name })
	}

	private pacingFor(settings: SessionStartPayload): SessionPacing {
		const o = settings.pacing
		const d = this.o.config.pacing
		return {
			...d,
			enabled: o?.enabled ?? d.enabled,
			min_interval_s: o?.min_interval_s ?? d.min_interval_s,
			max_interval_s: o?.max_interval_s ?? d.max_interval_s,
			daily_cap: o?.daily_cap ?? d.daily_cap,
		}
	}

	private host(name: string): SessionHost {
		const level = this.o.config.log_level === 'debug' ? 'info' : 'warn'
		return {
			tuning: this.o.config.sessions,
			upstream: this.o.upstream,
			handshakes: this.handshakeSlots,
			// Baileys is chatty: its info lines only when the engine itself is at debug.
			baileysLog: this.o.log.child({ component: 'baileys', session: name }, { level }),
			openAuth: () => RedisAuthStore.open({ redis: this.o.redis, key: this.authKey(name), masterKey: this.masterKey, cache: this.lru, log: this.log.child({ session: name }) }),
			caches: socketCaches(this.lru, name),
			socketHooks: () => this.hooks,
			contributedConfig: session => [...this.contributors].map(c => c(session)),
			publish: (session, update) => this.publisher.publish(session.name, session.traceId, update).then(() => undefined),
			ended: session => this.remove(session).catch(err => this.log.error({ session: name, err: (err as Error).message }, 'removing an ended session failed')),
			paired: session => {
				const settings = { ...session.settings, paired_at: session.pairedAt?.toISOString() ?? null }
				session.settings = settings
				void this.o.redis.hset(this.registryKey, name, JSON.stringify(settings)).catch(() => undefined)
			},
			opened: session => this.emitter.emit('open', session),
			closed: (session, code) => this.emitter.emit('closed', session, code),
		}
	}
}
