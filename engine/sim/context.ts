import type { BinaryNode } from '@whiskeysockets/baileys'
import type { Conn } from './conn.js'
import type { Faults } from './faults.js'
import type { Logger } from './log.js'
import type { Account, Store } from './store.js'

export const S_WA = 's.whatsapp.net'
/**
 * `from` of server-originated stanzas: the server's JID with an empty user, which is
 * what Baileys compares against (S_WHATSAPP_NET), e.g. for prekey-low notifications.
 */
export const SERVER_JID = '@s.whatsapp.net'

export const unixNow = (): string => Math.floor(Date.now() / 1000).toString()

/** Live authenticated sockets, one per linked device. */
export class LiveRegistry {
	private readonly conns = new Map<string, Conn>()

	static key(phone: string, device: number): string {
		return `${phone}:${device}`
	}

	get(phone: string, device: number): Conn | undefined {
		return this.conns.get(LiveRegistry.key(phone, device))
	}

	set(phone: string, device: number, conn: Conn): Conn | undefined {
		const key = LiveRegistry.key(phone, device)
		const old = this.conns.get(key)
		this.conns.set(key, conn)
		return old
	}

	delete(conn: Conn): void {
		if (!conn.account || !conn.device) return
		const key = LiveRegistry.key(conn.account.phone, conn.device.id)
		if (this.conns.get(key) === conn) this.conns.delete(key)
	}

	forAccount(acc: Account): Conn[] {
		const out: Conn[] = []
		for (const d of acc.devices) {
			const c = this.conns.get(LiveRegistry.key(acc.phone, d.id))
			if (c) out.push(c)
		}
		return out
	}

	all(): Conn[] {
		return [...this.conns.values()]
	}

	get size(): number {
		return this.conns.size
	}
}

export interface UnhandledEntry {
	at: string
	conn?: string
	stanza: string
}

/** Stanzas the simulator did not understand; tests assert this stays empty. */
export class UnhandledLog {
	readonly entries: UnhandledEntry[] = []
	record(conn: Conn | undefined, node: BinaryNode, text: string): void {
		if (this.entries.length >= 1000) this.entries.shift()
		this.entries.push({ at: new Date().toISOString(), conn: conn?.jid, stanza: text })
	}
	clear(): void {
		this.entries.length = 0
	}
}

/** Relay counters and a bounded window of server-side relay latencies. */
export class Stats {
	messagesReceived = 0
	messagesRelayed = 0
	duplicatesDropped = 0
	receiptsRelayed = 0
	offlineQueued = 0
	private window: number[] = []

	/** Zeroes counters and the latency window (benchmarks call it before measuring). */
	reset(): void {
		this.messagesReceived = this.messagesRelayed = this.duplicatesDropped = this.receiptsRelayed = this.offlineQueued = 0
		this.window = []
	}

	recordLatency(ms: number): void {
		if (this.window.length >= 10_000) this.window.shift()
		this.window.push(ms)
	}

	latency() {
		if (!this.window.length) return { samples: 0, p50Ms: 0, p99Ms: 0, maxMs: 0 }
		const sorted = [...this.window].sort((a, b) => a - b)
		const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!
		return { samples: sorted.length, p50Ms: at(0.5), p99Ms: at(0.99), maxMs: sorted[sorted.length - 1]! }
	}
}

export interface SimContext {
	store: Store
	log: Logger
	live: LiveRegistry
	faults: Faults
	stats: Stats
	unhandled: UnhandledLog
	/** host:port of the HTTPS media server, handed out in media_conn. */
	mediaHost(): string
	/** A device was linked or removed: peers must drop their cached device lists. */
	devicesChanged(acc: Account): void
}
