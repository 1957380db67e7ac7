/**
 * Paced command payload -> what Baileys' `sendMessage` takes. Media is loaded here (from
 * the api's blob on disk or a URL) so a missing file or a dead link is a clean, permanent
 * `failed` instead of an error deep inside Baileys.
 */
import { readFile, stat } from 'node:fs/promises'
import type { AnyMessageContent, MiscMessageGenerationOptions, WAMessage } from '@whiskeysockets/baileys'
import type { MessageRef, SendContactPayload, SendLocationPayload, SendMediaPayload, SendReactionPayload, SendTextPayload } from '../generated/contracts.js'

export type OutgoingCommandType = 'send_text' | 'send_media' | 'send_location' | 'send_contact' | 'send_reaction'
export type OutgoingPayload = SendTextPayload | SendMediaPayload | SendLocationPayload | SendContactPayload | SendReactionPayload

/** Media larger than this is refused (WhatsApp's own document limit is 2 GB; videos 16 MB-100 MB). */
export const MAX_MEDIA_BYTES = 100 * 1024 * 1024
const MEDIA_FETCH_TIMEOUT_MS = 60_000

/** A send that can never succeed as asked: reported as `failed` with this code, then acked. */
export class PermanentSendError extends Error {
	constructor(
		readonly code: string,
		reason: string,
	) {
		super(reason)
		this.name = 'PermanentSendError'
	}
}

/** `4915112345678` -> its PN JID; a JID is taken as given. */
export function toJid(recipient: string): string {
	if (/^\d{5,20}$/.test(recipient)) return `${recipient}@s.whatsapp.net`
	if (recipient.includes('@')) return recipient
	throw new PermanentSendError('INVALID_RECIPIENT', `not a phone number or JID: ${recipient}`)
}

function refKey(ref: MessageRef): WAMessage['key'] {
	return { remoteJid: toJid(ref.chat), fromMe: ref.from_me, id: ref.wa_id, ...(ref.participant ? { participant: toJid(ref.participant) } : {}) }
}

/** The quoted message for a reply: Baileys needs its key and (for the bubble) some content. */
function quotedMessage(ref: MessageRef): WAMessage {
	return { key: refKey(ref), message: { conversation: ref.text ?? '' } }
}

export interface Outgoing {
	jid: string
	content: AnyMessageContent
	options: MiscMessageGenerationOptions
	/** The text typed (for the `composing` indicator); undefined for anything but text. */
	text: string | undefined
}

export async function buildOutgoing(type: OutgoingCommandType, p: OutgoingPayload): Promise<Outgoing> {
	const jid = toJid(p.to)
	const options: MiscMessageGenerationOptions = { messageId: p.wa_id }
	if (p.quoted) options.quoted = quotedMessage(p.quoted)
	const mentions = p.mentions.map(toJid)
	const withMentions = mentions.length > 0 ? { mentions } : {}
	switch (type) {
		case 'send_text': {
			const t = p as SendTextPayload
			return { jid, content: { text: t.text, ...withMentions }, options, text: t.text }
		}
		case 'send_media':
			return { jid, content: await mediaContent(p as SendMediaPayload, withMentions), options, text: undefined }
		case 'send_location': {
			const l = p as SendLocationPayload
			const location = { degreesLatitude: l.latitude, degreesLongitude: l.longitude, ...(l.name ? { name: l.name } : {}), ...(l.address ? { address: l.address } : {}) }
			return { jid, content: { location }, options, text: undefined }
		}
		case 'send_contact': {
			const c = p as SendContactPayload
			return { jid, content: { contacts: { displayName: c.display_name, contacts: [{ displayName: c.display_name, vcard: c.vcard }] } }, options, text: undefined }
		}
		case 'send_reaction': {
			const r = p as SendReactionPayload
			return { jid, content: { react: { text: r.emoji, key: refKey(r.target) } }, options, text: undefined }
		}
	}
}

async function mediaContent(m: SendMediaPayload, withMentions: { mentions?: string[] }): Promise<AnyMessageContent> {
	const data = await loadMedia(m)
	const caption = m.caption ?? undefined
	const mimetype = m.mimetype
	switch (m.kind) {
		case 'image':
			return { image: data, caption, mimetype, ...withMentions }
		case 'video':
			return { video: data, caption, mimetype, ...withMentions }
		case 'audio':
			return { audio: data, mimetype, ptt: false }
		case 'voice':
			return { audio: data, mimetype, ptt: true }
		case 'document':
			return { document: data, mimetype, fileName: m.filename ?? 'file', caption, ...withMentions }
		case 'sticker':
			return { sticker: data, mimetype }
	}
}

async function loadMedia(m: SendMediaPayload): Promise<Buffer> {
	if (m.blob_path !== null) {
		const info = await stat(m.blob_path).catch(() => undefined)
		if (!info?.isFile()) throw new PermanentSendError('MEDIA_UNAVAILABLE', `no media file at ${m.blob_path}`)
		if (info.size > MAX_MEDIA_BYTES) throw new PermanentSendError('MEDIA_TOO_LARGE', `${info.size} bytes is over ${MAX_MEDIA_BYTES}`)
		return readFile(m.blob_path)
	}
	if (m.url === null) throw new PermanentSendError('MEDIA_UNAVAILABLE', 'neither url nor blob_path is set')
	let res: Response
	try {
		res = await fetch(m.url, { signal: AbortSignal.timeout(MEDIA_FETCH_TIMEOUT_MS), redirect: 'follow' })
	} catch (err) {
		throw new PermanentSendError('MEDIA_UNAVAILABLE', `fetching ${m.url} failed: ${(err as Error).message}`)
	}
	if (!res.ok) throw new PermanentSendError('MEDIA_UNAVAILABLE', `fetching ${m.url} answered HTTP ${res.status}`)
	const declared = Number(res.headers.get('content-length') ?? '0')
	if (declared > MAX_MEDIA_BYTES) throw new PermanentSendError('MEDIA_TOO_LARGE', `${declared} bytes is over ${MAX_MEDIA_BYTES}`)
	const body = Buffer.from(await res.arrayBuffer())
	if (body.length > MAX_MEDIA_BYTES) throw new PermanentSendError('MEDIA_TOO_LARGE', `${body.length} bytes is over ${MAX_MEDIA_BYTES}`)
	return body
}
