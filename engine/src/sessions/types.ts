/**
 * The session manager's public face, for everything that works on sessions without
 * owning their lifecycle (messaging: per-session command streams, pacer, sends, received
 * messages, statuses). Stable once committed: extend additively only.
 *
 * Lifecycle (design.md): created -> connecting -> qr | pairing_code -> connected <->
 * reconnecting -> logged_out | failed | stopped. The manager owns sockets: it creates
 * them (one per connection attempt; a reconnect is a NEW socket), closes them, and
 * publishes `session.state` events. Others attach to each new socket through
 * `onSocket` and contribute socket config through `addSocketConfig`.
 */
import type { UserFacingSocketConfig, WASocket } from '@whiskeysockets/baileys'
import type { Redis } from 'ioredis'
import type { CommandDispatcher } from '../dispatcher.js'
import type { EventPublisher } from '../events.js'
import type { EngineRuntimeConfig, Me, SessionStartPayload, SessionStatePayload } from '../generated/contracts.js'
import type { Logger } from '../log.js'

export type SessionState = SessionStatePayload['state']
export type Upstream = EngineRuntimeConfig['upstream']

/**
 * Pacing in effect for one session: the engine-wide defaults (runtime config `pacing`)
 * with the session's `session_start` overrides applied. Numbers as in `[pacing]`.
 */
export interface SessionPacing {
	enabled: boolean
	min_interval_s: number
	max_interval_s: number
	daily_cap: number
	warmup_days: number
	warmup_daily_cap: number
	composing_min_s: number
	composing_max_s: number
}

export interface ManagedSession {
	readonly name: string
	readonly upstream: Upstream
	readonly state: SessionState
	/**
	 * The current socket while one exists (from `connecting` until it closes); undefined
	 * between attempts and once stopped. Only send on it when `state === 'connected'`.
	 */
	readonly sock: WASocket | undefined
	/** `root.child({ session })`; the same logger Baileys gets (at a quieter level). */
	readonly logger: Logger
	readonly pacing: SessionPacing
	/** When the number was paired (start payload, else the first pairing seen here). */
	readonly pairedAt: Date | undefined
	/** The account once known (after pairing or login). */
	readonly me: Me | undefined
	/** The `session_start` payload this session runs with. */
	readonly settings: SessionStartPayload
	/** Called every time the session reaches `connected` (after each (re)connect). */
	onOpen(cb: (session: ManagedSession) => void): Unsubscribe
	/** Called every time its socket closes (reconnects included), with the close code. */
	onClose(cb: (session: ManagedSession, code: number | undefined) => void): Unsubscribe
}

export type Unsubscribe = () => void

/**
 * Called synchronously with every socket the manager creates, right after
 * `makeWASocket`, before any event can fire: register `sock.ev` handlers here
 * (messages.upsert, messages.update, ...). The socket is dropped on close; handlers die
 * with it, nothing to unregister.
 */
export type SocketHook = (session: ManagedSession, sock: WASocket) => void

/**
 * Extra `makeWASocket` options for a session's next socket (e.g. `getMessage` from a
 * store of recent sends). Merged over the manager's gateway defaults; the manager's own
 * `auth`, `logger`, `waWebSocketUrl` and process-wide caches always win.
 */
export type SocketConfigContributor = (session: ManagedSession) => Partial<UserFacingSocketConfig>

export type RegistryEvent = 'open' | 'closed' | 'removed'

export interface SessionRegistry {
	get(name: string): ManagedSession | undefined
	/** Every session this engine holds, in any state (a `failed` one is still held). */
	list(): ManagedSession[]
	/**
	 * 'open': reached connected. 'closed': its socket closed (the code; reconnects too).
	 * 'removed': no longer held (stop, logout, logged out by WhatsApp, replaced): stop
	 * reading its command stream and forget its per-session state.
	 */
	on(event: 'open' | 'removed', listener: (session: ManagedSession) => void): Unsubscribe
	on(event: 'closed', listener: (session: ManagedSession, code: number | undefined) => void): Unsubscribe
	onSocket(hook: SocketHook): Unsubscribe
	addSocketConfig(contributor: SocketConfigContributor): Unsubscribe
}

/**
 * What the engine hands to a feature module (messaging) at start. The module registers
 * its control-stream handlers on `dispatcher` and its socket hooks on `registry` during
 * `start`, before any command is read and before any session is restored.
 */
export interface EngineContext {
	config: EngineRuntimeConfig
	/** The root logger; take `.child({ component })`. */
	log: Logger
	/** The shared non-blocking connection (XADD, XACK, SET, ...). Never block on it. */
	writer: Redis
	/** A new connection of your own, e.g. for blocking XREADGROUP; close it in stop(). */
	connectReader(name: string): Redis
	events: EventPublisher
	registry: SessionRegistry
	dispatcher: CommandDispatcher
	/** Unique per process (`<host>:<pid>:<random>`), for consumer groups. */
	consumerName: string
	/** False while the event loop lags past the threshold or the engine is stopping. */
	readingAllowed(): boolean
}

/**
 * A feature module. Messaging: `src/messaging/index.ts` exports
 * `createMessaging(): EngineModule`; main.ts passes it in `EngineOptions.modules`.
 */
export interface EngineModule {
	readonly name: string
	start(ctx: EngineContext): Promise<void>
	/**
	 * Shutdown, step 1 of 2: stop reading commands and let in-flight sends finish (the
	 * sockets are still open). The manager closes the sockets after this resolves.
	 */
	stop(): Promise<void>
}
