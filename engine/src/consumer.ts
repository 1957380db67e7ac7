import type { Redis } from 'ioredis'
import type { CommandHints, CommandParser } from './command-parser.js'
import type { CommandDispatcher } from './dispatcher.js'
import { commandRejected, type EventPublisher, type RejectionCode } from './events.js'
import type { Logger } from './log.js'

/** `[id, [field, value, ...]]`; fields are null for an entry trimmed away while pending. */
type StreamEntry = [id: string, fields: string[] | null]
type ReadReply = [stream: string, entries: StreamEntry[]][] | null
type AutoclaimReply = [next: string, entries: StreamEntry[], deleted?: string[]]

export interface ConsumerOptions {
	reader: Redis
	writer: Redis
	stream: string
	group: string
	/** Unique per process, so one engine's pending entries are never confused with another's. */
	consumer: string
	parser: CommandParser
	dispatcher: CommandDispatcher
	events: EventPublisher
	log: Logger
	/** XREADGROUP BLOCK; shutdown does not wait for it (the reader is disconnected). */
	blockMs?: number
	/** Entries per XREADGROUP. */
	batch?: number
	/** Pending entries idle this long belong to a consumer that died: claim them. */
	claimIdleMs?: number
	/** How often the read loop looks for such entries (besides once at start). */
	claimEveryMs?: number
	/** Consulted before every read; false (event loop lagging) holds new commands in Redis. */
	readingAllowed?: () => boolean
}

const DEFAULTS = { blockMs: 5000, batch: 16, claimIdleMs: 60_000, claimEveryMs: 30_000, readingAllowed: () => true }
const HOLD_MS = 200
const CLAIM_COUNT = 50
const RETRY_AFTER_ERROR_MS = 1000

/**
 * Reads one command stream through the consumer group (taskiq-redis/arq style):
 * `XGROUP CREATE ... MKSTREAM` (BUSYGROUP ignored), blocking `XREADGROUP`, `XACK` once an
 * entry is dealt with, `XAUTOCLAIM` of entries a dead consumer left pending, at start and
 * then periodically. Entries are handled one after another, in stream order, in the read
 * loop itself: a session's start before its stop, and a reclaim never races a read.
 */
export class CommandConsumer {
	private readonly o: Required<ConsumerOptions>
	private loop: Promise<void> | undefined
	private stopping = false
	private wake: (() => void) | undefined
	private nextClaimAt = 0

	constructor(options: ConsumerOptions) {
		this.o = { ...DEFAULTS, ...options }
	}

	/** Create the group if needed, take over what a dead engine left pending, start reading. */
	async start(): Promise<void> {
		await this.ensureGroup()
		await this.reclaim()
		this.loop = this.run()
	}

	/**
	 * Stop reading: the blocked XREADGROUP is cut by disconnecting the reader; the batch in
	 * hand is finished (handled, evented, acked through the writer) before this resolves.
	 * Nothing is deleted: entries not yet read stay in the stream for the next engine.
	 */
	async stop(): Promise<void> {
		this.stopping = true
		this.o.reader.disconnect()
		this.wake?.()
		await this.loop
	}

	/**
	 * `XGROUP CREATE <stream> engine 0 MKSTREAM`. From 0, not $: the group is created once
	 * (Redis keeps it), and commands the api queued before the very first engine start
	 * must not be skipped. Only BUSYGROUP (the group exists) is expected.
	 */
	async ensureGroup(): Promise<void> {
		try {
			await this.o.writer.xgroup('CREATE', this.o.stream, this.o.group, '0', 'MKSTREAM')
			this.o.log.info({ stream: this.o.stream, group: this.o.group }, 'consumer group created')
		} catch (err) {
			if (!(err instanceof Error) || !err.message.startsWith('BUSYGROUP')) throw err
		}
	}

