// Building the proto.Message a contact sends, and finding the media in one it
// receives. Field choices follow what real phones send and what Baileys reads
// (`normalizeMessageContent`, `downloadMediaMessage`).
import { type MediaType, proto } from '@whiskeysockets/baileys'
import type { EncryptedMedia } from './media.js'

/**
 * Plain text. A phone sends `conversation` for bare text and
 * `extendedTextMessage` once there is context (a quote, a mention).
 */
export function textMessage(text: string, contextInfo?: proto.IContextInfo): proto.IMessage {
	return contextInfo ? { extendedTextMessage: { text, contextInfo } } : { conversation: text }
}

/** Media kinds a contact can send; each is also the HKDF media type of its keys. */
export type ContactMediaKind = 'image' | 'video' | 'audio' | 'document' | 'sticker'

const FIELD = {
	image: 'imageMessage',
	video: 'videoMessage',
	audio: 'audioMessage',
	document: 'documentMessage',
	sticker: 'stickerMessage'
} as const satisfies Record<ContactMediaKind, keyof proto.IMessage>

/** Where the simulator's media server hosts the blob. */
export interface MediaLocation {
	/**
	 * Full https URL. Baileys downloads from `https://<host of url><directPath>`,
	 * so the host here must be the simulator's media host (else it falls back to
	 * mmg.whatsapp.net).
	 */
	url: string
	/** Path part, e.g. `/v/t62.7118-24/<b64url(fileEncSha256)>?...`. */
	directPath: string
}

export interface MediaDetails {
	mimetype: string
	caption?: string
	/** Documents: the name the recipient sees. */
	fileName?: string
	/** Audio/video length in seconds. */
	seconds?: number
	/** Audio: a voice note rather than a music file. */
	ptt?: boolean
	width?: number
	height?: number
	contextInfo?: proto.IContextInfo
}

/** A media message pointing at an uploaded blob made by `encryptMedia`. */
export function mediaMessage(
	kind: ContactMediaKind,
	media: EncryptedMedia,
	location: MediaLocation,
	details: MediaDetails,
	now: Date = new Date()
): proto.IMessage {
	const content: Record<string, unknown> = {
		url: location.url,
		directPath: location.directPath,
		mediaKey: media.mediaKey,
		mediaKeyTimestamp: Math.floor(now.getTime() / 1000),
		fileSha256: media.fileSha256,
		fileEncSha256: media.fileEncSha256,
		fileLength: media.fileLength,
		mimetype: details.mimetype
	}
	for (const key of ['caption', 'fileName', 'seconds', 'ptt', 'width', 'height', 'contextInfo'] as const) {
		if (details[key] !== undefined) content[key] = details[key]
	}
	return { [FIELD[kind]]: content }
}

/** The downloadable part of a received media message. */
export interface ReceivedMedia {
	kind: ContactMediaKind
	/** Pass to decryptMedia. */
	mediaType: MediaType
	url?: string | null | undefined
	directPath?: string | null | undefined
	mediaKey: Uint8Array
	fileSha256?: Uint8Array | null | undefined
	fileEncSha256?: Uint8Array | null | undefined
	mimetype?: string | null | undefined
}

/** Finds image/video/audio/document/sticker content (also inside a documentWithCaption wrapper). */
export function findMedia(message: proto.IMessage): ReceivedMedia | undefined {
	const inner = message.documentWithCaptionMessage?.message ?? message
	for (const kind of Object.keys(FIELD) as ContactMediaKind[]) {
		const content = inner[FIELD[kind]] as
			| {
					url?: string | null
					directPath?: string | null
					mediaKey?: Uint8Array | null
					fileSha256?: Uint8Array | null
					fileEncSha256?: Uint8Array | null
					mimetype?: string | null
			  }
			| null
			| undefined
		if (content?.mediaKey) {
			return {
				kind,
				mediaType: kind,
				url: content.url,
				directPath: content.directPath,
				mediaKey: content.mediaKey,
				fileSha256: content.fileSha256,
				fileEncSha256: content.fileEncSha256,
				mimetype: content.mimetype
			}
		}
	}
	return undefined
}
