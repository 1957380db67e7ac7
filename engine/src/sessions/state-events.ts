import { randomUUID } from 'node:crypto'
import type { EventPublisher } from '../events.js'
import type { SessionStateEvent, SessionStatePayload } from '../generated/contracts.js'
import type { Logger } from '../log.js'

export type StateUpdate = Partial<SessionStatePayload> & Pick<SessionStatePayload, 'state'>

/**
 * Publishes `session.state` events, collapsing a repeat of the previous event of the same
 * session (same state, reason, QR, code, account, attempt): a flapping session must not
 * flood `wapp:events`. Publishing never throws: a state change is logged even if Redis
 * is down, and the next change carries the truth.
 */
export class StatePublisher {
	private readonly last = new Map<string, string>()

	constructor(
		private readonly events: EventPublisher,
		private readonly log: Logger,
	) {}

	async publish(session: string, traceId: string | undefined, update: StateUpdate): Promise<boolean> {
		const payload: SessionStatePayload = {
			state: update.state,
			reason: update.reason ?? null,
			reason_code: update.reason_code ?? null,
			qr: update.qr ?? null,
			qr_expires_at: update.qr_expires_at ?? null,
			pairing_code: update.pairing_code ?? null,
			me: update.me ?? null,
			attempt: update.attempt ?? null,
		}
		const signature = JSON.stringify({ ...payload, qr_expires_at: null })
		if (this.last.get(session) === signature) return false
		this.last.set(session, signature)
		const event: SessionStateEvent = {
			id: randomUUID(),
			version: 1,
			timestamp: new Date().toISOString(),
			session,
			trace_id: traceId ?? randomUUID(),
			type: 'session.state',
			payload,
		}
		try {
			await this.events.publish(event)
			this.log.info({ session, trace_id: event.trace_id, state: payload.state, reason: payload.reason, reason_code: payload.reason_code, attempt: payload.attempt }, 'session state')
			return true
		} catch (err) {
			this.log.error({ session, err: (err as Error).message, state: payload.state }, 'publishing a session state failed')
			return false
		}
	}

	/** A session is gone: its next event, whatever it is, is published. */
	forget(session: string): void {
		this.last.delete(session)
	}
}
