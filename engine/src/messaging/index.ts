/**
 * Messaging: everything the engine does with a session once it is connected (paced sends,
 * acks and receipts, inbound messages, and the `getMessage` store Baileys asks when a
 * recipient needs a message re-sent). Plugs into the engine as an
 * EngineModule: control-stream handlers on the engine's dispatcher, per-session command
 * streams read by its own StreamReader, socket hooks for what the sockets report.
 */
import type { WASocket } from '@whiskeysockets/baileys'
import { CommandParser } from '../command-parser.js'
import { CommandConsumer } from '../consumer.js'
import { CommandDispatcher, CommandRejection, type CommandContext, type CommandOf } from '../dispatcher.js'
import { redisKeyTemplates } from '../keys.js'
import type { Logger } from '../log.js'
import type { EngineContext, EngineModule, ManagedSession, Unsubscribe } from '../sessions/types.js'
import { SocketAcks } from './acks.js'
import { Inbound } from './inbound.js'
import { GROUP, sessionStream } from './keys.js'
import { Lane } from './lane.js'
import { NumberCache, type NumberCacheOptions } from './number-check.js'
import type { OutgoingCommandType } from './outgoing.js'
import { StreamReader } from './reader.js'
import { RecentSends } from './recent-sends.js'
import { checkNumbers, downloadMedia, markRead, sendPresence } from './requests.js'
import { Sender, TransientSendError } from './sender.js'

export interface MessagingOptions {
	/** Byte budget of the recent-sends store (getMessage for retry receipts, receipt mapping). */
	recentSendsBytes?: number
	/** Entries another (not provably dead) consumer left pending this long are taken over. */
	claimIdleMs?: number
	claimEveryMs?: number
	blockMs?: number
	/** The cache of who is on WhatsApp (budget and TTLs). */
	numbers?: NumberCacheOptions
}

const DEFAULT_RECENT_BYTES = 16 * 1024 * 1024
const OUTGOING: OutgoingCommandType[] = ['send_text', 'send_media', 'send_location', 'send_contact', 'send_reaction']

export class Messaging implements EngineModule {
	readonly name = 'messaging'
	readonly recent: RecentSends
	readonly numbers: NumberCache
	private ctx!: EngineContext
	private log!: Logger
	private reader: StreamReader | undefined
	private sender!: Sender
	private readonly acks = new WeakMap<WASocket, SocketAcks>()
	private readonly paced = new CommandDispatcher()
	private readonly parser = new CommandParser()
	private readonly unsubscribe: Unsubscribe[] = []
	private readonly pendingLanes = new Map<string, Promise<void>>()

	constructor(private readonly opts: MessagingOptions = {}) {
		this.recent = new RecentSends(opts.recentSendsBytes ?? DEFAULT_RECENT_BYTES)
		this.numbers = new NumberCache(opts.numbers)
	}

	/** The lane of a session (tests and diagnostics). */
	lane(session: string): Lane | undefined {
		return this.reader?.lane(session)
	}

