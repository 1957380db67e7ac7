/**
 * One session's command stream as the messaging reader sees it: whether it may take its
 * next entry now (connected, nothing in hand, the pacer's token), and the handling of
 * entries one at a time, in order, through the same parse/dispatch/reject/ack path as the
 * control stream (CommandConsumer.handle).
 */
import { hostname } from 'node:os'
import type { Redis } from 'ioredis'
import type { CommandConsumer } from '../consumer.js'
import type { Logger } from '../log.js'
import type { ManagedSession } from '../sessions/types.js'
import { GROUP, pacingKey } from './keys.js'
import { Pacer, type PacerState } from './pacer.js'

type StreamEntry = [id: string, fields: string[] | null]
/** XPENDING extended form: [id, consumer, idle ms, times delivered]. */
type PendingRow = [id: string, consumer: string, idleMs: number, deliveries: number]

const PENDING_SCAN = 20
/** A handling failure is retried no sooner than this (times the delivery count). */
const RETRY_BASE_MS = 2000

export interface LaneDeps {
	writer: Redis
	/** This process's consumer name. */
	consumer: string
	/** Entries another consumer left pending this long are taken over. */
	claimIdleMs: number
	log: Logger
}

export class Lane {
	readonly stream: string
	pacer: Pacer
	/** An entry (or a pending-list check) is in hand. */
	busy = false
	/** Look at the pending list before reading new entries: at start, periodically, after a failure. */
	checkPending = true
	/** Not before this time (a failed entry's retry backoff), epoch ms. */
	notBefore = 0
	/** Deliveries of the entry in hand, for the sender's retry cap. */
	deliveries = 1
	groupReady = false
	removed = false

	constructor(
		readonly session: ManagedSession,
		stream: string,
		private readonly handler: CommandConsumer,
		private readonly d: LaneDeps,
	) {
		this.stream = stream
		this.pacer = new Pacer(session.pacing, session.pairedAt, undefined)
	}

	/** Create the stream's group and load the pacer's state (last send, today's count). */
	async init(): Promise<void> {
		try {
			await this.d.writer.xgroup('CREATE', this.stream, GROUP, '0', 'MKSTREAM')
		} catch (err) {
			if (!(err instanceof Error) || !err.message.startsWith('BUSYGROUP')) throw err
		}
		const h = await this.d.writer.hgetall(pacingKey(this.session.name))
		const state: PacerState | undefined = h.last_at ? { lastSendAt: Number(h.last_at), day: h.day ?? '', sentToday: Number(h.count ?? 0) } : undefined
		this.pacer = new Pacer(this.session.pacing, this.session.pairedAt, state)
		this.groupReady = true
	}

	/** Epoch ms from which this lane may take an entry; Infinity while it cannot at all. */
	readyAt(): number {
		if (this.removed || !this.groupReady || this.busy) return Infinity
		if (this.session.state !== 'connected' || !this.session.sock) return Infinity
		return Math.max(this.notBefore, this.pacer.readyAt(Date.now()))
	}

	/** Handle one entry read from the stream (`>`): first delivery. */
	async process(id: string, fields: string[] | null, deliveries = 1): Promise<void> {
		const before = this.pacer.snapshot().lastSendAt
		this.deliveries = deliveries
		const outcome = await this.handler.handle(id, fields)
		if (outcome === 'pending') {
			this.checkPending = true
			this.notBefore = Date.now() + RETRY_BASE_MS * deliveries
		}
		const after = this.pacer.snapshot()
		// Unpaced sessions (sandbox) have no cap to remember: no write per send.
		if (this.pacer.enabled && after.lastSendAt !== before) {
			await this.d.writer
				.hset(pacingKey(this.session.name), { last_at: String(after.lastSendAt), day: after.day, count: String(after.sentToday) })
				.catch((err: Error) => this.d.log.warn({ err: err.message }, 'saving the pacer state failed'))
		}
	}

	/**
	 * Take over one entry left pending: our own (an earlier attempt failed for now), or a
	 * dead consumer's (a crashed engine: its pid on this host is gone, or it has been idle
	 * past the claim timeout). XCLAIM counts a delivery, which the retry cap reads.
	 * Returns false when nothing is left to take over now.
	 */
	async recoverOne(): Promise<boolean> {
		const rows = (await this.d.writer.xpending(this.stream, GROUP, '-', '+', PENDING_SCAN)) as PendingRow[]
		for (const [id, owner, idleMs] of rows) {
			// A live engine's entry, or one not idle long enough yet: the periodic check returns to it.
			if (owner !== this.d.consumer && !consumerIsDead(owner) && idleMs < this.d.claimIdleMs) continue
			const claimed = (await this.d.writer.xclaim(this.stream, GROUP, this.d.consumer, 0, id)) as StreamEntry[]
			const entry = claimed[0]
			if (!entry) continue // acked meanwhile
			const deliveries = await this.deliveriesOf(id)
			this.d.log.info({ entry_id: id, previous_owner: owner, deliveries }, 'taking over a pending command')
			await this.process(entry[0], entry[1], deliveries)
			return true
		}
		this.checkPending = false
		return false
	}

	private async deliveriesOf(id: string): Promise<number> {
		const rows = (await this.d.writer.xpending(this.stream, GROUP, id, id, 1)) as PendingRow[]
		return rows[0]?.[3] ?? 1
	}
}

const HOST = hostname()

/**
 * Consumer names are `<host>:<pid>:<random>`: one on this host whose pid no longer runs
 * belongs to an engine that died (kill -9, OOM), so its entries need not wait out the idle
 * timeout. Same pid as ours means an earlier engine object in this very process (tests),
 * which is not dead.
 */
export function consumerIsDead(consumer: string): boolean {
	const [host, pidText] = consumer.split(':')
	const pid = Number(pidText)
	if (host !== HOST || !Number.isInteger(pid) || pid <= 0 || pid === process.pid) return false
	try {
		process.kill(pid, 0)
		return false
	} catch (err) {
		return (err as NodeJS.ErrnoException).code === 'ESRCH'
	}
}
