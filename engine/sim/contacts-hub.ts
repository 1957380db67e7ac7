import { createHash, randomBytes } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { getBinaryNodeChild, jidDecode, type BinaryNode, type proto } from '@whiskeysockets/baileys'
import { S_WA, unixNow } from './context.js'
import type { ControlServer } from './control.js'
import { ApiError } from './control.js'
import {
	ContactError,
	decryptMedia,
	encryptMedia,
	findMedia,
	keyBundleNodes,
	lidAddress,
	mediaMessage,
	SimContact,
	textMessage,
	type ContactMediaKind,
	type EncType,
	type SimContactJson
} from './contacts/index.js'
import { writeFileAtomic } from './fsutil.js'
import type { ExternalPeers } from './relay.js'
import type { Simulator } from './sim.js'
import { normalizePhone, type Account, type Device } from './store.js'

interface Received {
	id: string
	from: string
	fromLid: string
	at: string
	text?: string
	media?: { kind: string; mimetype?: string | null; size: number; sha256: string; fileName?: string | null; caption?: string | null }
	error?: string
}

interface Sent {
	id: string
	to: string
	at: string
	text?: string
	media?: { kind: string; size: number; sha256: string }
	reaction?: { emoji: string; targetId: string }
	receipts: Array<{ type: string; from: string; at: string }>
}

interface Entry {
	contact: SimContact
	deliveryDelayMs: number
	/** null: the contact never reads. */
	readDelayMs: number | null
	received: Received[]
	/** receivedKey of every record in `received`: an engine's resend is recorded once. */
	receivedIds: Set<string>
	sent: Sent[]
	mediaBytes: Map<string, Buffer>
}

interface ContactsFile {
	version: 1
	/** received/sent are absent in files written before they were persisted. */
	contacts: Array<{ state: SimContactJson; deliveryDelayMs: number; readDelayMs: number | null; received?: Received[]; sent?: Sent[] }>
}

/** Per contact, how many received and sent records are kept (and persisted), newest last. */
const MAX_RECORDS = 20_000
const keepLast = <T>(list: T[]): void => {
	if (list.length > MAX_RECORDS) list.splice(0, list.length - MAX_RECORDS)
}
/** A message is the same message when the same account sends the same id again. */
const receivedKey = (accountPhone: string, id: string) => `${accountPhone}|${id}`
const accountOf = (deviceJid: string) => deviceJid.split(/[:@]/)[0]!

const MEDIA_KINDS: ContactMediaKind[] = ['image', 'video', 'audio', 'document', 'sticker']
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex')
const delayOf = (v: unknown, field: string, fallback: number | null): number | null => {
	if (v === undefined) return fallback
	if (v === null) return null
	if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 3_600_000) throw new ApiError(400, 'INVALID_FIELD', `${field} must be milliseconds in [0, 3600000] or null`, { field })
	return v
}

/**
 * Simulated contacts (the outside world): they hold real Signal state (sim/contacts),
 * send to accounts, decrypt and record what accounts send them, and answer with
 * delivery and read receipts after configurable delays.
 */
export class ContactHub implements ExternalPeers {
	private readonly byPhone = new Map<string, Entry>()
	private readonly byLid = new Map<string, Entry>()
	private readonly file?: string
	private saveTimer?: NodeJS.Timeout

	constructor(private readonly sim: Simulator) {
		if (!sim.opts.inMemory) {
			this.file = join(sim.opts.dataDir, 'contacts.json')
			if (existsSync(this.file)) {
				const state = JSON.parse(readFileSync(this.file, 'utf8')) as ContactsFile
				for (const c of state.contacts) {
					const received = c.received ?? []
					const receivedIds = new Set(received.map(r => receivedKey(accountOf(r.from), r.id)))
					this.index({ contact: SimContact.fromJSON(c.state), deliveryDelayMs: c.deliveryDelayMs, readDelayMs: c.readDelayMs, received, receivedIds, sent: c.sent ?? [], mediaBytes: new Map() })
				}
			}
		}
	}

	private index(e: Entry): void {
		this.byPhone.set(e.contact.profile.pn, e)
		this.byLid.set(e.contact.profile.lid, e)
	}

	private changed(): void {
		if (!this.file || this.saveTimer) return
		this.saveTimer = setTimeout(() => this.flush(), 50)
		this.saveTimer.unref()
	}

