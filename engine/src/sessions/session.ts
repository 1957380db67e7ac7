/**
 * One managed session: its auth store, its current Baileys socket, and the state machine
 * of design.md. A reconnect is a new socket on the same auth store.
 *
 * Close codes (DisconnectReason): 401 logged out -> auth cleared, `logged_out`, no
 * reconnect; 440 replaced -> `stopped`, no reconnect (two holders of one device would
 * kick each other forever); 515 restart required (after pairing) -> reconnect at once;
 * 403 forbidden -> `failed`; anything else -> `reconnecting` after a full-jitter backoff,
 * and `failed` after `reconnect_max_attempts` consecutive attempts that never opened.
 */
import makeWASocket, { DisconnectReason, jidNormalizedUser, type ConnectionState, type UserFacingSocketConfig, type WASocket } from '@whiskeysockets/baileys'
import type { Boom } from '@hapi/boom'
import type { EngineSessions, Me, SessionStartPayload } from '../generated/contracts.js'
import type { Logger } from '../log.js'
import type { RedisAuthStore } from '../auth/redis-auth.js'
import type { UpstreamTarget } from '../upstream/index.js'
import { backoffMs } from './backoff.js'
import type { Semaphore } from './semaphore.js'
import type { SocketCaches } from './socket-caches.js'
import { buildSocketConfig } from './socket-config.js'
import type { StateUpdate } from './state-events.js'
import type { ManagedSession, SessionPacing, SessionState, SocketHook, Unsubscribe } from './types.js'

/** What a session needs from its manager. */
export interface SessionHost {
	tuning: EngineSessions
	upstream: UpstreamTarget
	handshakes: Semaphore
	baileysLog: Logger
	openAuth(): Promise<RedisAuthStore>
	caches: SocketCaches
	socketHooks(): Iterable<SocketHook>
	contributedConfig(session: ManagedSession): Partial<UserFacingSocketConfig>[]
	publish(session: Session, update: StateUpdate): Promise<void>
	/** The session reached a state it does not leave by itself (`logged_out`, replaced):
	 * unregister it. Called BEFORE that state is published, so the event means "done". */
	ended(session: Session, state: 'logged_out' | 'stopped'): Promise<void>
	paired(session: Session): void
	opened(session: Session): void
	closed(session: Session, code: number | undefined): void
}

const CLOSE_WAIT_MS = 3000
/** A connection that stayed up this long was not flapping. */
const STABLE_MS = 60_000

export class Session implements ManagedSession {
	state: SessionState = 'created'
	sock: WASocket | undefined
	me: Me | undefined
	pairedAt: Date | undefined
	/** The trace id of the lifecycle command that last acted on this session. */
	traceId: string | undefined
	private auth: RedisAuthStore | undefined
	private failures = 0
	/** Which reconnect this socket is (0: the first connection, or a 515 restart). */
	private attempt = 0
	/** Connections in a row that dropped soon after opening: they lengthen the backoff. */
	private flaps = 0
	private openedAt = 0
	private retryTimer: NodeJS.Timeout | undefined
	/** Gives back the handshake slot of the current socket's attempt (idempotent). */
	private releaseSlot: () => void = () => undefined
	/** Bumped whenever the session is told to stop or restart: a stale connect gives up. */
	private generation = 0
	private readonly openCbs = new Set<(s: ManagedSession) => void>()
	private readonly closeCbs = new Set<(s: ManagedSession, code: number | undefined) => void>()

	constructor(
		readonly name: string,
		public settings: SessionStartPayload,
		readonly pacing: SessionPacing,
		readonly logger: Logger,
		private readonly host: SessionHost,
	) {
		if (settings.paired_at) this.pairedAt = new Date(settings.paired_at)
	}

	get upstream() {
		return this.settings.upstream
	}

	onOpen(cb: (s: ManagedSession) => void): Unsubscribe {
		this.openCbs.add(cb)
		return () => this.openCbs.delete(cb)
	}

	onClose(cb: (s: ManagedSession, code: number | undefined) => void): Unsubscribe {
		this.closeCbs.add(cb)
		return () => this.closeCbs.delete(cb)
	}

	/** Begin connecting (created/failed/stopped -> connecting). */
	start(): void {
		this.failures = 0
		this.flaps = 0
		this.attempt = 0
		this.connectSoon(0)
	}

	/** Close the socket without logging out, keep the auth; no event (the caller sends one). */
	async halt(): Promise<void> {
		this.generation++
		clearTimeout(this.retryTimer)
		await this.endSocket()
		await this.auth?.flush()
	}

	/** Drop the socket and connect afresh, counting from zero. */
	async restart(): Promise<void> {
		await this.halt()
		this.start()
	}