	/** XAUTOCLAIM every entry idle longer than claimIdleMs, and handle it as if just read. */
	async reclaim(): Promise<number> {
		const { writer, stream, group, consumer, claimIdleMs } = this.o
		this.nextClaimAt = Date.now() + this.o.claimEveryMs
		let cursor = '0-0'
		let claimed = 0
		do {
			const [next, entries, deleted = []] = (await writer.xautoclaim(stream, group, consumer, claimIdleMs, cursor, 'COUNT', CLAIM_COUNT)) as AutoclaimReply
			if (entries.length > 0 || deleted.length > 0) {
				this.o.log.info({ claimed: entries.length, deleted: deleted.length, stream }, 'reclaimed commands pending past the claim timeout')
			}
			for (const [id, fields] of entries) await this.handle(id, fields)
			claimed += entries.length
			cursor = next
		} while (cursor !== '0-0' && !this.stopping)
		return claimed
	}

	private async run(): Promise<void> {
		const { reader, stream, group, consumer, batch, blockMs, log } = this.o
		while (!this.stopping) {
			if (!this.o.readingAllowed()) {
				await this.pause(HOLD_MS)
				continue
			}
			try {
				if (Date.now() >= this.nextClaimAt) await this.reclaim()
				const reply = (await reader.xreadgroup('GROUP', group, consumer, 'COUNT', batch, 'BLOCK', blockMs, 'STREAMS', stream, '>')) as ReadReply
				for (const [, entries] of reply ?? []) {
					for (const [id, fields] of entries) await this.handle(id, fields)
				}
			} catch (err) {
				if (this.stopping) break
				const message = (err as Error).message
				// The stream or group was deleted under us (FLUSHALL, an operator): a blocked read
				// is answered UNBLOCKED, the next one NOGROUP. Recreate the group and go on.
				if (message.startsWith('NOGROUP') || message.startsWith('UNBLOCKED')) {
					log.warn({ stream, group }, 'consumer group vanished; recreating it')
					await this.ensureGroup().catch((e: Error) => log.error({ err: e.message }, 'recreating the consumer group failed'))
					continue
				}
				log.error({ err: message, stream }, 'reading commands failed; retrying')
				await this.pause(RETRY_AFTER_ERROR_MS)
			}
		}
	}

	/**
	 * One entry: parse and validate, dispatch, answer rejections with an event, XACK.
	 * Public so a test or a future per-session reader can drive exactly this path.
	 * Returns what happened to the entry.
	 */
	async handle(entryId: string, fields: string[] | null): Promise<'acked' | 'pending'> {
		const { stream, group, writer } = this.o
		const parsed = this.o.parser.parse(fields)
		const { hints } = parsed
		const log = this.o.log.child({ trace_id: hints.trace_id, command_id: hints.command_id, command_type: hints.command_type, session: hints.session, entry_id: entryId })
		try {
			if (!parsed.ok) {
				await this.reject(log, parsed.hints, 'INVALID_COMMAND', parsed.reason, parsed.errors)
			} else {
				log.debug('command received')
				const outcome = await this.o.dispatcher.dispatch(parsed.command, { log, stream, entryId })
				if (outcome.kind === 'rejected') await this.reject(log, hints, outcome.code, outcome.reason, [])
				else log.info('command handled')
			}
		} catch (err) {
			// Not acked: the entry stays pending and is reclaimed after claimIdleMs.
			log.error({ err: (err as Error).message, stack: (err as Error).stack }, 'command failed; left pending for a retry')
			return 'pending'
		}
		try {
			await writer.xack(stream, group, entryId)
		} catch (err) {
			// Dealt with but not acked: a reclaim will see it again, which handling must tolerate.
			log.error({ err: (err as Error).message }, 'XACK failed; the entry stays pending')
			return 'pending'
		}
		return 'acked'
	}

	private async reject(log: Logger, hints: CommandHints, code: RejectionCode, reason: string, errors: Record<string, unknown>[]): Promise<void> {
		const event = commandRejected({ ...hints, code, reason, errors })
		await this.o.events.publish(event)
		log.warn({ code, reason, errors, event_id: event.id }, 'command rejected')
	}

	private pause(ms: number): Promise<void> {
		return new Promise(resolve => {
			const timer = setTimeout(done, ms)
			function done() {
				clearTimeout(timer)
				resolve()
			}
			this.wake = done
		})
	}
}
