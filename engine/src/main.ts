/**
 * The engine process: `node dist/src/main.js`, started by `wapp engine` (supervised) with
 * its configuration in env WAPP_ENGINE_CONFIG. Exit codes: 0 stopped on a signal, 1 runtime
 * failure (restart me), 3 configuration (restarting will not help).
 */
import { MasterKeyError } from './auth/crypto.js'
import { ConfigError, loadConfig } from './config.js'
import { guardConsole } from './console-guard.js'
import { Engine } from './engine.js'
import { ExitCode } from './exit-codes.js'
import type { EngineRuntimeConfig } from './generated/contracts.js'
import { createRootLogger, type Logger } from './log.js'
import { Messaging } from './messaging/index.js'
import { WaVersionModule } from './upstream/version.js'

/** Inside supervisor's and systemd's stop timeouts; past it the exit is forced (code 1). */
const SHUTDOWN_TIMEOUT_MS = 9_000

const startedAt = new Date()

let config: EngineRuntimeConfig
try {
	config = loadConfig()
} catch (err) {
	// No configured logger yet: log at the default level, still as JSON with service=engine.
	const log = createRootLogger({ level: 'info' })
	if (err instanceof ConfigError) {
		log.fatal({ errors: err.details }, `invalid engine configuration: ${err.message}`)
		process.exit(ExitCode.CONFIGURATION)
	}
	log.fatal({ err }, 'reading the engine configuration failed')
	process.exit(ExitCode.FAILURE)
}

const log: Logger = createRootLogger({ level: config.log_level, upstream: config.upstream })
guardConsole(log)
const engine = new Engine({ config, log, startedAt, modules: [new WaVersionModule(), new Messaging()] })

process.on('uncaughtException', err => {
	log.fatal({ err }, 'uncaught exception')
	process.exit(ExitCode.FAILURE)
})
process.on('unhandledRejection', reason => {
	log.fatal({ err: reason }, 'unhandled promise rejection')
	process.exit(ExitCode.FAILURE)
})

// First SIGTERM/SIGINT drains (stop reading, finish the batch in hand and in-flight sends,
// close the sockets without logging out, flush auth writes, stop the heartbeat, close
// Redis) and exits 0; a second signal, or a drain past the timeout, forces exit 1.
function onSignal(signal: NodeJS.Signals): void {
	if (engine.isStopping) {
		log.warn({ signal }, 'second signal: exiting without finishing the drain')
		process.exit(ExitCode.FAILURE)
	}
	log.info({ signal }, 'stopping: no new commands, finishing the ones in hand')
	setTimeout(() => {
		log.error({ timeout_ms: SHUTDOWN_TIMEOUT_MS }, 'shutdown took too long: forcing exit')
		process.exit(ExitCode.FAILURE)
	}, SHUTDOWN_TIMEOUT_MS).unref()
	engine.stop().then(
		() => {
			log.info('engine stopped')
			process.exit(ExitCode.OK)
		},
		(err: unknown) => {
			log.error({ err }, 'shutdown failed')
			process.exit(ExitCode.FAILURE)
		},
	)
}
process.on('SIGTERM', onSignal)
process.on('SIGINT', onSignal)

log.info({ node_version: process.version }, 'engine starting')
try {
	await engine.start()
} catch (err) {
	// A stop requested during start makes start fail on purpose; onSignal finishes the exit.
	if (!engine.isStopping) {
		// An unusable master key is configuration: restarting cannot fix it.
		const configuration = err instanceof MasterKeyError
		log.fatal({ err }, configuration ? `invalid engine configuration: ${(err as Error).message}` : 'engine failed to start')
		await engine.stop().catch(() => undefined)
		process.exit(configuration ? ExitCode.CONFIGURATION : ExitCode.FAILURE)
	}
}
