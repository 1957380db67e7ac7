import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import {
	contractValidators,
	engineConfig,
	pendingCount,
	readEvents,
	sendTextCommand,
	startEngine,
	startRedis,
	stopCommand,
	waitFor,
	type EngineChild,
	type StreamEvent,
	type TestRedis,
} from './helpers.js'

const STREAM = 'wapp:cmd:engine:sandbox'
const GROUP = 'engine'
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

describe('the engine answers commands on its control stream', { timeout: 30_000 }, () => {
	let redis: TestRedis
	let engine: EngineChild
	const { event: isEvent, explain } = contractValidators()

	before(async () => {
		redis = await startRedis()
		engine = startEngine(engineConfig(redis.url))
		await engine.waitForLog('engine started', l => l.msg === 'engine started')
	}, { timeout: 10_000 })

	after(async () => {
		await engine?.kill()
		await redis?.stop()
	}, { timeout: 10_000 })

	/** XADD one entry, wait for the engine's rejection log of it, return that event. */
	async function rejectionOf(...fields: string[]): Promise<{ entryId: string; event: StreamEvent['event']; log: Record<string, unknown> }> {
		const entryId = (await redis.client.xadd(STREAM, '*', ...fields))!
		const log = await engine.waitForLog(`rejection of ${entryId}`, l => l.entry_id === entryId && l.msg === 'command rejected')
		const found = await waitFor(`event ${String(log.event_id)}`, async () => (await readEvents(redis.client)).find(e => e.event.id === log.event_id))
		assert.ok(isEvent(found.event), `the rejection does not match event.schema.json: ${explain(isEvent)}`)
		return { entryId, event: found.event, log }
	}

	async function assertAcked(entryId: string): Promise<void> {
		const pending = (await redis.client.xpending(STREAM, GROUP, '-', '+', 100)) as [string, ...unknown[]][]
		assert.deepEqual(pending.filter(([id]) => id === entryId), [], `${entryId} is still pending`)
	}

	it('rejects an entry whose data is not JSON, with a fresh trace id, and acks it', async () => {
		const { entryId, event, log } = await rejectionOf('data', '{"type": "send_text", ')
		assert.equal(event.type, 'command.rejected')
		assert.equal(event.session, null)
		assert.match(event.trace_id, UUID)
		assert.equal(log.trace_id, event.trace_id)
		assert.deepEqual(
			{ ...event.payload, reason: undefined },
			{ command_id: null, command_type: null, code: 'INVALID_COMMAND', reason: undefined, errors: [] },
		)
		assert.match(String(event.payload.reason), /not valid JSON/)
		await assertAcked(entryId)
	})

	it('rejects an entry without a data field and acks it', async () => {
		const { entryId, event } = await rejectionOf('payload', JSON.stringify(stopCommand()))
		assert.equal(event.payload.code, 'INVALID_COMMAND')
		assert.match(String(event.payload.reason), /no 'data' field/)
		await assertAcked(entryId)
	})

	it('rejects a command that fails its schema, naming the failing field, with the command trace id', async () => {
		const command = sendTextCommand()
		const broken = { ...command, payload: { ...command.payload, to: 'not a number' } }
		const { entryId, event, log } = await rejectionOf('data', JSON.stringify(broken))
		assert.equal(event.trace_id, command.trace_id)
		assert.equal(log.trace_id, command.trace_id)
		assert.equal(event.session, 'sales-1')
		assert.equal(event.payload.command_id, command.id)
		assert.equal(event.payload.command_type, 'send_text')
		assert.equal(event.payload.code, 'INVALID_COMMAND')
		const errors = event.payload.errors as { instancePath: string; keyword: string }[]
		assert.deepEqual(errors.map(e => [e.instancePath, e.keyword]), [['/payload/to', 'pattern']])
		await assertAcked(entryId)
	})

	it('rejects a command of a type the schema does not know', async () => {
		const command = { ...stopCommand(), type: 'format_disk' }
		const { entryId, event } = await rejectionOf('data', JSON.stringify(command))
		assert.equal(event.trace_id, command.trace_id)
		assert.equal(event.payload.command_type, 'format_disk')
		assert.equal(event.payload.code, 'INVALID_COMMAND')
		const errors = event.payload.errors as { instancePath: string; keyword: string }[]
		assert.deepEqual(errors.map(e => [e.instancePath, e.keyword]), [['/type', 'enum']])
		await assertAcked(entryId)
	})

	it('does not echo an unusable trace id or session name into the rejection', async () => {
		const command = { ...stopCommand(), session: 'Not A Session!', trace_id: 'x'.repeat(65) }
		const { event } = await rejectionOf('data', JSON.stringify(command))
		assert.equal(event.session, null)
		assert.match(event.trace_id, UUID)
	})

	it('rejects a valid command that no handler takes as UNSUPPORTED_COMMAND, with its trace id, and acks it', async () => {
		const command = sendTextCommand({ session: 'support-7' })
		const { entryId, event, log } = await rejectionOf('data', JSON.stringify(command))
		assert.equal(event.trace_id, command.trace_id)
		assert.equal(event.session, 'support-7')
		assert.equal(log.trace_id, command.trace_id)
		assert.equal(log.session, 'support-7')
		assert.equal(event.payload.command_id, command.id)
		assert.equal(event.payload.command_type, 'send_text')
		assert.equal(event.payload.code, 'UNSUPPORTED_COMMAND')
		assert.deepEqual(event.payload.errors, [])
		await assertAcked(entryId)
	})

	it('leaves nothing pending and writes only valid events', async () => {
		assert.equal(await pendingCount(redis.client, STREAM, GROUP), 0)
		const events = await readEvents(redis.client)
		assert.ok(events.length >= 6)
		for (const { event } of events) assert.ok(isEvent(event), explain(isEvent))
		assert.deepEqual(engine.noise, [])
	})
})