	/** Writes contacts (Signal sessions, received and sent records) now; called on shutdown. */
	flush(): void {
		if (this.saveTimer) clearTimeout(this.saveTimer)
		this.saveTimer = undefined
		if (!this.file) return
		const state: ContactsFile = {
			version: 1,
			contacts: [...this.byPhone.values()].map(e => ({ state: e.contact.toJSON(), deliveryDelayMs: e.deliveryDelayMs, readDelayMs: e.readDelayMs, received: e.received, sent: e.sent }))
		}
		writeFileAtomic(this.file, JSON.stringify(state))
	}

	create(body: Record<string, unknown>) {
		const phone = normalizePhone(body.phone)
		if (this.sim.store.getByPhone(phone)) throw new ApiError(409, 'PHONE_IN_USE', `${phone} is a paired account, not a contact`)
		const existing = this.byPhone.get(phone)
		if (existing) {
			// An upsert: a caller may retune an existing contact's receipts without a reset.
			if (body.deliveryDelayMs !== undefined) existing.deliveryDelayMs = delayOf(body.deliveryDelayMs, 'deliveryDelayMs', 0)!
			if (body.readDelayMs !== undefined) existing.readDelayMs = delayOf(body.readDelayMs, 'readDelayMs', null)
			if (body.deliveryDelayMs !== undefined || body.readDelayMs !== undefined) this.changed()
			return { created: false, contact: this.describe(existing) }
		}
		const name = body.pushName === undefined ? undefined : String(body.pushName)
		const entry: Entry = {
			contact: SimContact.create({ pn: phone, lid: this.sim.store.newLid(), name }),
			deliveryDelayMs: delayOf(body.deliveryDelayMs, 'deliveryDelayMs', 0)!,
			readDelayMs: delayOf(body.readDelayMs, 'readDelayMs', null),
			received: [],
			receivedIds: new Set(),
			sent: [],
			mediaBytes: new Map()
		}
		this.index(entry)
		this.changed()
		return { created: true, contact: this.describe(entry) }
	}

	get(phoneInput: string): Entry {
		const e = this.byPhone.get(normalizePhone(phoneInput))
		if (!e) throw new ApiError(404, 'CONTACT_NOT_FOUND', `no contact ${phoneInput}`)
		return e
	}

	describe(e: Entry) {
		const p = e.contact.profile
		return { phone: p.pn, jid: `${p.pn}@${S_WA}`, lid: `${p.lid}@lid`, pushName: p.name ?? null, deliveryDelayMs: e.deliveryDelayMs, readDelayMs: e.readDelayMs, received: e.received.length, sent: e.sent.length }
	}

	list() {
		return [...this.byPhone.values()].map(e => this.describe(e))
	}

	// ---- ExternalPeers (called by the relay and usync) ----

	resolve(user: string, server: string) {
		const e = server === 'lid' ? this.byLid.get(user) : this.byPhone.get(user)
		return e ? { phone: e.contact.profile.pn, lid: e.contact.profile.lid, pushName: e.contact.profile.name } : undefined
	}

	bundle(user: string, server: string, device: number): BinaryNode[] | undefined {
		const e = server === 'lid' ? this.byLid.get(user) : this.byPhone.get(user)
		if (!e || device !== 0) return undefined
		const nodes = keyBundleNodes(e.contact.keyBundle())
		this.changed()
		return nodes
	}

