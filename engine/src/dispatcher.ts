import type { Command } from './generated/contracts.js'
import type { RejectionCode } from './events.js'
import type { Logger } from './log.js'

export type CommandType = Command['type']
export type CommandOf<T extends CommandType> = Extract<Command, { type: T }>

export interface CommandContext {
	/** Already carries trace_id, command id and type, session and the stream entry id. */
	log: Logger
	/** The stream and entry the command came from. */
	stream: string
	entryId: string
}

/**
 * Handles one validated command. Resolving means done: the entry is acked. Throwing a
 * CommandRejection means the command cannot be carried out as asked: a `command.rejected`
 * event with that code, then ack. Any other error leaves the entry pending, to be
 * reclaimed (XAUTOCLAIM) and tried again.
 */
export type CommandHandler<T extends CommandType> = (command: CommandOf<T>, ctx: CommandContext) => Promise<void>

type AnyHandler = (command: Command, ctx: CommandContext) => Promise<void>

export class CommandRejection extends Error {
	constructor(
		readonly code: RejectionCode,
		reason: string,
	) {
		super(reason)
		this.name = 'CommandRejection'
	}
}

export type DispatchOutcome = { kind: 'handled' } | { kind: 'rejected'; code: RejectionCode; reason: string }

/**
 * Command type -> handler. The engine's modules (sessions, messaging, ballast) register
 * their handlers here; a valid command whose type has none is rejected as
 * UNSUPPORTED_COMMAND rather than silently acked, so a sender learns it went nowhere.
 */
export class CommandDispatcher {
	// Keyed by type, so a handler is only ever called with the command type it registered
	// for; the map itself cannot express that pairing, hence the widened value type.
	private readonly handlers = new Map<CommandType, AnyHandler>()

	register<T extends CommandType>(type: T, handler: CommandHandler<T>): this {
		if (this.handlers.has(type)) throw new Error(`a handler for ${type} is already registered`)
		this.handlers.set(type, handler as unknown as AnyHandler)
		return this
	}

	has(type: CommandType): boolean {
		return this.handlers.has(type)
	}

	async dispatch(command: Command, ctx: CommandContext): Promise<DispatchOutcome> {
		const handler = this.handlers.get(command.type)
		if (handler === undefined) {
			return { kind: 'rejected', code: 'UNSUPPORTED_COMMAND', reason: `this engine has no handler for ${command.type} commands` }
		}
		try {
			await handler(command, ctx)
			return { kind: 'handled' }
		} catch (err) {
			if (err instanceof CommandRejection) return { kind: 'rejected', code: err.code, reason: err.message }
			throw err
		}
	}
}