	async start(ctx: EngineContext): Promise<void> {
		this.ctx = ctx
		this.log = ctx.log.child({ component: 'messaging' })
		const { writer, registry, dispatcher } = ctx
		const eventStream = redisKeyTemplates.events_stream
		this.sender = new Sender({ writer, eventStream, recent: this.recent, numbers: this.numbers, acksOf: sock => this.acks.get(sock) })

		dispatcher.register('mark_read', cmd => markRead(registry, cmd))
		dispatcher.register('presence', cmd => sendPresence(registry, cmd))
		dispatcher.register('download_media', (cmd, c) => downloadMedia(writer, cmd, c.log))
		for (const type of OUTGOING) this.paced.register(type, (cmd, c) => this.onSend(cmd as CommandOf<OutgoingCommandType>, c))
		this.paced.register('check_numbers', (cmd, c) => {
			const lane = this.laneFor(cmd.session, c)
			return checkNumbers(writer, lane.session, lane.pacer, cmd, c.log, this.numbers)
		})

		const inbound = new Inbound({ writer, events: ctx.events, recent: this.recent, log: this.log })
		this.unsubscribe.push(
			registry.onSocket((session, sock) => {
				this.acks.set(sock, new SocketAcks(sock))
				inbound.attach(session, sock)
				sock.ev.on('connection.update', u => {
					if (u.connection === 'open') this.reader?.wake()
				})
			}),
			// Retry receipts (a recipient that could not decrypt) re-send what is kept here.
			registry.addSocketConfig(session => ({
				getMessage: async key => (key.id ? this.recent.message(session.name, key.id) : undefined),
			})),
			registry.on('open', session => this.openLane(session)),
			registry.on('removed', session => {
				this.reader?.remove(session.name)
				this.recent.dropSession(session.name)
				this.numbers.dropSession(session.name)
			}),
		)

		this.reader = new StreamReader({
			reader: ctx.connectReader('messaging'),
			writer,
			consumer: ctx.consumerName,
			log: this.log,
			readingAllowed: () => ctx.readingAllowed(),
			blockMs: this.opts.blockMs,
			claimEveryMs: this.opts.claimEveryMs,
		})
		for (const session of registry.list()) if (session.state === 'connected') this.openLane(session)
		this.reader.start()
		this.log.info({ group: GROUP }, 'messaging started')
	}

	async stop(): Promise<void> {
		for (const off of this.unsubscribe.splice(0)) off()
		await Promise.allSettled([...this.pendingLanes.values()])
		await this.reader?.stop()
	}

	/** A session reached `connected`: make sure its lane exists (once) and look again. */
	private openLane(session: ManagedSession): void {
		const reader = this.reader
		if (!reader) return
		const existing = reader.lane(session.name)
		if (existing && existing.session === session) {
			existing.checkPending = true
			reader.wake()
			return
		}
		if (this.pendingLanes.has(session.name)) return
		const stream = sessionStream(session.name)
		const consumer = new CommandConsumer({
			reader: this.ctx.writer, // never used: the StreamReader reads, this only handles
			writer: this.ctx.writer,
			stream,
			group: GROUP,
			consumer: this.ctx.consumerName,
			parser: this.parser,
			dispatcher: this.paced,
			events: this.ctx.events,
			log: session.logger.child({ component: 'messaging' }),
		})
		const lane = new Lane(session, stream, consumer, {
			writer: this.ctx.writer,
			consumer: this.ctx.consumerName,
			claimIdleMs: this.opts.claimIdleMs ?? 60_000,
			log: session.logger.child({ component: 'messaging' }),
		})
		const init = lane
			.init()
			.then(() => reader.add(lane))
			.catch((err: Error) => this.log.error({ session: session.name, err: err.message }, 'opening the session command stream failed'))
			.finally(() => this.pendingLanes.delete(session.name))
		this.pendingLanes.set(session.name, init)
	}

	/**
	 * The lane whose stream this entry came from. A command naming another session than
	 * its stream's is refused; one whose session went away while it was being read (stop,
	 * logout) stays pending for when the session is back, never rejected.
	 */
	private laneFor(session: string, c: CommandContext): Lane {
		if (c.stream !== sessionStream(session)) {
			throw new CommandRejection('UNKNOWN_SESSION', `a command for session ${session} on ${c.stream}`)
		}
		const lane = this.reader?.lane(session)
		if (!lane) throw new TransientSendError('NOT_CONNECTED', `session ${session} is no longer held`)
		return lane
	}

	private async onSend(cmd: CommandOf<OutgoingCommandType>, c: CommandContext): Promise<void> {
		const lane = this.laneFor(cmd.session, c)
		await this.sender.send({
			session: lane.session,
			pacer: lane.pacer,
			type: cmd.type,
			payload: cmd.payload,
			traceId: cmd.trace_id,
			deliveries: lane.deliveries,
			log: c.log,
		})
	}
}