	/** Log out at WhatsApp (when connected), then delete the auth state. */
	async logout(): Promise<void> {
		this.generation++
		clearTimeout(this.retryTimer)
		const sock = this.sock
		if (sock !== undefined && this.state === 'connected') {
			this.sock = undefined
			await withTimeout(sock.logout('logout requested'), CLOSE_WAIT_MS).catch(err => this.logger.warn({ err: (err as Error).message }, 'logout at WhatsApp did not complete; clearing the auth state anyway'))
			sock.end(undefined)
			for (const cb of this.closeCbs) cb(this, DisconnectReason.loggedOut)
			this.host.closed(this, DisconnectReason.loggedOut)
		} else {
			await this.endSocket()
		}
		await this.clearAuth()
	}

	/** Flush the auth store and refuse further writes: the session is leaving this engine
	 * (stop, replaced, shutdown), and a late event of an old socket must not overwrite the
	 * state a later start (here or in the next engine) works with. */
	async closeAuth(): Promise<void> {
		const auth = this.auth
		this.auth = undefined
		await auth?.close()
	}

	private connectSoon(delayMs: number): void {
		clearTimeout(this.retryTimer)
		const generation = this.generation
		const run = () => void this.connect(generation).catch(err => this.connectFailed(err as Error, generation))
		if (delayMs <= 0) run()
		else this.retryTimer = setTimeout(run, delayMs)
	}

	private async connect(generation: number): Promise<void> {
		if (this.host.upstream.unusable) {
			await this.setState({ state: 'failed', reason: this.host.upstream.unusable })
			return
		}
		// The slot belongs to this attempt: it is given back exactly once (release is
		// idempotent) on whichever way out comes first: a QR or an open (the handshake is
		// done), a close, the socket being ended by halt/logout (endSocket, whether or not
		// its close event ever comes), or this function leaving before a socket exists.
		const release = await this.host.handshakes.acquire()
		let handedToSocket = false
		try {
			if (generation !== this.generation) return
			this.auth ??= await this.host.openAuth()
			if (generation !== this.generation) return
			await this.setState({ state: 'connecting', attempt: this.attempt })
			if (generation !== this.generation) return
			this.openSocket(generation, this.auth, release)
			handedToSocket = true
		} finally {
			if (!handedToSocket) release()
		}
	}

	private openSocket(generation: number, auth: RedisAuthStore, release: () => void): void {
		const config = buildSocketConfig(this.host.contributedConfig(this), {
			auth: auth.state,
			logger: this.host.baileysLog,
			wsUrl: this.host.upstream.wsUrl,
			caches: this.host.caches,
		})
		// From here on, synchronous until every listener is on: a refused connection closes
		// the socket within a tick, and a close nobody hears would leak the handshake slot.
		const sock = makeWASocket(config)
		this.sock = sock
		this.releaseSlot = release
		let opened = false
		let pairingStarted = false
		// Before the "still ours?" check below: a socket we let go of still gives its slot back.
		sock.ev.on('connection.update', update => {
			if (update.qr || update.connection === 'open' || update.connection === 'close') release()
		})
		sock.ev.on('creds.update', () => void auth.saveCreds().catch(err => this.logger.error({ err: (err as Error).message }, 'saving creds failed')))
		sock.ev.on('groups.upsert', groups => groups.forEach(g => this.host.caches.groups.set(g.id, g)))
		sock.ev.on('groups.update', updates => updates.forEach(u => u.id && this.host.caches.groups.del(u.id)))
		sock.ev.on('group-participants.update', u => this.host.caches.groups.del(u.id))
		sock.ev.on('connection.update', (update: Partial<ConnectionState>) => {
			if (this.sock !== sock) return // a socket we already let go of
			if (update.isNewLogin) {
				this.pairedAt = new Date()
				this.host.paired(this)
			}
			if (update.qr) {
				// The slot went back above: waiting for a human (or the simulated phone) is
				// not a handshake.
				if (!pairingStarted) {
					pairingStarted = true
					if (this.settings.pairing === 'code' && this.settings.phone) void this.pairByCode(sock, this.settings.phone)
					else void this.showQr(update.qr, true)
				} else if (this.settings.pairing !== 'code') void this.showQr(update.qr, false)
			}
			if (update.connection === 'open') {
				opened = true
				this.openedAt = Date.now()
				this.failures = 0
				this.attempt = 0
				this.me = meOf(sock)
				void this.setState({ state: 'connected', me: this.me })
				for (const cb of this.openCbs) cb(this)
				this.host.opened(this)
			}
			if (update.connection === 'close') {
				this.sock = undefined
				const code = (update.lastDisconnect?.error as Boom | undefined)?.output?.statusCode
				for (const cb of this.closeCbs) cb(this, code)
				this.host.closed(this, code)
				if (generation === this.generation) void this.afterClose(code, update.lastDisconnect?.error?.message, opened)
			}
		})
		for (const hook of this.host.socketHooks()) hook(this, sock)
	}

