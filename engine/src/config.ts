import type { EngineRuntimeConfig } from './generated/contracts.js'
import configSchema from './generated/engine-config.schema.json' with { type: 'json' }
import { redisOptionsFromUrl } from './redis-url.js'
import { createAjv } from './schemas.js'

export const CONFIG_ENV = 'WAPP_ENGINE_CONFIG'

/** The configuration cannot be used; main exits with ExitCode.CONFIGURATION. */
export class ConfigError extends Error {
	constructor(
		message: string,
		readonly details: unknown[] = [],
	) {
		super(message)
		this.name = 'ConfigError'
	}
}

/**
 * Read `WAPP_ENGINE_CONFIG` (JSON of EngineRuntimeConfig, written by `wapp engine` from
 * Settings) and validate it once against the exported schema. The engine never reads
 * TOML or its own env vars: Python owns configuration, this only checks what it was given.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): EngineRuntimeConfig {
	const raw = env[CONFIG_ENV]
	if (raw === undefined || raw.trim() === '') {
		throw new ConfigError(`${CONFIG_ENV} is not set; start the engine with \`wapp engine\`, which builds it from the settings`)
	}
	let parsed: unknown
	try {
		parsed = JSON.parse(raw)
	} catch (err) {
		throw new ConfigError(`${CONFIG_ENV} is not valid JSON: ${(err as Error).message}`)
	}
	const ajv = createAjv()
	const validate = ajv.compile<EngineRuntimeConfig>(configSchema)
	if (!validate(parsed)) {
		const errors = validate.errors ?? []
		throw new ConfigError(`${CONFIG_ENV} is not a valid EngineRuntimeConfig: ${ajv.errorsText(errors, { dataVar: 'config' })}`, errors)
	}
	// Checks the schema cannot express; the Python Settings enforce the same.
	if (parsed.heartbeat_ttl_s <= parsed.heartbeat_interval_s) {
		throw new ConfigError(`${CONFIG_ENV}: heartbeat_ttl_s (${parsed.heartbeat_ttl_s}) must be longer than heartbeat_interval_s (${parsed.heartbeat_interval_s})`)
	}
	try {
		redisOptionsFromUrl(parsed.redis_url)
	} catch (err) {
		throw new ConfigError(`${CONFIG_ENV}: ${(err as Error).message}`)
	}
	return parsed
}
