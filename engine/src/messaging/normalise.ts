/**
 * A received Baileys message -> `MessageReceivedPayload` (appliance/contracts.py): the one
 * shape the api stores and fans out, whatever WhatsApp's proto nesting was.
 */
import { getContentType, isLidUser, jidNormalizedUser, normalizeMessageContent, type proto, type WAMessage } from '@whiskeysockets/baileys'
import type { MediaInfo, MediaRef, MessageReceivedPayload, Quoted } from '../generated/contracts.js'

type MediaKind = MediaRef['kind']

/** Messages that carry no content of their own (key distribution, protocol housekeeping). */
const SILENT = new Set<string>(['protocolMessage', 'senderKeyDistributionMessage', 'messageContextInfo'])

type MediaMessage = proto.Message.IImageMessage &
	proto.Message.IVideoMessage &
	proto.Message.IAudioMessage &
	proto.Message.IDocumentMessage &
	proto.Message.IStickerMessage

const MEDIA_TYPES: Record<string, MediaKind> = {
	imageMessage: 'image',
	videoMessage: 'video',
	audioMessage: 'audio',
	documentMessage: 'document',
	stickerMessage: 'sticker',
}

const b64 = (bytes: Uint8Array | null | undefined): string | null => (bytes && bytes.length > 0 ? Buffer.from(bytes).toString('base64') : null)

/** protobuf.js gives uint64 as a Long (or number); the contract wants a plain number. */
function num(value: number | { toNumber(): number } | null | undefined): number | null {
	if (value === null || value === undefined) return null
	return typeof value === 'number' ? value : value.toNumber()
}

/**
 * A chat or sender as the api shows it: the user, never one of its devices
 * (`4915100000:1@s.whatsapp.net` -> `4915100000@s.whatsapp.net`; `c.us` -> `s.whatsapp.net`).
 * A message from a linked device (another wapp session, WhatsApp Web) names that device.
 */
export function userJid(jid: string): string {
	return jidNormalizedUser(jid) || jid
}

/**
 * Returns undefined for what is not a user-visible message (our own, protocol messages,
 * stubs without content), which produces no event.
 */
export function normaliseReceived(msg: WAMessage): MessageReceivedPayload | undefined {
	const key = msg.key
	if (!key.id || !key.remoteJid || key.fromMe) return undefined
	const content = normalizeMessageContent(msg.message)
	const type = getContentType(content ?? undefined)
	if (!content || !type || SILENT.has(type)) return undefined

	// In a 1:1 chat the sender is the chat; in a group it is `participant`. Baileys v7 gives
	// the other addressing (PN <-> LID) in the matching `*Alt` field when WhatsApp sent it.
	// (Baileys leaves `participant` an empty string in 1:1 chats, hence `||`.)
	const sender = key.participant || key.remoteJid
	const senderAlt = (key.participant ? key.participantAlt : key.remoteJidAlt) || undefined
	const [fromLid, fromPn] = isLidUser(sender) ? [sender, senderAlt] : [senderAlt, sender]
	const ts = num(msg.messageTimestamp as number | { toNumber(): number } | null | undefined)

	const out: MessageReceivedPayload = {
		wa_id: key.id,
		chat: userJid(key.remoteJid),
		from_pn: fromPn ? userJid(fromPn) : null,
		from_lid: fromLid ? userJid(fromLid) : null,
		push_name: msg.pushName ?? null,
		sent_at: new Date(ts ? ts * 1000 : Date.now()).toISOString(),
		kind: 'unsupported',
		text: null,
		media: null,
		location: null,
		contact: null,
		reaction: null,
		quoted: null,
		mentions: [],
	}

	const inner = (content as Record<string, unknown>)[type] as { contextInfo?: proto.IContextInfo | null } | string | null | undefined
	const context = typeof inner === 'object' && inner !== null ? inner.contextInfo : undefined
	if (context) {
		out.mentions = context.mentionedJid ?? []
		out.quoted = quotedOf(context)
	}

	if (type === 'conversation') {
		out.kind = 'text'
		out.text = content.conversation ?? ''
	} else if (type === 'extendedTextMessage') {
		out.kind = 'text'
		out.text = content.extendedTextMessage?.text ?? ''
	} else if (type in MEDIA_TYPES) {
		const m = inner as MediaMessage
		const kind: MediaKind = type === 'audioMessage' && m.ptt ? 'voice' : MEDIA_TYPES[type]!
		out.kind = kind
		out.text = m.caption ?? null
		out.media = mediaInfo(kind, m)
	} else if (type === 'locationMessage' || type === 'liveLocationMessage') {
		const l = (content.locationMessage ?? content.liveLocationMessage)!
		out.kind = 'location'
		out.location = {
			latitude: l.degreesLatitude ?? 0,
			longitude: l.degreesLongitude ?? 0,
			name: 'name' in l ? (l.name ?? null) : null,
			address: 'address' in l ? (l.address ?? null) : null,
		}
	} else if (type === 'contactMessage') {
		out.kind = 'contact'
		out.contact = { display_name: content.contactMessage?.displayName ?? '', vcard: content.contactMessage?.vcard ?? '' }
	} else if (type === 'contactsArrayMessage') {
		// The contract carries one card; the first is what a phone shows in the bubble.
		const first = content.contactsArrayMessage?.contacts?.[0]
		out.kind = 'contact'
		out.contact = { display_name: first?.displayName ?? content.contactsArrayMessage?.displayName ?? '', vcard: first?.vcard ?? '' }
	} else if (type === 'reactionMessage') {
		const r = content.reactionMessage!
		out.kind = 'reaction'
		out.reaction = { emoji: r.text ?? '', target_wa_id: r.key?.id ?? '' }
	}
	return out
}

function mediaInfo(kind: MediaKind, m: MediaMessage): MediaInfo {
	const mimetype = m.mimetype ?? 'application/octet-stream'
	const fileLength = num(m.fileLength as number | { toNumber(): number } | null | undefined)
	const sha = b64(m.fileSha256)
	const mediaKey = b64(m.mediaKey)
	const encSha = b64(m.fileEncSha256)
	// Without a key and a path the attachment cannot be fetched later; still report the rest.
	const ref: MediaRef | null =
		mediaKey && encSha && (m.directPath || m.url)
			? { kind, mimetype, direct_path: m.directPath ?? '', url: m.url ?? null, media_key: mediaKey, file_enc_sha256: encSha, file_sha256: sha, file_length: fileLength }
			: null
	return {
		mimetype,
		file_length: fileLength,
		file_sha256: sha,
		filename: m.fileName ?? null,
		caption: m.caption ?? null,
		seconds: m.seconds ?? null,
		ref,
	}
}

function quotedOf(context: proto.IContextInfo): Quoted | null {
	if (!context.stanzaId) return null
	const q = normalizeMessageContent(context.quotedMessage)
	const text = q?.conversation ?? q?.extendedTextMessage?.text ?? q?.imageMessage?.caption ?? q?.videoMessage?.caption ?? null
	return { wa_id: context.stanzaId, participant: context.participant ?? null, text }
}