	private async afterClose(code: number | undefined, message: string | undefined, opened: boolean): Promise<void> {
		const reason = `${DisconnectReason[code ?? -1] ?? 'closed'}${message ? `: ${message}` : ''}`
		this.logger.info({ code, reason, opened }, 'socket closed')
		if (code === DisconnectReason.loggedOut) {
			this.generation++
			await this.clearAuth()
			await this.host.ended(this, 'logged_out')
			await this.setState({ state: 'logged_out', reason, reason_code: code })
			return
		}
		if (code === DisconnectReason.connectionReplaced) {
			this.generation++
			await this.closeAuth()
			await this.host.ended(this, 'stopped')
			await this.setState({ state: 'stopped', reason, reason_code: code })
			return
		}
		if (code === DisconnectReason.restartRequired) return this.connectSoon(0)
		if (code === DisconnectReason.forbidden) {
			await this.setState({ state: 'failed', reason, reason_code: code })
			return
		}
		if (!opened) this.failures++
		// A socket that opens and drops again at once would otherwise reconnect within a
		// second forever (the failure count resets on open): count such flaps into the backoff.
		else this.flaps = Date.now() - this.openedAt < STABLE_MS ? this.flaps + 1 : 0
		if (this.failures >= this.host.tuning.reconnect_max_attempts) {
			await this.setState({ state: 'failed', reason: `${this.failures} connection attempts never reached connected; last: ${reason}`, reason_code: code ?? null, attempt: this.failures })
			return
		}
		const delay = backoffMs(this.failures + this.flaps, this.host.tuning.reconnect_base_s * 1000, this.host.tuning.reconnect_max_s * 1000)
		this.attempt = this.failures + 1
		await this.setState({ state: 'reconnecting', reason, reason_code: code ?? null, attempt: this.attempt })
		this.connectSoon(delay)
	}

	private connectFailed(err: Error, generation: number): void {
		this.logger.error({ err: err.message }, 'connecting failed before a socket existed')
		if (generation !== this.generation) return
		void this.setState({ state: 'failed', reason: `cannot connect: ${err.message}` })
	}

	private async showQr(qr: string, first: boolean): Promise<void> {
		// Baileys shows the first QR for 60 s and each later one for 20 s (qrTimeout unset).
		const expires = new Date(Date.now() + (first ? 60_000 : 20_000)).toISOString()
		await this.setState({ state: 'qr', qr, qr_expires_at: expires })
		const phone = this.settings.phone
		const simulated = this.host.upstream.phone
		// Every QR until one is scanned: a failed scan (simulator busy) retries on the next.
		if (phone && simulated) {
			this.logger.info({ phone }, 'sandbox: the simulated phone scans the QR')
			await simulated.scanQr(phone, qr, this.settings.push_name ?? undefined).catch(err => this.logger.warn({ err: (err as Error).message }, 'sandbox QR scan failed; the QR stays up'))
		}
	}

	private async pairByCode(sock: WASocket, phone: string): Promise<void> {
		try {
			const code = await sock.requestPairingCode(phone)
			await this.setState({ state: 'pairing_code', pairing_code: code })
			const simulated = this.host.upstream.phone
			if (simulated) await simulated.enterCode(phone, code, this.settings.push_name ?? undefined)
		} catch (err) {
			this.logger.warn({ err: (err as Error).message }, 'pairing by code failed')
		}
	}

	private async clearAuth(): Promise<void> {
		const auth = this.auth ?? (await this.host.openAuth().catch(() => undefined))
		this.auth = undefined
		await auth?.clear()
	}

	private async endSocket(): Promise<void> {
		const sock = this.sock
		if (sock === undefined) return
		this.sock = undefined
		const release = this.releaseSlot
		const closed = new Promise<void>(resolve => {
			sock.ev.on('connection.update', u => u.connection === 'close' && resolve())
			setTimeout(resolve, CLOSE_WAIT_MS).unref()
		})
		sock.end(undefined)
		await closed
		// A socket ended mid-handshake (upstream frozen) may never report its close: the
		// slot is not left to that event.
		release()
		// The close handler ignores a socket we let go of on purpose; listeners still hear of it.
		for (const cb of this.closeCbs) cb(this, undefined)
		this.host.closed(this, undefined)
	}

	async setState(update: StateUpdate): Promise<void> {
		this.state = update.state
		await this.host.publish(this, update)
	}
}

function meOf(sock: WASocket): Me | undefined {
	const user = sock.user
	if (!user) return undefined
	return { jid: jidNormalizedUser(user.id), lid: user.lid ? jidNormalizedUser(user.lid) : null, push_name: user.name ?? null }
}

function withTimeout<T>(work: Promise<T>, ms: number): Promise<T> {
	let timer: NodeJS.Timeout | undefined
	return Promise.race([work, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms)))]).finally(() => clearTimeout(timer))
}
