import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import { after, afterEach, before, beforeEach, describe, it } from 'node:test'
import { Redis } from 'ioredis'
import pino from 'pino'
import { CommandParser } from '../../src/command-parser.js'
import { CommandConsumer } from '../../src/consumer.js'
import { CommandDispatcher, CommandRejection, type CommandOf } from '../../src/dispatcher.js'
import { EventPublisher } from '../../src/events.js'
import { contractValidators, pendingCount, readEvents, sendTextCommand, startRedis, stopCommand, waitFor, type TestRedis } from './helpers.js'

const STREAM = 'wapp:cmd:engine:test'
const GROUP = 'engine'

/**
 * The consumer and dispatcher in this process against a real Redis, with handlers
 * registered the way the session multiplexer will register its own.
 */
describe('the command dispatcher behind the consumer', { timeout: 30_000 }, () => {
	let redis: TestRedis
	let reader: Redis
	let writer: Redis
	let dispatcher: CommandDispatcher
	let consumer: CommandConsumer
	let logs: Record<string, unknown>[]
	// Every connection opened, closed in after() even if a stop hung in afterEach.
	const connections: Redis[] = []
	const { event: isEvent, explain } = contractValidators()

	before(async () => {
		redis = await startRedis()
	}, { timeout: 10_000 })

	after(async () => {
		for (const c of connections) c.disconnect()
		await redis?.stop()
	}, { timeout: 10_000 })

	beforeEach(async () => {
		await redis.client.flushall()
		reader = new Redis({ path: redis.socket, maxRetriesPerRequest: null })
		writer = new Redis({ path: redis.socket })
		connections.push(reader, writer)
		logs = []
		const sink = new Writable({
			write(chunk: Buffer, _enc, done) {
				for (const line of chunk.toString('utf8').split('\n')) if (line.trim() !== '') logs.push(JSON.parse(line) as Record<string, unknown>)
				done()
			},
		})
		dispatcher = new CommandDispatcher()
		consumer = new CommandConsumer({
			reader,
			writer,
			stream: STREAM,
			group: GROUP,
			consumer: 'test-consumer',
			parser: new CommandParser(),
			dispatcher,
			events: new EventPublisher(writer, 'wapp:events'),
			log: pino({ level: 'debug' }, sink),
			blockMs: 30_000,
			claimIdleMs: 50,
			claimEveryMs: 3_600_000,
		})
	}, { timeout: 10_000 })

	afterEach(async () => {
		await consumer.stop()
		writer.disconnect()
	}, { timeout: 10_000 })

	async function addEntry(fields: string[]): Promise<string> {
		return (await redis.client.xadd(STREAM, '*', ...fields))!
	}

	it('hands a valid command to the handler registered for its type, then acks it without an event', async () => {
		const seen: CommandOf<'send_text'>[] = []
		dispatcher.register('send_text', async command => {
			seen.push(command)
		})
		await consumer.start()
		const command = sendTextCommand()
		const id = await addEntry(['data', JSON.stringify(command)])
		await waitFor('the handler call', () => (seen.length > 0 ? true : undefined))
		assert.deepEqual(seen, [command])
		await waitFor('the ack', async () => ((await pendingCount(redis.client, STREAM, GROUP)) === 0 ? true : undefined))
		assert.deepEqual(await readEvents(redis.client), [])
		const handled = logs.find(l => l.msg === 'command handled')
		assert.equal(handled?.trace_id, command.trace_id)
		assert.equal(handled?.entry_id, id)
	})

	it('turns a CommandRejection from a handler into a command.rejected event with its code, and acks', async () => {
		dispatcher.register('session_stop', async command => {
			throw new CommandRejection('UNKNOWN_SESSION', `no session ${command.session}`)
		})
		await consumer.start()
		const command = stopCommand({ session: 'ghost' })
		await addEntry(['data', JSON.stringify(command)])
		const [found] = await waitFor('the rejection', async () => {
			const events = await readEvents(redis.client)
			return events.length > 0 ? events : undefined
		})
		assert.ok(isEvent(found!.event), explain(isEvent))
		assert.equal(found!.event.trace_id, command.trace_id)
		assert.deepEqual(found!.event.payload, { command_id: command.id, command_type: 'session_stop', code: 'UNKNOWN_SESSION', reason: 'no session ghost', errors: [] })
		await waitFor('the ack', async () => ((await pendingCount(redis.client, STREAM, GROUP)) === 0 ? true : undefined))
	})

	it('leaves a command whose handler fails pending, and a reclaim hands it over again', async () => {
		let calls = 0
		dispatcher.register('session_stop', async () => {
			calls += 1
			if (calls === 1) throw new Error('the socket is not ready yet')
		})
		await consumer.start()
		const command = stopCommand()
		await addEntry(['data', JSON.stringify(command)])
		const failed = await waitFor('the failure log', () => logs.find(l => l.msg === 'command failed; left pending for a retry'))
		assert.equal(failed.trace_id, command.trace_id)
		assert.equal(await pendingCount(redis.client, STREAM, GROUP), 1)
		assert.deepEqual(await readEvents(redis.client), [])

		await new Promise(resolve => setTimeout(resolve, 100)) // past claimIdleMs
		assert.equal(await consumer.reclaim(), 1)
		assert.equal(calls, 2)
		assert.equal(await pendingCount(redis.client, STREAM, GROUP), 0)
	})

	it('recreates its consumer group when the stream is deleted under it, and keeps reading', async () => {
		const seen: string[] = []
		dispatcher.register('session_stop', async command => {
			seen.push(command.trace_id)
		})
		await consumer.start()
		await redis.client.del(STREAM)
		await waitFor('the group recreated', () => logs.find(l => l.msg === 'consumer group vanished; recreating it'))
		const command = stopCommand()
		await addEntry(['data', JSON.stringify(command)])
		await waitFor('the command handled', () => (seen.includes(command.trace_id) ? true : undefined))
	})

	it('refuses a second handler for the same type', () => {
		dispatcher.register('send_media', async () => undefined)
		assert.throws(() => dispatcher.register('send_media', async () => undefined), /already registered/)
	})

	it('stops promptly while blocked in XREADGROUP', async () => {
		await consumer.start()
		await new Promise(resolve => setTimeout(resolve, 100)) // let it block (BLOCK is 30 s here)
		const began = Date.now()
		await consumer.stop()
		assert.ok(Date.now() - began < 1000, `stop took ${Date.now() - began} ms`)
	})
})
