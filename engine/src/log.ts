import pino, { type Logger } from 'pino'
import type { EngineRuntimeConfig } from './generated/contracts.js'

// The config speaks Python's level names; pino calls "warning" "warn".
const PINO_LEVEL: Record<EngineRuntimeConfig['log_level'], pino.Level> = {
	debug: 'debug',
	info: 'info',
	warning: 'warn',
	error: 'error',
}

export interface RootLoggerOptions {
	level: EngineRuntimeConfig['log_level']
	/** Unknown when the configuration itself failed to load. */
	upstream?: EngineRuntimeConfig['upstream']
	destination?: pino.DestinationStream
}

/**
 * The process's one root logger: JSON lines on stdout (supervisor/journald collect them),
 * level names as text so `wapp logs` stays readable, ISO timestamps. Every concern takes a
 * `.child({ component })`, every command a `.child({ trace_id, ... })`, and every session
 * a `.child({ session })` handed to its Baileys socket, so each line names its session.
 */
export function createRootLogger(opts: RootLoggerOptions): Logger {
	const base: Record<string, unknown> = { service: 'engine', pid: process.pid }
	if (opts.upstream !== undefined) base.upstream = opts.upstream
	const options: pino.LoggerOptions = {
		level: PINO_LEVEL[opts.level],
		base,
		timestamp: pino.stdTimeFunctions.isoTime,
		formatters: { level: label => ({ level: label }) },
	}
	return opts.destination ? pino(options, opts.destination) : pino(options)
}

export type { Logger }
