import type { EngineRuntimeConfig } from './generated/contracts.js'
import templates from './generated/redis-keys.json' with { type: 'json' }

/** Fill a `{name}` key template from redis-keys.json; a placeholder left unfilled is a bug. */
export function fillKey(template: string, values: Readonly<Record<string, string>>): string {
	const out = template.replace(/\{(\w+)\}/g, (whole, name: string) => values[name] ?? whole)
	if (/\{\w+\}/.test(out)) throw new Error(`redis key template ${template} needs ${Object.keys(values).join(', ') || 'no values'} and more`)
	return out
}

/** The Redis names one engine process uses, all derived from the exported templates. */
export interface EngineKeys {
	heartbeat: string
	commandStream: string
	consumerGroup: string
	eventStream: string
	/** The WhatsApp Web version last fetched (upstream/version.ts). */
	waVersion: string
}

export function engineKeys(upstream: EngineRuntimeConfig['upstream']): EngineKeys {
	return {
		heartbeat: fillKey(templates.engine_heartbeat_key, { upstream }),
		commandStream: fillKey(templates.engine_commands_stream, { upstream }),
		consumerGroup: templates.engine_consumer_group,
		eventStream: templates.events_stream,
		waVersion: fillKey(templates.engine_wa_version_key, { upstream }),
	}
}

export { templates as redisKeyTemplates }
