/**
 * Reads every session's command stream with ONE blocking connection:
 *
 *   XREADGROUP GROUP engine <me> COUNT 1 BLOCK <ms> STREAMS <ready streams...> > > ...
 *
 * where "ready" means the session is connected, has nothing in hand, and its pacer holds
 * a token. COUNT 1 is per stream, so one read takes at most one entry per ready session;
 * everything else stays in Redis (design.md, lifecycle step 2). Entries are handled
 * concurrently across sessions and one at a time within a session.
 *
 * When a session becomes ready while the read blocks (a send finished, a socket opened),
 * the read is cut with CLIENT UNBLOCK from the writer connection so the next read
 * includes it; BLOCK is also never longer than the time to the next pacer token.
 */
import type { Redis } from 'ioredis'
import type { Logger } from '../log.js'
import { GROUP } from './keys.js'
import type { Lane } from './lane.js'

type ReadReply = [stream: string, entries: [id: string, fields: string[] | null][]][] | null

export interface ReaderOptions {
	reader: Redis
	writer: Redis
	consumer: string
	log: Logger
	readingAllowed(): boolean
	blockMs?: number
	/** How often every lane looks at its pending list again (entries of dead consumers). */
	claimEveryMs?: number
}

const IDLE_WAIT_MS = 1000
const NOT_ALLOWED_WAIT_MS = 200
const RETRY_AFTER_ERROR_MS = 1000

export class StreamReader {
	private readonly lanes = new Map<string, Lane>()
	private readonly inFlight = new Set<Promise<void>>()
	private loop: Promise<void> | undefined
	private stopping = false
	private blocked = false
	private unblockQueued = false
	private readerId: number | undefined
	private wakeSleep: (() => void) | undefined
	private nextClaimAt = 0
	private readonly blockMs: number
	private readonly claimEveryMs: number

	constructor(private readonly o: ReaderOptions) {
		this.blockMs = o.blockMs ?? 5000
		this.claimEveryMs = o.claimEveryMs ?? 30_000
		// CLIENT UNBLOCK needs the reader's id, which changes with every reconnect.
		o.reader.on('ready', () => {
			this.readerId = undefined
		})
	}

	get size(): number {
		return this.lanes.size
	}

	lane(session: string): Lane | undefined {
		return this.lanes.get(session)
	}

	add(lane: Lane): void {
		this.lanes.set(lane.session.name, lane)
		this.wake()
	}

	remove(session: string): void {
		const lane = this.lanes.get(session)
		if (!lane) return
		lane.removed = true
		this.lanes.delete(session)
	}

	start(): void {
		this.loop = this.run()
	}

	/** Stop reading; resolves once every entry in hand is handled (sent, acked or left pending). */
	async stop(): Promise<void> {
		this.stopping = true
		this.o.reader.disconnect()
		this.wakeSleep?.()
		await this.loop
		await Promise.allSettled([...this.inFlight])
	}

	/** Something may have become ready: make the loop look again now. */
	wake(): void {
		this.wakeSleep?.()
		if (this.blocked && !this.unblockQueued) {
			this.unblockQueued = true
			// Coalesce a burst of wakes (many sends finishing together) into one unblock.
			setImmediate(() => {
				this.unblockQueued = false
				if (this.blocked && this.readerId !== undefined) {
					this.o.writer.client('UNBLOCK', this.readerId).catch(() => undefined)
				}
			})
		}
	}

	private async run(): Promise<void> {
		const { log } = this.o
		while (!this.stopping) {
			try {
				await this.once()
			} catch (err) {
				if (this.stopping) break
				const message = (err as Error).message
				if (message.startsWith('NOGROUP')) {
					// A stream was deleted under us (an operator, FLUSHALL): recreate the groups.
					log.warn({ err: message }, 'a session stream vanished; recreating its group')
					for (const lane of this.lanes.values()) await lane.init().catch(() => undefined)
					continue
				}
				log.error({ err: message }, 'reading session commands failed; retrying')
				await this.sleep(RETRY_AFTER_ERROR_MS)
			}
		}
	}

	private async once(): Promise<void> {
		if (!this.o.readingAllowed()) {
			await this.sleep(NOT_ALLOWED_WAIT_MS)
			return
		}
		const now = Date.now()
		if (now >= this.nextClaimAt) {
			this.nextClaimAt = now + this.claimEveryMs
			for (const lane of this.lanes.values()) lane.checkPending = true
		}
		const ready: Lane[] = []
		let nextAt = Infinity
		for (const lane of this.lanes.values()) {
			const at = lane.readyAt()
			if (at > now) {
				nextAt = Math.min(nextAt, at)
				continue
			}
			if (lane.checkPending) this.track(lane, () => lane.recoverOne().then(() => undefined))
			else ready.push(lane)
		}
		if (ready.length === 0) {
			await this.sleep(Math.min(IDLE_WAIT_MS, Math.max(1, nextAt - now)))
			return
		}
		this.readerId ??= Number(await this.o.reader.client('ID'))
		const block = Math.max(1, Math.min(this.blockMs, nextAt - now))
		const args: (string | number)[] = ['GROUP', GROUP, this.o.consumer, 'COUNT', 1, 'BLOCK', block, 'STREAMS']
		for (const lane of ready) args.push(lane.stream)
		for (let i = 0; i < ready.length; i++) args.push('>')
		this.blocked = true
		let reply: ReadReply
		try {
			reply = (await this.o.reader.call('XREADGROUP', ...args)) as ReadReply
		} finally {
			this.blocked = false
		}
		const byStream = new Map(ready.map(lane => [lane.stream, lane]))
		for (const [stream, entries] of reply ?? []) {
			const lane = byStream.get(stream)
			const entry = entries[0]
			if (!lane || !entry) continue
			this.track(lane, () => lane.process(entry[0], entry[1]))
		}
	}

	/** Run lane work in the background, one piece per lane at a time. */
	private track(lane: Lane, work: () => Promise<void>): void {
		lane.busy = true
		const p = work()
			.catch((err: Error) => this.o.log.error({ session: lane.session.name, err: err.message }, 'session command work failed'))
			.finally(() => {
				lane.busy = false
				this.inFlight.delete(p)
				this.wake()
			})
		this.inFlight.add(p)
	}

	private sleep(ms: number): Promise<void> {
		return new Promise(resolve => {
			const done = () => {
				clearTimeout(timer)
				if (this.wakeSleep === done) this.wakeSleep = undefined
				resolve()
			}
			const timer = setTimeout(done, ms)
			this.wakeSleep = done
		})
	}
}
