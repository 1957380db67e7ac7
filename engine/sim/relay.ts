import { performance } from 'node:perf_hooks'
import { getBinaryNodeChild, getBinaryNodeChildren, jidDecode, type BinaryNode } from '@whiskeysockets/baileys'
import type { Conn } from './conn.js'
import { S_WA, SERVER_JID, unixNow, type SimContext } from './context.js'
import { Outbox } from './outbox.js'
import type { Account, Device } from './store.js'
/** How many (sender, message id) pairs are remembered for de-duplication. */
const MAX_SEEN = 200_000

/** Someone the simulator plays itself (a simulated contact) rather than a Baileys device. */
export interface ExternalPeers {
	/** Known user part (PN or LID) -> its phone and LID. */
	resolve(user: string, server: string): { phone: string; lid: string; pushName?: string } | undefined
	/** An account sent this contact a message (one `<enc>` addressed to the contact's device). */
	onMessage(contact: { phone: string; lid: string }, from: { account: Account; device: Device; viaLid: boolean }, stanza: BinaryNode, enc: BinaryNode): void
	/** An account sent a receipt for a message the contact sent. */
	onReceipt(contact: { phone: string; lid: string }, from: { account: Account; device: Device }, receipt: BinaryNode): void
}

export interface Sender {
	phone: string
	lid: string
	device: number
	pushName?: string
}

const user = (phone: string, viaLid: boolean, lid: string) => (viaLid ? `${lid}@lid` : `${phone}@${S_WA}`)
const deviceJid = (s: { phone: string; lid: string; device: number }, viaLid: boolean) =>
	viaLid ? `${s.lid}:${s.device}@lid` : `${s.phone}:${s.device}@${S_WA}`

/**
 * Routes messages and receipts between devices: fan-out by PN or LID, server acks,
 * the offline queue (outbox.ts: kept until the device acknowledges, handed over again at
 * login), de-duplication of repeated message ids.
 */
export class Relay {
	external?: ExternalPeers
	readonly outbox: Outbox
	/** `${senderPhone}|${id}` -> device keys already handed the message. */
	private readonly seen = new Map<string, Set<string>>()

	constructor(
		private readonly ctx: SimContext,
		persist: { dataDir?: string; inMemory: boolean } = { inMemory: true }
	) {
		this.outbox = new Outbox(persist.dataDir, persist.inMemory, key => this.liveConn(key), ctx.log.child({ mod: 'outbox' }))
	}

	private liveConn(key: string): Conn | undefined {
		const at = key.lastIndexOf(':')
		const conn = this.ctx.live.get(key.slice(0, at), Number(key.slice(at + 1)))
		return conn && conn.phase === 'authenticated' && conn.isOpen ? conn : undefined
	}

	/**
	 * Owes a stanza to a device: handed over now if it is online (and again at its next
	 * login until it acknowledges), else at its next login. `dueAt` delays it (a contact's
	 * receipt that falls due later), persistently.
	 */
	deliver(phone: string, device: number, node: BinaryNode, dueAt?: number): void {
		if (!this.liveConn(Outbox.key(phone, device))) this.ctx.stats.offlineQueued++
		this.outbox.put(Outbox.key(phone, device), node, dueAt)
	}

	/** Stanzas the device has not acknowledged yet (offline or in flight). */
	queued(phone: string, device: number): number {
		return this.outbox.pending(Outbox.key(phone, device))
	}

	dropQueue(phone: string, device: number): void {
		this.outbox.drop(Outbox.key(phone, device))
	}

	/** After `<success>`: owed stanzas marked offline, then the count that ends the offline phase. */
	flushOffline(conn: Conn): void {
		this.outbox.login(Outbox.key(conn.account!.phone, conn.device!.id), conn)
	}

	/** A device's `<ack>`: a receipt (or, as a nack, a message) it no longer needs. */
	onAck(conn: Conn, node: BinaryNode): void {
		const key = Outbox.key(conn.account!.phone, conn.device!.id)
		if (node.attrs.class === 'receipt') this.outbox.ackReceipt(key, node)
		else if (node.attrs.class === 'message') this.outbox.ackMessage(key, node)
	}

