import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { BinaryNode } from '@whiskeysockets/baileys'
import type { Conn } from './conn.js'
import { SERVER_JID } from './context.js'
import { writeFileAtomic } from './fsutil.js'
import type { Logger } from './log.js'

/** Per-device bound; beyond it the oldest stanzas are dropped (and counted). */
export const MAX_PENDING = 5000

interface Pending {
	node: BinaryNode
	/** Epoch ms from which it may be handed over (a contact's delayed receipt). */
	dueAt: number
	/** Conn id it was last written to; not persisted (a restarted simulator has no conns). */
	sentOn?: number
}

/** BinaryNode as JSON: byte content is base64 under `b64`. */
type JsonNode = { tag: string; attrs: Record<string, string>; content?: JsonNode[] | string | { b64: string } }
interface OutboxFile {
	version: 1
	devices: Record<string, Array<{ node: JsonNode; dueAt: number }>>
}

function toJson(n: BinaryNode): JsonNode {
	const out: JsonNode = { tag: n.tag, attrs: n.attrs }
	if (Array.isArray(n.content)) out.content = n.content.map(toJson)
	else if (typeof n.content === 'string') out.content = n.content
	else if (n.content instanceof Uint8Array) out.content = { b64: Buffer.from(n.content).toString('base64') }
	return out
}

function fromJson(n: JsonNode): BinaryNode {
	const out: BinaryNode = { tag: n.tag, attrs: n.attrs }
	if (Array.isArray(n.content)) out.content = n.content.map(fromJson)
	else if (typeof n.content === 'string') out.content = n.content
	else if (n.content) out.content = new Uint8Array(Buffer.from(n.content.b64, 'base64'))
	return out
}

/** Every id a device's receipt covers: `id` plus the `<list><item id>` of a batched receipt. */
function receiptIds(receipt: BinaryNode): string[] {
	const ids = receipt.attrs.id ? [receipt.attrs.id] : []
	for (const list of Array.isArray(receipt.content) ? receipt.content : []) {
		if (list.tag !== 'list' || !Array.isArray(list.content)) continue
		for (const item of list.content) if (item.attrs.id) ids.push(item.attrs.id)
	}
	return ids
}

/**
 * What the server owes each linked device, as WhatsApp's offline queue: a stanza stays
 * here until the device acknowledges it (a `<receipt>` or `<ack class="message">` for a
 * message, an `<ack class="receipt">` for a receipt), not merely until it was written to
 * a socket, because a socket that is dying (engine kill -9) swallows writes. At every
 * login the unacknowledged, due stanzas are handed over again, in order, marked
 * `offline="1"`. In persistent mode the queue is saved to outbox.json, so a restarted
 * simulator still owes what it owed, including receipts that were not yet due.
 */
export class Outbox {
	private readonly queues = new Map<string, Pending[]>()
	private readonly timers = new Map<string, NodeJS.Timeout>()
	private readonly file?: string
	private saveTimer?: NodeJS.Timeout
	dropped = 0

	constructor(
		dataDir: string | undefined,
		inMemory: boolean,
		/** The device's authenticated, open connection, if any. */
		private readonly liveConn: (key: string) => Conn | undefined,
		private readonly log: Logger
	) {
		if (inMemory || !dataDir) return
		this.file = join(dataDir, 'outbox.json')
		if (!existsSync(this.file)) return
		const state = JSON.parse(readFileSync(this.file, 'utf8')) as OutboxFile
		for (const [key, entries] of Object.entries(state.devices)) {
			this.queues.set(key, entries.map(e => ({ node: fromJson(e.node), dueAt: e.dueAt })))
			this.schedule(key)
		}
	}

	static key(phone: string, device: number): string {
		return `${phone}:${device}`
	}

