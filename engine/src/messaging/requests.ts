/**
 * Commands that are not sends: mark_read, presence and download_media on the engine's
 * control stream (read continuously, so a read receipt never queues behind paced sends),
 * and check_numbers, which is paced (number lookups are what WhatsApp watches for spam)
 * and so travels on the session's stream. Replies go to the command's `reply_to` list.
 */
import { createWriteStream } from 'node:fs'
import { mkdir, rename, rm } from 'node:fs/promises'
import { dirname } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { downloadContentFromMessage, type MediaType, type WASocket } from '@whiskeysockets/baileys'
import type { Redis } from 'ioredis'
import { CommandRejection, type CommandOf } from '../dispatcher.js'
import type { CheckNumbersReply, DownloadMediaReply, MediaRef, NumberCheck } from '../generated/contracts.js'
import type { Logger } from '../log.js'
import type { ManagedSession, SessionRegistry } from '../sessions/types.js'
import { REPLY_TTL_S } from './keys.js'
import type { NumberCache } from './number-check.js'
import { toJid } from './outgoing.js'
import type { Pacer } from './pacer.js'
import { classify } from './sender.js'

const DOWNLOAD_TIMEOUT_MS = 120_000

/** The session named by a control-stream command, connected, or a rejection saying why not. */
export function connectedSession(registry: SessionRegistry, name: string): { session: ManagedSession; sock: WASocket } {
	const session = registry.get(name)
	if (!session) throw new CommandRejection('UNKNOWN_SESSION', `this engine holds no session named ${name}`)
	if (session.state !== 'connected' || !session.sock) {
		throw new CommandRejection('SESSION_NOT_CONNECTED', `session ${name} is ${session.state}, not connected`)
	}
	return { session, sock: session.sock }
}

async function reply(writer: Redis, list: string, body: CheckNumbersReply | DownloadMediaReply): Promise<void> {
	await writer.multi().lpush(list, JSON.stringify(body)).expire(list, REPLY_TTL_S).exec()
}

export async function markRead(registry: SessionRegistry, cmd: CommandOf<'mark_read'>): Promise<void> {
	const { sock } = connectedSession(registry, cmd.session)
	const keys = cmd.payload.messages.map(m => ({
		remoteJid: toJid(m.chat),
		id: m.wa_id,
		fromMe: m.from_me,
		...(m.participant ? { participant: toJid(m.participant) } : {}),
	}))
	await sock.readMessages(keys)
}

export async function sendPresence(registry: SessionRegistry, cmd: CommandOf<'presence'>): Promise<void> {
	const { sock } = connectedSession(registry, cmd.session)
	const { state, chat } = cmd.payload
	if (state !== 'available' && state !== 'unavailable' && chat === null) {
		throw new CommandRejection('INVALID_COMMAND', `presence ${state} needs a chat`)
	}
	await sock.sendPresenceUpdate(state, chat === null ? undefined : toJid(chat))
}

/**
 * Fetch and decrypt a received attachment into `target_path` (written to a temp name,
 * then renamed, so a reader never sees half a file). Needs no socket: the media URL and
 * key are in the MediaRef. The reply says ok or why not; the command is acked either way.
 */
export async function downloadMedia(writer: Redis, cmd: CommandOf<'download_media'>, log: Logger): Promise<void> {
	const { media, target_path, reply_to, request_id } = cmd.payload
	const tmp = `${target_path}.part-${process.pid}`
	let body: DownloadMediaReply
	try {
		await mkdir(dirname(target_path), { recursive: true })
		const stream = await downloadContentFromMessage(
			{ mediaKey: Buffer.from(media.media_key, 'base64'), directPath: media.direct_path || undefined, url: media.url ?? undefined },
			mediaTypeOf(media),
			{ options: { signal: AbortSignal.timeout(DOWNLOAD_TIMEOUT_MS) } },
		)
		let size = 0
		stream.on('data', (chunk: Buffer) => {
			size += chunk.length
		})
		await pipeline(stream, createWriteStream(tmp, { mode: 0o640 }))
		await rename(tmp, target_path)
		body = { request_id, ok: true, path: target_path, size, code: null, reason: null }
		log.info({ path: target_path, size }, 'media downloaded')
	} catch (err) {
		await rm(tmp, { force: true }).catch(() => undefined)
		body = { request_id, ok: false, path: null, size: null, code: 'DOWNLOAD_FAILED', reason: (err as Error).message }
		log.warn({ err: (err as Error).message }, 'media download failed')
	}
	await reply(writer, reply_to, body)
}

function mediaTypeOf(media: MediaRef): MediaType {
	// A voice note is an audio attachment on the wire; the key derivation is the same.
	return media.kind === 'voice' ? 'audio' : media.kind
}

/**
 * `onWhatsApp` for up to 50 numbers, paced like a send (one token). Numbers WhatsApp does
 * not know come back `exists: false`. A failure is a reply with ok=false, never a retry:
 * the api is waiting on the list and decides. The answers also fill the session's number
 * cache, so checking a list before a campaign spares each send its own lookup.
 */
export async function checkNumbers(writer: Redis, session: ManagedSession, pacer: Pacer, cmd: CommandOf<'check_numbers'>, log: Logger, numbers?: NumberCache): Promise<void> {
	const { phones, reply_to, request_id } = cmd.payload
	let body: CheckNumbersReply
	const wait = pacer.sendAt() - Date.now()
	if (wait > 0) await new Promise(r => setTimeout(r, wait))
	try {
		const sock = session.sock
		if (session.state !== 'connected' || !sock) throw new Error(`session is ${session.state}`)
		pacer.recordSend(Date.now())
		const found = (await sock.onWhatsApp(...phones)) ?? []
		const byPhone = new Map(found.map(f => [f.jid.split('@')[0]!.split(':')[0]!, f]))
		const results: NumberCheck[] = []
		for (const phone of phones) {
			const hit = byPhone.get(phone)
			const exists = !!hit?.exists
			const lid = exists ? await sock.signalRepository.lidMapping.getLIDForPN(hit!.jid).catch(() => null) : null
			results.push({ phone, exists, jid: exists ? hit!.jid : null, lid: lid ?? null })
			numbers?.set(session.name, phone, exists)
		}
		body = { request_id, ok: true, results, code: null, reason: null }
	} catch (err) {
		const e = classify(err)
		body = { request_id, ok: false, results: [], code: e.code === 'SEND_FAILED' ? 'CHECK_FAILED' : e.code, reason: e.message }
		log.warn({ code: body.code, err: e.message }, 'number check failed')
	}
	await reply(writer, reply_to, body)
}
