import type { Logger } from './log.js'

/**
 * libsignal writes to the console, with whole session records as arguments ("Closing
 * session: SessionEntry { ... privKey ... rootKey ... }"): private keys in plain text on
 * stdout, and lines that are not JSON among the engine's logs. Route every console call
 * through pino instead, keeping only a leading string message and never the objects.
 */
export function guardConsole(log: Logger): void {
	const clog = log.child({ component: 'console' })
	const text = (args: unknown[]): string => (typeof args[0] === 'string' ? args[0].slice(0, 200) : 'console output (arguments withheld)')
	const quiet = (...args: unknown[]) => clog.debug({ args_withheld: args.length - 1 }, text(args))
	const loud = (...args: unknown[]) => clog.warn({ args_withheld: args.length - 1 }, text(args))
	console.log = quiet
	console.info = quiet
	console.debug = quiet
	console.trace = quiet
	console.warn = loud
	console.error = loud
}