describe('at start the engine takes over what a dead engine left pending', { timeout: 30_000 }, () => {
	let redis: TestRedis
	let engine: EngineChild | undefined

	before(async () => {
		redis = await startRedis()
	}, { timeout: 10_000 })

	after(async () => {
		await engine?.kill()
		await redis?.stop()
	}, { timeout: 10_000 })

	it('claims entries idle past the timeout and answers them, and leaves recently read ones alone', async () => {
		const { client } = redis
		await client.xgroup('CREATE', STREAM, GROUP, '0', 'MKSTREAM')
		const stale = stopCommand()
		const fresh = stopCommand()
		const staleId = (await client.xadd(STREAM, '*', 'data', JSON.stringify(stale)))!
		const freshId = (await client.xadd(STREAM, '*', 'data', JSON.stringify(fresh)))!
		// A consumer reads both and dies before acking; one entry has been idle for an hour.
		await client.xreadgroup('GROUP', GROUP, 'dead-engine', 'COUNT', 10, 'STREAMS', STREAM, '>')
		await client.xclaim(STREAM, GROUP, 'dead-engine', 0, staleId, 'IDLE', 3_600_000)

		engine = startEngine(engineConfig(redis.url))
		await engine.waitForLog('engine started', l => l.msg === 'engine started')
		const rejection = await engine.waitForLog('the stale command answered', l => l.entry_id === staleId && l.msg === 'command rejected')
		assert.equal(rejection.trace_id, stale.trace_id)
		// session_stop has a handler (the session manager's); this engine holds no session sales-1.
		assert.equal(rejection.code, 'UNKNOWN_SESSION')

		const pending = (await client.xpending(STREAM, GROUP, '-', '+', 10)) as [string, string, number, number][]
		assert.deepEqual(pending.map(([id, consumer]) => [id, consumer]), [[freshId, 'dead-engine']])
		const events = await readEvents(client)
		assert.deepEqual(events.map(e => e.event.trace_id), [stale.trace_id])
	})
})
