import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import pino from 'pino'
import { registerBallast } from '../../src/ballast.js'
import { CommandDispatcher } from '../../src/dispatcher.js'
import type { EngineBallastCommand } from '../../src/generated/contracts.js'
import { engineConfig } from './helpers.js'

const MB = 1024 * 1024
const ctx = { log: pino({ level: 'silent' }), stream: 'wapp:cmd:engine:test', entryId: '1-0' }

function ballast(mb: number): EngineBallastCommand {
	return { id: '00000000-0000-4000-8000-000000000001', version: 1, timestamp: new Date().toISOString(), session: null, trace_id: 't', type: 'engine_ballast', payload: { mb } }
}

describe('the sandbox-only ballast command', () => {
	it('makes a sandbox engine hold N MB, resident', async () => {
		const dispatcher = new CommandDispatcher()
		const held = registerBallast(dispatcher, engineConfig('redis://unused', { upstream: 'sandbox' }), pino({ level: 'silent' }))
		const before = process.memoryUsage().rss
		assert.deepEqual(await dispatcher.dispatch(ballast(64), ctx), { kind: 'handled' })
		assert.equal(held.length, 1)
		assert.equal(held[0]?.length, 64 * MB)
		// Filled pages are resident: the RSS the watchdog reads grew by (nearly) all of it.
		assert.ok(process.memoryUsage().rss - before > 56 * MB, `rss grew only ${(process.memoryUsage().rss - before) / MB} MB`)
	})

	it('is refused by a whatsapp engine', async () => {
		const dispatcher = new CommandDispatcher()
		const held = registerBallast(dispatcher, engineConfig('redis://unused', { upstream: 'whatsapp' }), pino({ level: 'silent' }))
		const outcome = await dispatcher.dispatch(ballast(64), ctx)
		assert.equal(outcome.kind, 'rejected')
		assert.equal(outcome.kind === 'rejected' && outcome.code, 'UNSUPPORTED_COMMAND')
		assert.equal(held.length, 0)
	})
})
