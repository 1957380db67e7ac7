/**
 * One paced send, following the message lifecycle (design.md step 3):
 *
 *   GET wapp:sent:{id}: `sent` or `failed` -> done (acked, nothing sent again)
 *   otherwise SET `sending` (+ sent-ref, + `sending` event), composing for a text,
 *   sendMessage with the command's WhatsApp id, wait for the server ack,
 *   MULTI SET `sent` + XADD `sent` event, and only then does the caller XACK.
 *
 * A crash anywhere before the `sent` mark leaves the entry pending with `sending`: it is
 * reclaimed and sent again with the same WhatsApp id, which the receiver deduplicates.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { WASocket } from '@whiskeysockets/baileys'
import type { Boom } from '@hapi/boom'
import type { Redis } from 'ioredis'
import { ENTRY_FIELD, EVENTS_MAXLEN } from '../events.js'
import type { Logger } from '../log.js'
import type { ManagedSession } from '../sessions/types.js'
import type { SocketAcks } from './acks.js'
import { AckLostError } from './acks.js'
import { messageStatus, type StatusInput } from './events.js'
import { SENT_MARK_TTL_S, sentMarkKey, sentRefKey } from './keys.js'
import { isOnWhatsApp, NOT_ON_WHATSAPP, phoneToCheck, type NumberCache } from './number-check.js'
import { buildOutgoing, PermanentSendError, type OutgoingCommandType, type OutgoingPayload } from './outgoing.js'
import type { Pacer } from './pacer.js'
import type { RecentSends } from './recent-sends.js'

/** After this many deliveries of one entry a transient failure becomes `failed`. */
export const MAX_DELIVERIES = 5
const ACK_TIMEOUT_MS = 30_000

/** A failure worth another try later (the entry stays pending and is reclaimed). */
export class TransientSendError extends Error {
	constructor(
		readonly code: string,
		reason: string,
	) {
		super(reason)
		this.name = 'TransientSendError'
	}
}

export interface SendDeps {
	writer: Redis
	eventStream: string
	recent: RecentSends
	/** Who is on WhatsApp, per session (number-check.ts). */
	numbers: NumberCache
	acksOf(sock: WASocket): SocketAcks | undefined
}

export interface SendJob {
	session: ManagedSession
	pacer: Pacer
	type: OutgoingCommandType
	payload: OutgoingPayload
	traceId: string
	/** How many times this entry was handed out (1 on first read). */
	deliveries: number
	log: Logger
}

/** Boom status codes (and Baileys' 429 data) that say "not now", not "never". */
const TRANSIENT_STATUS = new Set([408, 428, 429, 440, 500, 503, 515])

export function classify(err: unknown): PermanentSendError | TransientSendError {
	if (err instanceof PermanentSendError || err instanceof TransientSendError) return err
	if (err instanceof AckLostError) return new TransientSendError('ACK_LOST', err.message)
	const boom = err as Partial<Boom> & { data?: unknown }
	const status = boom.output?.statusCode
	if (boom.data === 429 || status === 429) return new TransientSendError('RATE_LIMITED', (err as Error).message)
	if (status !== undefined && TRANSIENT_STATUS.has(status)) return new TransientSendError('CONNECTION_LOST', (err as Error).message)
	// Unknown errors (Signal session trouble, usync hiccups) get retried too; the delivery
	// cap turns a deterministic one into `failed` after MAX_DELIVERIES attempts.
	return new TransientSendError('SEND_FAILED', err instanceof Error ? err.message : String(err))
}

export class Sender {
	constructor(private readonly d: SendDeps) {}

