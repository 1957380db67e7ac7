/** Envelopes of the events messaging emits on `wapp:events`. */
import { randomUUID } from 'node:crypto'
import type { Event, MessageReceivedPayload, MessageStatusEvent, MessageStatusPayload, PresenceUpdatePayload } from '../generated/contracts.js'

function envelope<T extends Event['type'], P>(type: T, session: string, traceId: string | undefined, payload: P) {
	return {
		id: randomUUID(),
		version: 1 as const,
		timestamp: new Date().toISOString(),
		session,
		// Events that no command caused (a received message, a receipt nobody can tie to a
		// send) still need a trace id: a fresh one, so logs and webhooks can follow them.
		trace_id: traceId ?? randomUUID().replaceAll('-', ''),
		type,
		payload,
	}
}

export type StatusInput = Pick<MessageStatusPayload, 'message_id' | 'status'> & Partial<Omit<MessageStatusPayload, 'message_id' | 'status'>>

export function messageStatus(session: string, traceId: string | undefined, s: StatusInput): MessageStatusEvent {
	return envelope('message.status', session, traceId, {
		message_id: s.message_id,
		status: s.status,
		wa_id: s.wa_id ?? null,
		recipient: s.recipient ?? null,
		code: s.code ?? null,
		reason: s.reason ?? null,
	})
}

export function messageReceived(session: string, payload: MessageReceivedPayload): Event {
	return envelope('message.received', session, undefined, payload)
}

export function presenceUpdate(session: string, payload: PresenceUpdatePayload): Event {
	return envelope('presence.update', session, undefined, payload)
}