	onMessage(c: { phone: string; lid: string }, from: { account: Account; device: Device; viaLid: boolean }, stanza: BinaryNode, enc: BinaryNode): void {
		const e = this.byPhone.get(c.phone)!
		const id = stanza.attrs.id!
		const { account, device, viaLid } = from
		// An engine resending after a crash (same id, e.g. after a simulator restart emptied
		// the relay's memory) still gets decrypted, so Signal state stays in step, but the
		// contact records it and answers it once: its receipts are already owed (outbox).
		const dedupKey = receivedKey(account.phone, id)
		const repeat = e.receivedIds.has(dedupKey)
		const rec: Received = { id, from: `${account.phone}:${device.id}@${S_WA}`, fromLid: `${account.lid}:${device.id}@lid`, at: new Date().toISOString() }
		if (!repeat) {
			e.receivedIds.add(dedupKey)
			e.received.push(rec)
			keepLast(e.received)
			this.changed()
		}
		void (async () => {
			try {
				const msg = await e.contact.decryptFrom(lidAddress(account.lid, device.id), enc.attrs.type as EncType, enc.content as Uint8Array)
				this.changed()
				if (repeat) return
				await this.recordContent(e, rec, msg)
				this.changed()
			} catch (err) {
				if (repeat) return
				rec.error = err instanceof ContactError ? `${err.code}: ${err.message}` : String(err)
				this.changed()
				this.sim.log.warn({ contact: c.phone, id, err: rec.error }, 'contact could not read a message')
				return
			}
			const contactJid = viaLid ? `${c.lid}@lid` : `${c.phone}@${S_WA}`
			const now = Date.now()
			const receipt = (delayMs: number, type?: string): BinaryNode => ({
				tag: 'receipt',
				attrs: { id, from: contactJid, t: String(Math.floor((now + delayMs) / 1000)), ...(type ? { type } : {}) }
			})
			// Delivery goes to the sending device, read to every device of the account (as a
			// phone does). They are owed from now on, with their due time, in the relay's
			// persistent outbox: neither a dying socket nor a simulator restart loses them.
			this.sim.relay.deliver(account.phone, device.id, receipt(e.deliveryDelayMs), now + e.deliveryDelayMs)
			const readDelayMs = e.readDelayMs
			if (readDelayMs !== null) {
				for (const d of account.devices) this.sim.relay.deliver(account.phone, d.id, receipt(readDelayMs, 'read'), now + readDelayMs)
			}
		})()
	}

	private async recordContent(e: Entry, rec: Received, msg: proto.Message): Promise<void> {
		const inner = msg.deviceSentMessage?.message ?? msg
		rec.text = inner.conversation ?? inner.extendedTextMessage?.text ?? undefined
		const media = findMedia(inner)
		if (!media) return
		const blob = media.directPath ? this.sim.media.get(media.directPath.split('?')[0]!) : undefined
		if (!blob) throw new ContactError('bad_media', `media ${media.directPath} is not on the simulator's media server`)
		const bytes = await decryptMedia(blob, media.mediaKey, media.mediaType, { fileEncSha256: media.fileEncSha256, fileSha256: media.fileSha256 })
		const content = (inner.documentWithCaptionMessage?.message ?? inner)[`${media.kind}Message` as 'documentMessage'] as proto.Message.IDocumentMessage | undefined
		rec.media = { kind: media.kind, mimetype: media.mimetype, size: bytes.length, sha256: sha256(bytes), fileName: content?.fileName, caption: content?.caption }
		e.mediaBytes.set(rec.id, bytes)
	}

	onReceipt(c: { phone: string; lid: string }, from: { account: Account; device: Device }, receipt: BinaryNode): void {
		const e = this.byPhone.get(c.phone)!
		const sent = e.sent.find(s => s.id === receipt.attrs.id)
		const type = receipt.attrs.type ?? 'delivery'
		sent?.receipts.push({ type, from: `${from.account.phone}:${from.device.id}@${S_WA}`, at: new Date().toISOString() })
		if (sent) this.changed()
		if (type === 'retry' && getBinaryNodeChild(receipt, 'retry')) {
			// The device could not decrypt: start over with a fresh session, as a phone does.
			e.contact.resetSession(lidAddress(from.account.lid, from.device.id))
		}
	}

	// ---- contact -> account ----