	/** Owes `node` to the device from `dueAt` on; hands it over now if due and online. */
	put(key: string, node: BinaryNode, dueAt = Date.now()): void {
		let q = this.queues.get(key)
		if (!q) this.queues.set(key, (q = []))
		if (q.length >= MAX_PENDING) {
			q.shift()
			this.dropped++
			this.log.warn({ device: key }, 'offline queue full: oldest stanza dropped')
		}
		const entry: Pending = { node, dueAt }
		q.push(entry)
		this.changed()
		if (dueAt <= Date.now()) this.send(key, entry)
		else this.schedule(key)
	}

	pending(key: string): number {
		return this.queues.get(key)?.length ?? 0
	}

	drop(key: string): void {
		this.queues.delete(key)
		clearTimeout(this.timers.get(key))
		this.timers.delete(key)
		this.changed()
	}

	/**
	 * After `<success>`: every due stanza not yet acknowledged, marked offline, then the
	 * count that ends the offline phase. Returns how many were handed over.
	 */
	login(key: string, conn: Conn): number {
		const now = Date.now()
		const due = (this.queues.get(key) ?? []).filter(e => e.dueAt <= now)
		for (const e of due) {
			e.sentOn = conn.id
			conn.send({ ...e.node, attrs: { ...e.node.attrs, offline: '1' } })
		}
		conn.send({ tag: 'ib', attrs: { from: SERVER_JID }, content: [{ tag: 'offline', attrs: { count: String(due.length) } }] })
		return due.length
	}

	/** The device acknowledged a receipt we handed it (`<ack class="receipt">`). */
	ackReceipt(key: string, ack: BinaryNode): void {
		const { id, type } = ack.attrs
		this.remove(key, n => n.tag === 'receipt' && n.attrs.id === id && (n.attrs.type ?? '') === (type ?? ''))
	}

	/** The device answered a message (receipt of any type, or a nack): it is no longer owed. */
	ackMessage(key: string, answer: BinaryNode): void {
		const ids = new Set(answer.tag === 'receipt' ? receiptIds(answer) : [answer.attrs.id])
		this.remove(key, n => n.tag === 'message' && ids.has(n.attrs.id ?? ''), ids.size)
	}

	private remove(key: string, match: (n: BinaryNode) => boolean, max = 1): void {
		const q = this.queues.get(key)
		if (!q) return
		let removed = 0
		for (let i = 0; i < q.length && removed < max; ) {
			if (match(q[i]!.node)) {
				q.splice(i, 1)
				removed++
			} else i++
		}
		if (!removed) return
		if (!q.length) this.queues.delete(key)
		this.changed()
	}

	private send(key: string, entry: Pending): void {
		const conn = this.liveConn(key)
		if (!conn || entry.sentOn === conn.id) return
		entry.sentOn = conn.id
		conn.send(entry.node)
	}

	/** One timer per device, for its earliest stanza not yet due. */
	private schedule(key: string): void {
		clearTimeout(this.timers.get(key))
		this.timers.delete(key)
		const q = this.queues.get(key)
		if (!q) return
		const now = Date.now()
		let next = Infinity
		for (const e of q) {
			if (e.dueAt <= now) this.send(key, e)
			else next = Math.min(next, e.dueAt)
		}
		if (next === Infinity) return
		const timer = setTimeout(() => this.schedule(key), next - now)
		timer.unref()
		this.timers.set(key, timer)
	}

	private changed(): void {
		if (!this.file || this.saveTimer) return
		this.saveTimer = setTimeout(() => this.flush(), 100)
		this.saveTimer.unref()
	}

	/** Writes the queues now (called on shutdown); debounced otherwise. */
	flush(): void {
		clearTimeout(this.saveTimer)
		this.saveTimer = undefined
		if (!this.file) return
		const state: OutboxFile = { version: 1, devices: {} }
		for (const [key, q] of this.queues) state.devices[key] = q.map(e => ({ node: toJson(e.node), dueAt: e.dueAt }))
		writeFileAtomic(this.file, JSON.stringify(state))
	}

	close(): void {
		for (const t of this.timers.values()) clearTimeout(t)
		this.timers.clear()
		this.flush()
	}
}
