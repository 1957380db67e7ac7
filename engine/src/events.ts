import { randomUUID } from 'node:crypto'
import type { Redis } from 'ioredis'
import type { CommandRejectedEvent, CommandRejectedPayload, Event } from './generated/contracts.js'

/**
 * Approximate cap of `wapp:events`. The api's consumer group persists every event long
 * before 100k more arrive; the cap only bounds memory if the api is down for a long time.
 */
export const EVENTS_MAXLEN = 100_000

/** The one stream field that carries an envelope, on commands and events alike. */
export const ENTRY_FIELD = 'data'

export type RejectionCode = CommandRejectedPayload['code']

/** Appends envelopes to the event stream: `XADD <stream> MAXLEN ~ N * data <json>`. */
export class EventPublisher {
	constructor(
		private readonly redis: Redis,
		private readonly stream: string,
	) {}

	async publish(event: Event): Promise<string> {
		const id = await this.redis.xadd(this.stream, 'MAXLEN', '~', EVENTS_MAXLEN, '*', ENTRY_FIELD, JSON.stringify(event))
		if (id === null) throw new Error(`XADD ${this.stream} returned no id`)
		return id
	}
}

export interface RejectionInput {
	session: string | null
	trace_id: string
	command_id: string | null
	command_type: string | null
	code: RejectionCode
	reason: string
	errors: Record<string, unknown>[]
}

export function commandRejected(input: RejectionInput): CommandRejectedEvent {
	return {
		id: randomUUID(),
		version: 1,
		timestamp: new Date().toISOString(),
		session: input.session,
		trace_id: input.trace_id,
		type: 'command.rejected',
		payload: {
			command_id: input.command_id,
			command_type: input.command_type,
			code: input.code,
			reason: input.reason,
			errors: input.errors,
		},
	}
}