	async send(phoneInput: string, body: Record<string, unknown>) {
		const e = this.get(phoneInput)
		if (typeof body.to !== 'string' || !body.to) throw new ApiError(400, 'INVALID_FIELD', 'to must be an account phone, PN JID or LID JID', { field: 'to' })
		const to = jidDecode(body.to.includes('@') ? body.to : `${normalizePhone(body.to)}@${S_WA}`)
		const account = to ? this.sim.store.getByUser(to.user, to.server) : undefined
		if (!to || !account) throw new ApiError(404, 'ACCOUNT_NOT_FOUND', `no account ${body.to}`)
		if (!account.devices.length) throw new ApiError(409, 'NO_DEVICES', `${account.phone} has no linked device`)
		const viaLid = to.server === 'lid'
		const id = typeof body.id === 'string' && /^[0-9A-F]{8,64}$/i.test(body.id) ? body.id.toUpperCase() : `3EB0${randomBytes(9).toString('hex').toUpperCase()}`
		const sent: Sent = { id, to: viaLid ? `${account.lid}@lid` : `${account.phone}@${S_WA}`, at: new Date().toISOString(), receipts: [] }
		let message: proto.IMessage
		let mediatype: string | undefined
		let stanzaType = 'text'
		if (body.reaction && typeof body.reaction === 'object') {
			const r = body.reaction as Record<string, unknown>
			if (typeof r.emoji !== 'string' || typeof r.targetId !== 'string' || !r.targetId) throw new ApiError(400, 'INVALID_FIELD', 'reaction needs emoji (empty removes) and targetId', { field: 'reaction' })
			// The key names the target as the contact sees it: its own message, or the account's.
			const fromMe = e.sent.some(s => s.id === r.targetId)
			message = { reactionMessage: { key: { remoteJid: sent.to, fromMe, id: r.targetId }, text: r.emoji, senderTimestampMs: Date.now() } }
			stanzaType = 'reaction'
			sent.reaction = { emoji: r.emoji, targetId: r.targetId }
		} else if (typeof body.text === 'string') {
			message = textMessage(body.text)
			sent.text = body.text
		} else if (body.media && typeof body.media === 'object') {
			const m = body.media as Record<string, unknown>
			const kind = m.kind as ContactMediaKind
			if (!MEDIA_KINDS.includes(kind)) throw new ApiError(400, 'INVALID_FIELD', `media.kind must be one of ${MEDIA_KINDS.join(', ')}`, { field: 'media.kind' })
			if (typeof m.dataBase64 !== 'string' || typeof m.mimetype !== 'string') throw new ApiError(400, 'INVALID_FIELD', 'media needs dataBase64 and mimetype', { field: 'media' })
			const bytes = Buffer.from(m.dataBase64, 'base64')
			const encrypted = await encryptMedia(bytes, kind)
			const location = this.sim.media.put(encrypted.encrypted)
			message = mediaMessage(kind, encrypted, location, {
				mimetype: m.mimetype,
				...(typeof m.caption === 'string' ? { caption: m.caption } : {}),
				...(typeof m.fileName === 'string' ? { fileName: m.fileName } : {})
			})
			mediatype = kind
			sent.media = { kind, size: bytes.length, sha256: sha256(bytes) }
			stanzaType = 'media'
		} else throw new ApiError(400, 'INVALID_FIELD', 'give text, media or reaction', { field: 'text' })

		const p = e.contact.profile
		for (const dev of account.devices) {
			const addr = lidAddress(account.lid, dev.id)
			const bundle = e.contact.hasSession(addr) ? null : this.sim.keys.takeWireBundle(account.phone, dev)
			const { type, ciphertext } = await e.contact.encryptTo(addr, bundle, message)
			const attrs: Record<string, string> = { id, type: stanzaType, t: unixNow(), notify: p.name ?? '' }
			if (viaLid) Object.assign(attrs, { from: `${p.lid}@lid`, sender_pn: `${p.pn}@${S_WA}` })
			else Object.assign(attrs, { from: `${p.pn}@${S_WA}`, sender_lid: `${p.lid}@lid` })
			const encAttrs: Record<string, string> = { v: '2', type }
			if (mediatype) encAttrs.mediatype = mediatype
			this.sim.relay.deliver(account.phone, dev.id, { tag: 'message', attrs, content: [{ tag: 'enc', attrs: encAttrs, content: ciphertext }] })
		}
		this.sim.stats.messagesRelayed++
		e.sent.push(sent)
		keepLast(e.sent)
		this.changed()
		return sent
	}
}

/** Wires contacts into the relay, usync, key fetches and the control API. */
export function attachContacts(sim: Simulator, control?: ControlServer): ContactHub {
	const hub = sim.contacts ?? new ContactHub(sim)
	sim.relay.external = hub
	sim.usync.external = hub
	sim.keys.external = hub
	sim.contacts = hub
	if (control) {
		control.extend('GET', '/contacts', () => hub.list())
		control.extend('POST', '/contacts', (_p, b) => hub.create(b))
		control.extend('GET', '/contacts/:phone', p => hub.describe(hub.get(p.phone!)))
		control.extend('POST', '/contacts/:phone/messages', (p, b) => hub.send(p.phone!, b))
		control.extend('GET', '/contacts/:phone/received', p => hub.get(p.phone!).received)
		control.extend('GET', '/contacts/:phone/sent', p => hub.get(p.phone!).sent)
		control.extend('GET', '/contacts/:phone/received/:id/media', p => {
			const bytes = hub.get(p.phone!).mediaBytes.get(p.id!)
			if (!bytes) throw new ApiError(404, 'MEDIA_NOT_FOUND', `no media received in message ${p.id}`)
			return { id: p.id, size: bytes.length, sha256: sha256(bytes), dataBase64: bytes.toString('base64') }
		})
	}
	return hub
}
