import { randomUUID } from 'node:crypto'
import type { ValidateFunction } from 'ajv/dist/2020.js'
import commandSchema from './generated/command.schema.json' with { type: 'json' }
import type { Command } from './generated/contracts.js'
import eventSchema from './generated/event.schema.json' with { type: 'json' }
import { ENTRY_FIELD } from './events.js'
import { createAjv, plainErrors } from './schemas.js'

/** What identifies a command in logs and in its rejection, as far as the entry allows. */
export interface CommandHints {
	command_id: string | null
	command_type: string | null
	/** Only when it is a valid session name, so the rejection event itself validates. */
	session: string | null
	/** The command's own trace id when it has a usable one, else a fresh one. */
	trace_id: string
}

export type ParseResult =
	| { ok: true; command: Command; hints: CommandHints }
	| { ok: false; hints: CommandHints; reason: string; errors: Record<string, unknown>[] }

/**
 * Turns a stream entry's fields into a validated Command, or says precisely why not.
 * All validators are compiled once, in the constructor.
 *
 * The schema is a `oneOf` over command types, whose raw errors list every branch's
 * complaint; when the entry names a known `type`, the errors reported are that branch's
 * alone, which is what a caller can act on.
 */
export class CommandParser {
	private readonly validateCommand: ValidateFunction<Command>
	private readonly branches = new Map<string, ValidateFunction>()
	private readonly validateKnownType: ValidateFunction
	private readonly isEventSession: ValidateFunction
	private readonly isEventTraceId: ValidateFunction

	constructor() {
		const ajv = createAjv()
		ajv.addSchema(commandSchema, 'command')
		ajv.addSchema(eventSchema, 'event')
		this.validateCommand = ajv.compile<Command>({ $ref: 'command' })
		for (const ref of commandSchema.oneOf.map(branch => branch.$ref)) {
			const name = ref.replace('#/$defs/', '')
			const defs = commandSchema.$defs as unknown as Record<string, { properties?: { type?: { const?: unknown } } }>
			const type = defs[name]?.properties?.type?.const
			if (typeof type !== 'string') throw new Error(`command.schema.json: ${ref} has no constant type`)
			this.branches.set(type, ajv.compile({ $ref: `command${ref}` }))
		}
		this.validateKnownType = ajv.compile({
			type: 'object',
			required: ['type'],
			properties: { type: { enum: [...this.branches.keys()] } },
		})
		// The rejection event has its own rules for session and trace_id; take them from the
		// event schema rather than restating them here.
		this.isEventSession = ajv.compile({ $ref: 'event#/$defs/CommandRejectedEvent/properties/session' })
		this.isEventTraceId = ajv.compile({ $ref: 'event#/$defs/CommandRejectedEvent/properties/trace_id' })
	}

	/** `fields` is the flat [name, value, ...] list XREADGROUP returns for an entry. */
	parse(fields: readonly string[] | null): ParseResult {
		const data = dataField(fields)
		if (data === undefined) {
			return this.reject(undefined, `the entry has no '${ENTRY_FIELD}' field`, [])
		}
		let body: unknown
		try {
			body = JSON.parse(data)
		} catch (err) {
			return this.reject(undefined, `'${ENTRY_FIELD}' is not valid JSON: ${(err as Error).message}`, [])
		}
		if (this.validateCommand(body)) {
			return { ok: true, command: body, hints: this.hints(body) }
		}
		const type = isRecord(body) ? body.type : undefined
		const branch = typeof type === 'string' ? this.branches.get(type) : undefined
		if (branch !== undefined) {
			branch(body)
			return this.reject(body, `the ${type} command does not match its schema`, plainErrors(branch.errors))
		}
		if (!this.validateKnownType(body)) {
			return this.reject(body, 'the entry is not a command envelope of a known type', plainErrors(this.validateKnownType.errors))
		}
		// Not reached while every oneOf branch is keyed by a constant type; if a schema
		// change ever breaks that, the rejection still carries the raw oneOf errors.
		return this.reject(body, 'the command does not match the command schema', plainErrors(this.validateCommand.errors))
	}

	private reject(body: unknown, reason: string, errors: Record<string, unknown>[]): ParseResult {
		return { ok: false, hints: this.hints(body), reason, errors }
	}

	private hints(body: unknown): CommandHints {
		const obj = isRecord(body) ? body : {}
		return {
			command_id: typeof obj.id === 'string' ? obj.id : null,
			command_type: typeof obj.type === 'string' ? obj.type : null,
			session: typeof obj.session === 'string' && this.isEventSession(obj.session) ? obj.session : null,
			trace_id: typeof obj.trace_id === 'string' && this.isEventTraceId(obj.trace_id) ? obj.trace_id : randomUUID(),
		}
	}
}

function dataField(fields: readonly string[] | null): string | undefined {
	if (fields === null) return undefined
	for (let i = 0; i + 1 < fields.length; i += 2) {
		if (fields[i] === ENTRY_FIELD) return fields[i + 1]
	}
	return undefined
}

function isRecord(value: unknown): value is Record<string, unknown> {
	return typeof value === 'object' && value !== null && !Array.isArray(value)
}
