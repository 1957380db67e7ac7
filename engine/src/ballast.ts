import type { CommandDispatcher } from './dispatcher.js'
import { CommandRejection } from './dispatcher.js'
import type { EngineRuntimeConfig } from './generated/contracts.js'
import type { Logger } from './log.js'

const MB = 1024 * 1024

/**
 * `engine_ballast` (sandbox only): allocate N MB and hold them until the process exits, so
 * a test or the recycle benchmark can push a sandbox engine over the watchdog's memory
 * limit while messages flow. The buffers are filled, not just reserved, so every page is
 * resident and counts in the RSS the watchdog measures. A whatsapp engine refuses it: a
 * production process never grows on command.
 */
export function registerBallast(dispatcher: CommandDispatcher, config: EngineRuntimeConfig, log: Logger): Buffer[] {
	const held: Buffer[] = []
	dispatcher.register('engine_ballast', async command => {
		if (config.upstream !== 'sandbox') {
			throw new CommandRejection('UNSUPPORTED_COMMAND', 'engine_ballast is a sandbox-only test command')
		}
		held.push(Buffer.alloc(command.payload.mb * MB, 0x5a))
		const total = held.reduce((sum, b) => sum + b.length, 0) / MB
		log.warn({ ballast_mb: command.payload.mb, ballast_total_mb: total, rss_mb: Math.round(process.memoryUsage().rss / MB) }, 'ballast allocated (sandbox test command)')
	})
	return held
}
