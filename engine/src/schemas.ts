import { Ajv2020, type ErrorObject } from 'ajv/dist/2020.js'
import addFormatsModule from 'ajv-formats'

// ajv-formats is CommonJS with `exports.default`; under NodeNext the default import is the
// whole module object, whose `default` is the plugin.
const addFormats = addFormatsModule.default

/**
 * One Ajv for the contracts Python exports. Pydantic emits draft 2020-12 (`$defs`), hence
 * Ajv2020; `format: uuid/date-time` needs ajv-formats. Build it once at start and compile
 * every validator up front: compiling is the expensive part, validating is cheap.
 */
export function createAjv(): Ajv2020 {
	const ajv = new Ajv2020({ allErrors: false, strict: true })
	addFormats(ajv)
	return ajv
}

/** Ajv's error objects, reduced to plain JSON for an event payload. */
export function plainErrors(errors: readonly ErrorObject[] | null | undefined): Record<string, unknown>[] {
	return (errors ?? []).map(e => ({
		instancePath: e.instancePath,
		schemaPath: e.schemaPath,
		keyword: e.keyword,
		params: e.params,
		message: e.message ?? null,
	}))
}

export type { ErrorObject }