	/** `arrivedAt`: when the frame came off the socket, so queueing inside the simulator counts as relay time. */
	onMessage(conn: Conn, node: BinaryNode, arrivedAt = performance.now()): void {
		const acc = conn.account!
		const dev = conn.device!
		const { id, to } = node.attrs
		this.ctx.stats.messagesReceived++
		const toJid = to ? jidDecode(to) : undefined
		if (!id || !to || !toJid) {
			conn.send({ tag: 'ack', attrs: { class: 'message', id: id ?? '', from: to ?? SERVER_JID, t: unixNow(), error: '400' } })
			return
		}
		const refusal = this.ctx.faults.matchMessage(acc.phone)
		if (refusal) {
			conn.send({ tag: 'ack', attrs: { class: 'message', id, from: to, t: unixNow(), error: String(refusal.errorCode) } })
			return
		}
		if (toJid.server !== S_WA && toJid.server !== 'lid') {
			this.ctx.unhandled.record(conn, node, `message to unsupported server ${toJid.server}`)
			conn.send({ tag: 'ack', attrs: { class: 'message', id, from: to, t: unixNow(), error: '501' } })
			return
		}
		conn.send({ tag: 'ack', attrs: { class: 'message', id, from: to, t: unixNow() } })

		const targets: Array<{ jid: string; enc: BinaryNode }> = []
		// A retry resend (or peer message) carries one <enc> for the device in `to`; rc14's
		// retry also repeats a <participants> copy for the same device, which is ignored.
		const direct = getBinaryNodeChild(node, 'enc')
		const participants = direct ? undefined : getBinaryNodeChild(node, 'participants')
		const isFanout = !!participants
		if (direct) targets.push({ jid: to, enc: direct })
		for (const p of getBinaryNodeChildren(participants, 'to')) {
			const enc = getBinaryNodeChild(p, 'enc')
			if (p.attrs.jid && enc) targets.push({ jid: p.attrs.jid, enc })
		}

		let delivered: Set<string> | undefined
		if (isFanout) {
			// A repeated id from the same sender (e.g. an engine resending after a crash)
			// is acked above but reaches each device only once.
			const seenKey = `${acc.phone}|${id}`
			delivered = this.seen.get(seenKey)
			if (!delivered) {
				if (this.seen.size >= MAX_SEEN) this.seen.delete(this.seen.keys().next().value!)
				this.seen.set(seenKey, (delivered = new Set()))
			} else this.ctx.stats.duplicatesDropped++
		}

		const sender: Sender = { phone: acc.phone, lid: acc.lid, device: dev.id, pushName: acc.pushName ?? dev.pushName }
		const chatUser = node.attrs.recipient ?? `${toJid.user}@${toJid.server}`
		for (const { jid, enc } of targets) {
			const t = jidDecode(jid)
			if (!t) continue
			const device = t.device ?? 0
			const viaLid = t.server === 'lid'
			const targetAcc = this.ctx.store.getByUser(t.user, t.server)
			if (targetAcc) {
				const targetDev = this.ctx.store.findDevice(targetAcc, device)
				if (!targetDev) continue
				const key = `${targetAcc.phone}:${device}`
				if (delivered) {
					if (delivered.has(key)) continue
					delivered.add(key)
				}
				const attrs: Record<string, string> = {
					id,
					type: node.attrs.type ?? 'text',
					t: unixNow(),
					notify: sender.pushName ?? '',
					from: deviceJid(sender, viaLid)
				}
				if (viaLid) attrs.sender_pn = `${sender.phone}@${S_WA}`
				else attrs.sender_lid = `${sender.lid}@lid`
				if (targetAcc.phone === acc.phone) attrs.recipient = chatUser
				for (const a of ['edit', 'category', 'expiration', 'push_priority'] as const) if (node.attrs[a]) attrs[a] = node.attrs[a]!
				this.deliver(targetAcc.phone, device, { tag: 'message', attrs, content: [enc] })
				continue
			}
			const contact = this.external?.resolve(t.user, t.server)
			if (contact) {
				const key = `${contact.phone}:${device}`
				if (delivered) {
					if (delivered.has(key)) continue
					delivered.add(key)
				}
				this.external!.onMessage(contact, { account: acc, device: dev, viaLid }, node, enc)
			}
		}
		this.ctx.stats.messagesRelayed++
		this.ctx.stats.recordLatency(performance.now() - arrivedAt)
	}

	onReceipt(conn: Conn, node: BinaryNode): void {
		const acc = conn.account!
		const dev = conn.device!
		const { id, to, type } = node.attrs
		const toJid = to ? jidDecode(to) : undefined
		const ack: BinaryNode = { tag: 'ack', attrs: { class: 'receipt', id: id ?? '', from: to ?? SERVER_JID } }
		if (type) ack.attrs.type = type
		conn.send(ack)
		// Any receipt for a message (delivery, read, retry) means the device has it.
		this.outbox.ackMessage(Outbox.key(acc.phone, dev.id), node)
		if (!id || !toJid) return
		const viaLid = toJid.server === 'lid'
		const targetAcc = this.ctx.store.getByUser(toJid.user, toJid.server)
		if (!targetAcc) {
			const contact = this.external?.resolve(toJid.user, toJid.server)
			if (contact) this.external!.onReceipt(contact, { account: acc, device: dev }, node)
			return
		}
		// Own-device receipts (sender, peer) come from the exact device. The others come from
		// the user; a retry also names the device in `participant` so the sender finds the
		// message under the chat JID and resends to that device only.
		const fromDevice = type === 'sender' || type === 'peer_msg'
		const senderDevice = deviceJid({ phone: acc.phone, lid: acc.lid, device: dev.id }, viaLid)
		const attrs: Record<string, string> = {
			id,
			t: node.attrs.t ?? unixNow(),
			from: fromDevice ? senderDevice : user(acc.phone, viaLid, acc.lid)
		}
		// A receiver that is not "online" sends type="inactive", which Baileys maps to no
		// status at all; the real server forwards it as a plain delivery receipt.
		if (type && type !== 'inactive') attrs.type = type
		if (node.attrs.participant) attrs.participant = node.attrs.participant
		else if (type === 'retry') attrs.participant = senderDevice
		if (node.attrs.recipient) attrs.recipient = node.attrs.recipient
		const forwarded: BinaryNode = { tag: 'receipt', attrs, content: node.content }
		const devices = toJid.device !== undefined ? [toJid.device] : targetAcc.devices.map(d => d.id)
		for (const d of devices) {
			if (targetAcc.phone === acc.phone && d === dev.id) continue
			if (!this.ctx.store.findDevice(targetAcc, d)) continue
			this.deliver(targetAcc.phone, d, forwarded)
		}
		this.ctx.stats.receiptsRelayed++
	}

	/** `<chatstate>` (typing) goes to every device of the addressee, never queued. */
	onChatstate(conn: Conn, node: BinaryNode): void {
		const toJid = node.attrs.to ? jidDecode(node.attrs.to) : undefined
		if (!toJid) return
		const target = this.ctx.store.getByUser(toJid.user, toJid.server)
		if (!target) return
		const acc = conn.account!
		const from = user(acc.phone, toJid.server === 'lid', acc.lid)
		for (const c of this.ctx.live.forAccount(target)) if (c.phase === 'authenticated') c.send({ tag: 'chatstate', attrs: { from }, content: node.content })
	}
}
