/**
 * Messaging in-process, against real services: a private redis-server, the simulator,
 * real Baileys sockets paired through it. Sessions are held by a small registry that
 * implements `SessionRegistry` over those sockets (pair by QR, hooks called right after
 * makeWASocket, contributed config applied), so messaging runs exactly the code paths it
 * runs under the session manager. The control stream is read by the engine's own
 * CommandConsumer, commands travel through Redis as the api writes them.
 */
import { createHash, randomUUID } from 'node:crypto'
import type { UserFacingSocketConfig, WASocket } from '@whiskeysockets/baileys'
import { Redis } from 'ioredis'
import pino from 'pino'
import { CommandParser } from '../../src/command-parser.js'
import { CommandConsumer } from '../../src/consumer.js'
import { CommandDispatcher } from '../../src/dispatcher.js'
import { EventPublisher } from '../../src/events.js'
import type { Command, EngineRuntimeConfig, MediaRef, Me, MessageRef, PresencePayload, SendMediaPayload, SessionStartPayload } from '../../src/generated/contracts.js'
import { Messaging, type MessagingOptions } from '../../src/messaging/index.js'
import type { EngineContext, ManagedSession, RegistryEvent, SessionPacing, SessionRegistry, SessionState, SocketConfigContributor, SocketHook, Unsubscribe } from '../../src/sessions/types.js'
import { GATEWAY_DEFAULTS } from '../../src/sessions/socket-config.js'
import type { Simulator } from '../../sim/sim.js'
import { closeCode, connectClient, memoryAuthState, waitClose, waitOpen, waitQr, type Client } from '../sim/helpers.js'
import { engineConfig, readEvents, startRedis, waitFor, type StreamEvent, type TestRedis } from './helpers.js'

export const PACING_OFF: SessionPacing = { enabled: false, min_interval_s: 0, max_interval_s: 0, daily_cap: 100_000, warmup_days: 0, warmup_daily_cap: 100_000, composing_min_s: 0, composing_max_s: 0 }

const quiet = pino({ level: process.env.ENGINE_TEST_LOG_LEVEL ?? 'silent' })

class HeldSession implements ManagedSession {
	state: SessionState = 'connecting'
	sock: WASocket | undefined
	me: Me | undefined
	readonly upstream = 'sandbox' as const
	readonly settings: SessionStartPayload
	readonly logger: pino.Logger
	client: Client | undefined

	constructor(
		readonly name: string,
		readonly pacing: SessionPacing,
		readonly pairedAt: Date | undefined,
	) {
		this.logger = quiet.child({ session: name })
		this.settings = { upstream: 'sandbox', push_name: null, pacing: null, pairing: 'qr', phone: null, paired_at: pairedAt?.toISOString() ?? null }
	}

	onOpen(): Unsubscribe {
		return () => undefined
	}

	onClose(): Unsubscribe {
		return () => undefined
	}
}

export class TestRegistry implements SessionRegistry {
	readonly sessions = new Map<string, HeldSession>()
	private readonly hooks = new Set<SocketHook>()
	private readonly contributors = new Set<SocketConfigContributor>()
	private readonly listeners = new Map<RegistryEvent, Set<(s: ManagedSession, code?: number) => void>>()

	constructor(private readonly sim: Simulator) {}

	get(name: string) {
		return this.sessions.get(name)
	}
	list() {
		return [...this.sessions.values()]
	}
	on(event: 'open' | 'removed', listener: (session: ManagedSession) => void): Unsubscribe
	on(event: 'closed', listener: (session: ManagedSession, code: number | undefined) => void): Unsubscribe
	on(event: RegistryEvent, listener: (s: ManagedSession, code?: number) => void): Unsubscribe {
		const set = this.listeners.get(event) ?? new Set()
		this.listeners.set(event, set)
		set.add(listener)
		return () => set.delete(listener)
	}
	onSocket(hook: SocketHook): Unsubscribe {
		this.hooks.add(hook)
		return () => this.hooks.delete(hook)
	}
	addSocketConfig(contributor: SocketConfigContributor): Unsubscribe {
		this.contributors.add(contributor)
		return () => this.contributors.delete(contributor)
	}

