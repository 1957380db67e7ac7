import pino, { type Logger } from 'pino'

/** One root logger for the simulator; modules take `.child({ mod })` so lines say where they came from. */
export function makeLogger(level: string = process.env.SIM_LOG_LEVEL ?? 'info'): Logger {
	return pino({ level, base: { svc: 'wa-sim' } })
}

export type { Logger }
