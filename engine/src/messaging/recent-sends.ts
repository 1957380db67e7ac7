/**
 * One process-wide, byte-bounded store of what this engine sent recently, for all
 * sessions together (design.md, "Memory": memory grows with traffic, not with sessions).
 *
 * Two uses:
 * - Baileys' `getMessage`: when a recipient cannot decrypt (a "Bad MAC" after simultaneous
 *   first messages both ways) it sends a retry receipt, and Baileys re-encrypts the
 *   message it gets here. Without it the message is lost.
 * - Tying receipts back to our message id and trace id (`message.status` events). A miss
 *   (evicted, or sent before a restart) falls back to the `wapp:sentref:` key in Redis.
 */
import { proto } from '@whiskeysockets/baileys'

export interface SentRef {
	message_id: string
	trace_id: string
	recipient: string
	/** The furthest status already announced, so duplicate receipts make no duplicate events. */
	status?: 'sent' | 'delivered' | 'read' | 'failed'
}

interface Entry {
	ref: SentRef
	message: Uint8Array | undefined
	bytes: number
}

/** Rough fixed cost of an entry beyond its encoded message (key, ref strings, Map slot). */
const ENTRY_OVERHEAD = 300

export class RecentSends {
	// A Map iterates in insertion order; re-inserting on use makes it an LRU.
	private readonly entries = new Map<string, Entry>()
	private bytes = 0

	constructor(private readonly budgetBytes: number) {}

	get size(): number {
		return this.entries.size
	}

	get usedBytes(): number {
		return this.bytes
	}

	/** Remember a send; the message is kept encoded (a fraction of the size of a decoded proto). */
	put(session: string, waId: string, ref: SentRef, message?: proto.IMessage): void {
		const key = `${session}\u0000${waId}`
		this.drop(key)
		const encoded = message ? proto.Message.encode(message).finish() : undefined
		const bytes = ENTRY_OVERHEAD + (encoded?.byteLength ?? 0) + key.length * 2
		this.entries.set(key, { ref, message: encoded, bytes })
		this.bytes += bytes
		while (this.bytes > this.budgetBytes && this.entries.size > 1) {
			const oldest = this.entries.keys().next().value as string
			this.drop(oldest)
		}
	}

	/** Attach the generated message (known only once Baileys built it) to an entry. */
	setMessage(session: string, waId: string, message: proto.IMessage): void {
		const entry = this.entries.get(`${session}\u0000${waId}`)
		if (entry) this.put(session, waId, entry.ref, message)
	}

	ref(session: string, waId: string): SentRef | undefined {
		return this.entries.get(`${session}\u0000${waId}`)?.ref
	}

	/** For `getMessage`: the message as sent, decoded afresh (Baileys may mutate it). */
	message(session: string, waId: string): proto.IMessage | undefined {
		const key = `${session}\u0000${waId}`
		const entry = this.entries.get(key)
		if (!entry?.message) return undefined
		this.entries.delete(key)
		this.entries.set(key, entry)
		return proto.Message.decode(entry.message)
	}

	/** Forget one session's entries (stopped or logged out). */
	dropSession(session: string): void {
		const prefix = `${session}\u0000`
		for (const key of [...this.entries.keys()]) if (key.startsWith(prefix)) this.drop(key)
	}

	private drop(key: string): void {
		const entry = this.entries.get(key)
		if (!entry) return
		this.entries.delete(key)
		this.bytes -= entry.bytes
	}
}