	private emit(event: RegistryEvent, s: ManagedSession, code?: number): void {
		for (const l of this.listeners.get(event) ?? []) l(s, code)
	}

	private connect(s: HeldSession, auth = memoryAuthState()): Client {
		// The manager's gateway defaults (notably no per-socket recent-message cache, so
		// retries depend on messaging's getMessage), then what modules contribute.
		const { connectTimeoutMs: _c, defaultQueryTimeoutMs: _q, ...defaults } = GATEWAY_DEFAULTS
		const config: Partial<UserFacingSocketConfig> = { ...defaults }
		for (const c of this.contributors) Object.assign(config, c(s))
		const client = connectClient(this.sim, auth, config)
		s.sock = client.sock
		s.client = client
		for (const hook of this.hooks) hook(s, client.sock)
		client.sock.ev.on('connection.update', u => {
			if (u.connection === 'close' && s.sock === client.sock) {
				s.state = 'reconnecting'
				this.emit('closed', s, closeCode(u))
			}
		})
		return client
	}

	/** Pair `name` as phone `phone` (the simulated phone scans the QR), ride the 515, open. */
	async pair(name: string, phone: string, pacing: SessionPacing = PACING_OFF, pairedAt?: Date): Promise<HeldSession> {
		const s = new HeldSession(name, pacing, pairedAt)
		this.sessions.set(name, s)
		const first = this.connect(s)
		const qr = await waitQr(first)
		const closed = waitClose(first)
		const res = await this.sim.pairing.scanQr(phone, qr, { bizName: `Biz ${name}` })
		if (!res.ok) throw new Error(`pairing failed: ${res.error}`)
		await closed
		return this.reopen(s)
	}

	/** A new socket on the same auth (a reconnect), emitting 'open' like the manager does. */
	async reopen(s: HeldSession): Promise<HeldSession> {
		s.state = 'connecting'
		const client = this.connect(s, s.client!.auth)
		await waitOpen(client)
		s.state = 'connected'
		s.me = { jid: client.sock.user!.id, lid: client.sock.user!.lid ?? null, push_name: null }
		this.emit('open', s)
		return s
	}

	async close(): Promise<void> {
		for (const s of this.sessions.values()) {
			const sock = s.sock
			s.sock = undefined
			s.state = 'stopped'
			if (sock && !sock.ws.isClosed) {
				const closed = new Promise<void>(r => sock.ev.on('connection.update', u => u.connection === 'close' && r()))
				sock.end(undefined)
				await Promise.race([closed, new Promise(r => setTimeout(r, 3000))])
			}
		}
	}
}

export interface Harness {
	redis: TestRedis
	registry: TestRegistry
	messaging: Messaging
	config: EngineRuntimeConfig
	/** XADD a command where the api would: paced types on the session stream, others on the control stream. */
	command(cmd: Command): Promise<string>
	events(type?: string): Promise<StreamEvent[]>
	waitEvent(what: string, pred: (e: StreamEvent['event']) => boolean, timeoutMs?: number): Promise<StreamEvent['event']>
	stop(): Promise<void>
}

const PACED = new Set(['send_text', 'send_media', 'send_location', 'send_contact', 'send_reaction', 'check_numbers'])

