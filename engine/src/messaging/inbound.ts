/**
 * What a session's socket tells us: received messages (`message.received`), receipts for
 * our sends (`message.status` delivered/read), presence (`presence.update`).
 */
import { proto, type BinaryNode, type WAMessage, type WAMessageUpdate, type WASocket, type BaileysEventMap } from '@whiskeysockets/baileys'
import type { Redis } from 'ioredis'
import type { EventPublisher } from '../events.js'
import type { Logger } from '../log.js'
import type { ManagedSession } from '../sessions/types.js'
import { messageReceived, messageStatus, presenceUpdate } from './events.js'
import { sentRefKey } from './keys.js'
import { normaliseReceived } from './normalise.js'
import type { RecentSends, SentRef } from './recent-sends.js'

const Status = proto.WebMessageInfo.Status
/** Offline-queue ids remembered per socket until their upsert; far above any real backlog. */
const MAX_OFFLINE_IDS = 50_000
type Announced = NonNullable<SentRef['status']>
const RANK: Record<Announced, number> = { sent: 1, delivered: 2, read: 3, failed: 4 }

/** Baileys' numeric status -> ours; ERROR is announced by the sender (it sees the ack). */
function statusOf(n: number | null | undefined): 'delivered' | 'read' | undefined {
	if (n === Status.DELIVERY_ACK) return 'delivered'
	if (n === Status.READ || n === Status.PLAYED) return 'read'
	return undefined
}

export interface InboundDeps {
	writer: Redis
	events: EventPublisher
	recent: RecentSends
	log: Logger
}

export class Inbound {
	constructor(private readonly d: InboundDeps) {}

	/** Register on a new socket of `session` (SocketHook). */
	attach(session: ManagedSession, sock: WASocket): void {
		const log = session.logger
		const guard = (what: string, work: Promise<void>) => work.catch((err: Error) => log.error({ err: err.message }, `${what} failed`))
		// Baileys upserts a message WhatsApp held while we were offline (the stanza carries
		// `offline`) as `append`, like history and our own sends; the stanza is the only
		// place that tells them apart. This listener runs synchronously as the frame is
		// dispatched, before Baileys' (asynchronous) decryption reaches the upsert.
		const offline = new Set<string>()
		sock.ws.on('CB:message', (node: BinaryNode) => {
			const id = node.attrs.id
			if (!node.attrs.offline || !id) return
			if (offline.size >= MAX_OFFLINE_IDS) offline.delete(offline.values().next().value!)
			offline.add(id)
		})
		// One upsert at a time, so received messages are published in the order they came.
		let upserts: Promise<void> = Promise.resolve()
		sock.ev.on('messages.upsert', up => {
			upserts = upserts.then(() => guard('handling received messages', this.onUpsert(session, up, offline)))
		})
		sock.ev.on('messages.update', ups => guard('handling message updates', this.onUpdates(session, ups)))
		sock.ev.on('presence.update', p => guard('handling presence', this.onPresence(session, p)))
	}

	private async onUpsert(session: ManagedSession, { messages, type }: BaileysEventMap['messages.upsert'], offline: Set<string>): Promise<void> {
		for (const msg of messages) {
			// A receipt landing in the same event-buffer window as our own upsert is folded
			// into it (docs/simulator.md, Baileys quirks): read statuses from both places.
			if (msg.key.fromMe) {
				await this.onStatus(session, msg.key.id, msg.status)
				continue
			}
			// `notify` is news. Of `append`, only what WhatsApp queued while we were offline is:
			// the rest is our own sends echoed, notification stubs and newsletters. History
			// sync never comes here (it is `messaging-history.set`, not handled: its own policy).
			const id = msg.key.id ?? ''
			const queued = offline.delete(id)
			if (type !== 'notify' && !queued) continue
			const payload = normaliseReceived(msg as WAMessage)
			if (!payload) continue
			await this.d.events.publish(messageReceived(session.name, payload))
		}
	}

	private async onUpdates(session: ManagedSession, updates: WAMessageUpdate[]): Promise<void> {
		for (const { key, update } of updates) {
			if (key.fromMe) await this.onStatus(session, key.id, update.status)
		}
	}

	private async onStatus(session: ManagedSession, waId: string | null | undefined, n: number | null | undefined): Promise<void> {
		const status = statusOf(n)
		if (!waId || !status) return
		const ref = await this.refOf(session.name, waId)
		if (!ref) return // not sent through this gateway (the phone's own messages)
		if (ref.status && RANK[ref.status] >= RANK[status]) return
		ref.status = status
		await this.d.events.publish(messageStatus(session.name, ref.trace_id, { message_id: ref.message_id, status, wa_id: waId, recipient: ref.recipient }))
	}

	/** The memory store first; after a restart or eviction, the sent-ref kept in Redis. */
	private async refOf(session: string, waId: string): Promise<SentRef | undefined> {
		const hot = this.d.recent.ref(session, waId)
		if (hot) return hot
		const raw = await this.d.writer.get(sentRefKey(session, waId))
		if (!raw) return undefined
		const ref = JSON.parse(raw) as SentRef
		this.d.recent.put(session, waId, ref)
		return this.d.recent.ref(session, waId)
	}

	private async onPresence(session: ManagedSession, { id, presences }: BaileysEventMap['presence.update']): Promise<void> {
		for (const [participant, p] of Object.entries(presences)) {
			const presence = p.lastKnownPresence
			if (!['available', 'unavailable', 'composing', 'recording', 'paused'].includes(presence)) continue
			await this.d.events.publish(
				presenceUpdate(session.name, {
					chat: id,
					participant: participant === id ? null : participant,
					presence: presence as 'available' | 'unavailable' | 'composing' | 'recording' | 'paused',
					last_seen: p.lastSeen ? new Date(p.lastSeen * 1000).toISOString() : null,
				}),
			)
		}
	}
}