	/** Resolves when the entry may be acked; throws TransientSendError to leave it pending. */
	async send(job: SendJob): Promise<void> {
		const { session, payload, traceId, log } = job
		const messageId = payload.message_id
		const markKey = sentMarkKey(messageId)
		const mark = await this.d.writer.get(markKey)
		if (mark === 'sent' || mark === 'failed') {
			log.info({ mark, wa_id: payload.wa_id }, 'already dealt with; acking without sending again')
			return
		}
		const status = (s: StatusInput) => messageStatus(session.name, traceId, { wa_id: payload.wa_id, recipient: payload.to, ...s })
		try {
			const sock = session.sock
			if (session.state !== 'connected' || !sock) throw new TransientSendError('NOT_CONNECTED', `session is ${session.state}`)
			const acks = this.d.acksOf(sock)
			if (!acks) throw new TransientSendError('NOT_CONNECTED', 'the socket has no ack listener')
			const out = await buildOutgoing(job.type, payload)

			if (mark === null) {
				const ref = JSON.stringify({ message_id: messageId, trace_id: traceId, recipient: payload.to })
				await this.d.writer
					.multi()
					.set(markKey, 'sending', 'EX', SENT_MARK_TTL_S)
					.set(sentRefKey(session.name, payload.wa_id), ref, 'EX', SENT_MARK_TTL_S)
					.xadd(this.d.eventStream, 'MAXLEN', '~', EVENTS_MAXLEN, '*', ENTRY_FIELD, JSON.stringify(status({ message_id: messageId, status: 'sending' })))
					.exec()
			} else {
				log.warn({ wa_id: payload.wa_id }, 'found marked sending (an earlier attempt died): sending again with the same WhatsApp id')
			}
			this.d.recent.put(session.name, payload.wa_id, { message_id: messageId, trace_id: traceId, recipient: payload.to })

			await this.checkRecipient(job, sock, out.jid)
			await this.paceAndCompose(job, sock, out.jid, out.text)
			const acked = acks.wait(payload.wa_id, ACK_TIMEOUT_MS)
			acked.catch(() => undefined) // observed below; a send that throws never awaits it
			job.pacer.recordSend(Date.now())
			let sent
			try {
				sent = await sock.sendMessage(out.jid, out.content, out.options)
			} catch (err) {
				acks.cancel(payload.wa_id)
				throw err
			}
			if (sent?.message) this.d.recent.setMessage(session.name, payload.wa_id, sent.message)
			const ack = await acked
			if (ack.error !== undefined) {
				throw new PermanentSendError(ack.error === '429' ? 'RATE_LIMITED' : 'SERVER_REJECTED', `WhatsApp refused the message (ack error ${ack.error})`)
			}
			const recent = this.d.recent.ref(session.name, payload.wa_id)
			if (recent && !recent.status) recent.status = 'sent'
			await this.d.writer
				.multi()
				.set(markKey, 'sent', 'EX', SENT_MARK_TTL_S)
				.xadd(this.d.eventStream, 'MAXLEN', '~', EVENTS_MAXLEN, '*', ENTRY_FIELD, JSON.stringify(status({ message_id: messageId, status: 'sent' })))
				.exec()
			log.info({ wa_id: payload.wa_id, to: out.jid }, 'sent')
		} catch (err) {
			const e = classify(err)
			if (e instanceof TransientSendError && job.deliveries < MAX_DELIVERIES) {
				log.warn({ code: e.code, err: e.message, deliveries: job.deliveries }, 'send failed for now; left pending for a retry')
				throw e
			}
			await this.fail(job, e.code, e.message)
		}
	}

	/** Permanent: mark `failed` (a redelivery does not retry it) and announce it. */
	private async fail(job: SendJob, code: string, reason: string): Promise<void> {
		const { session, payload, traceId, log } = job
		const recent = this.d.recent.ref(session.name, payload.wa_id)
		if (recent) recent.status = 'failed'
		const event = messageStatus(session.name, traceId, { message_id: payload.message_id, status: 'failed', wa_id: payload.wa_id, recipient: payload.to, code, reason })
		await this.d.writer
			.multi()
			.set(sentMarkKey(payload.message_id), 'failed', 'EX', SENT_MARK_TTL_S)
			.xadd(this.d.eventStream, 'MAXLEN', '~', EVENTS_MAXLEN, '*', ENTRY_FIELD, JSON.stringify(event))
			.exec()
		log.warn({ code, reason, wa_id: payload.wa_id }, 'message failed')
	}

	/**
	 * Throws NOT_ON_WHATSAPP for a 1:1 recipient that is not on WhatsApp, before any typing
	 * indicator or message goes out. A lookup that found nobody takes this send's pacing
	 * token (design.md: number checks are paced too), so a list of unknown numbers is
	 * looked up no faster than it would have been sent; a cached answer costs no token.
	 */
	private async checkRecipient(job: SendJob, sock: WASocket, jid: string): Promise<void> {
		const phone = phoneToCheck(jid, sock)
		if (phone === undefined) return
		const outcome = await isOnWhatsApp(sock, this.d.numbers, job.session.name, phone, jid)
		if (outcome === 'in' || outcome === 'cached-in') return
		if (outcome === 'out') job.pacer.recordSend(Math.max(Date.now(), job.pacer.sendAt()))
		throw new PermanentSendError(NOT_ON_WHATSAPP, `${phone} is not on WhatsApp`)
	}

	/**
	 * Wait for the pacer's send time; before a text show `composing` for a time scaled to
	 * its length, ending just at the send time, then `paused`. Presence is best effort: a
	 * failed typing indicator must not cost the message.
	 */
	private async paceAndCompose(job: SendJob, sock: WASocket, jid: string, text: string | undefined): Promise<void> {
		const { pacer, log } = job
		const sendAt = pacer.sendAt()
		const composeMs = text !== undefined ? pacer.composingMs(text) : 0
		const untilCompose = sendAt - composeMs - Date.now()
		if (untilCompose > 0) await sleep(untilCompose)
		if (composeMs > 0) {
			try {
				await sock.sendPresenceUpdate('composing', jid)
				await sleep(Math.max(composeMs, sendAt - Date.now()))
				await sock.sendPresenceUpdate('paused', jid)
			} catch (err) {
				log.warn({ err: (err as Error).message }, 'typing indicator failed; sending anyway')
			}
		}
		const rest = sendAt - Date.now()
		if (rest > 0) await sleep(rest)
	}
}