export async function startHarness(sim: Simulator, opts: MessagingOptions = {}): Promise<Harness> {
	const redis = await startRedis()
	const config = engineConfig(redis.url)
	const writer = new Redis({ path: redis.socket })
	const readers: Redis[] = []
	const registry = new TestRegistry(sim)
	const dispatcher = new CommandDispatcher()
	const events = new EventPublisher(writer, 'wapp:events')
	const consumerName = `${(await import('node:os')).hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`
	const ctx: EngineContext = {
		config,
		log: quiet,
		writer,
		connectReader: () => {
			const r = new Redis({ path: redis.socket, maxRetriesPerRequest: null })
			readers.push(r)
			return r
		},
		events,
		registry,
		dispatcher,
		consumerName,
		readingAllowed: () => true,
	}
	const messaging = new Messaging({ blockMs: 1000, ...opts })
	await messaging.start(ctx)
	const controlReader = ctx.connectReader('control')
	const control = new CommandConsumer({
		reader: controlReader,
		writer,
		stream: 'wapp:cmd:engine:sandbox',
		group: 'engine',
		consumer: consumerName,
		parser: new CommandParser(),
		dispatcher,
		events,
		log: quiet,
		blockMs: 500,
	})
	await control.start()
	return {
		redis,
		registry,
		messaging,
		config,
		command: cmd => redis.client.xadd(PACED.has(cmd.type) ? `wapp:cmd:${cmd.session}` : 'wapp:cmd:engine:sandbox', '*', 'data', JSON.stringify(cmd)) as Promise<string>,
		events: async type => (await readEvents(redis.client)).filter(e => type === undefined || e.event.type === type),
		waitEvent: (what, pred, timeoutMs = 10_000) =>
			waitFor(what, async () => (await readEvents(redis.client)).map(e => e.event).find(pred), timeoutMs),
		async stop() {
			await control.stop()
			await messaging.stop()
			await registry.close()
			writer.disconnect()
			for (const r of readers) r.disconnect()
			await redis.stop()
		},
	}
}

/** The WhatsApp id Python derives from our message id (contracts.wa_message_id). */
export function waMessageId(messageId: string): string {
	const bytes = Buffer.from(messageId.replaceAll('-', ''), 'hex')
	return '3EB0' + createHash('sha256').update(Buffer.concat([Buffer.from('wapp:'), bytes])).digest('hex').slice(0, 18).toUpperCase()
}

function envelope<T extends Command['type']>(type: T, session: string, payload: Extract<Command, { type: T }>['payload']): Extract<Command, { type: T }> {
	return { id: randomUUID(), version: 1, timestamp: new Date().toISOString(), session, trace_id: `trace-${randomUUID().slice(0, 8)}`, type, payload } as Extract<Command, { type: T }>
}

type Outgoing = { to: string; quoted?: MessageRef | null; mentions?: string[] }

function outgoingBase(o: Outgoing) {
	const message_id = randomUUID()
	return { message_id, wa_id: waMessageId(message_id), to: o.to, quoted: o.quoted ?? null, mentions: o.mentions ?? [] }
}

export const cmd = {
	text: (session: string, o: Outgoing & { text: string }) => envelope('send_text', session, { ...outgoingBase(o), text: o.text }),
	media: (session: string, o: Outgoing & { kind: SendMediaPayload['kind']; mimetype: string; blob_path?: string; url?: string; caption?: string; filename?: string }) =>
		envelope('send_media', session, { ...outgoingBase(o), kind: o.kind, mimetype: o.mimetype, url: o.url ?? null, blob_path: o.blob_path ?? null, caption: o.caption ?? null, filename: o.filename ?? null }),
	location: (session: string, o: Outgoing & { latitude: number; longitude: number; name?: string }) =>
		envelope('send_location', session, { ...outgoingBase(o), latitude: o.latitude, longitude: o.longitude, name: o.name ?? null, address: null }),
	contact: (session: string, o: Outgoing & { display_name: string; vcard: string }) => envelope('send_contact', session, { ...outgoingBase(o), display_name: o.display_name, vcard: o.vcard }),
	reaction: (session: string, o: Outgoing & { target: MessageRef; emoji: string }) => envelope('send_reaction', session, { ...outgoingBase(o), target: o.target, emoji: o.emoji }),
	checkNumbers: (session: string, phones: string[]) => {
		const request_id = randomUUID()
		return envelope('check_numbers', session, { request_id, phones: phones as [string, ...string[]], reply_to: `wapp:reply:${request_id}` })
	},
	markRead: (session: string, messages: MessageRef[]) => envelope('mark_read', session, { messages: messages as [MessageRef, ...MessageRef[]] }),
	presence: (session: string, state: PresencePayload['state'], chat: string | null) => envelope('presence', session, { state, chat }),
	download: (session: string, media: MediaRef, target_path: string) => {
		const request_id = randomUUID()
		return envelope('download_media', session, { request_id, message_id: randomUUID(), media, target_path, reply_to: `wapp:reply:${request_id}` })
	},
}
