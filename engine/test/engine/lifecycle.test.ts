import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { engineConfig, startEngine, startRedis, stopCommand, type EngineChild, type TestRedis } from './helpers.js'

const KEY = 'wapp:engine:sandbox:heartbeat'
const STREAM = 'wapp:cmd:engine:sandbox'

describe('the engine process stops cleanly', { timeout: 30_000 }, () => {
	let redis: TestRedis
	const engines: EngineChild[] = []

	before(async () => {
		redis = await startRedis()
	}, { timeout: 10_000 })

	after(async () => {
		for (const engine of engines) await engine.kill()
		await redis?.stop()
	}, { timeout: 10_000 })

	for (const signal of ['SIGTERM', 'SIGINT'] as const) {
		it(`exits 0 promptly on ${signal}, stops the heartbeat and deletes nothing`, async () => {
			const engine = startEngine(engineConfig(redis.url, { heartbeat_interval_s: 0.2, heartbeat_ttl_s: 1.5 }))
			engines.push(engine)
			await engine.waitForLog('engine started', l => l.msg === 'engine started')
			// Leave a command unread-by-anyone-else in the stream: shutdown must not remove it.
			await redis.client.xadd(STREAM, '*', 'data', JSON.stringify(stopCommand()))
			await sleep(100)

			const sentAt = Date.now()
			engine.proc.kill(signal)
			const { code } = await engine.exited
			const took = Date.now() - sentAt
			assert.equal(code, 0)
			// The XREADGROUP blocks up to 5 s; a prompt exit proves the read was cut, not waited out.
			assert.ok(took < 2000, `exit took ${took} ms`)
			assert.ok(engine.logs.some(l => l.msg === 'engine stopped'))

			const last = await redis.client.get(KEY)
			assert.ok(last !== null, 'the heartbeat key was deleted instead of left to expire')
			await sleep(600)
			assert.equal(await redis.client.get(KEY), last, 'the heartbeat was written after exit')
			await sleep(1200)
			assert.equal(await redis.client.exists(KEY), 0, 'the heartbeat key outlived its TTL')
			assert.ok((await redis.client.xlen(STREAM)) > 0, 'the command stream was emptied')
			const groups = (await redis.client.xinfo('GROUPS', STREAM)) as unknown[][]
			assert.equal(groups.length, 1, 'the consumer group was removed')
			assert.deepEqual(engine.noise, [])
		})
	}

	it('exits 0 on SIGTERM even while start is still waiting for an unreachable Redis', async () => {
		const engine = startEngine(engineConfig('unix:///nonexistent/wapp/redis.sock'))
		engines.push(engine)
		await engine.waitForLog('a failed connection attempt', l => l.msg === 'redis connection error')
		const sentAt = Date.now()
		engine.proc.kill('SIGTERM')
		const { code } = await engine.exited
		assert.equal(code, 0)
		assert.ok(Date.now() - sentAt < 2000)
	})
})

describe('the engine refuses a bad configuration with exit code 3', { timeout: 30_000 }, () => {
	const valid = engineConfig('unix:///tmp/wapp-test/redis.sock')
	const cases: [string, string | undefined, RegExp][] = [
		['WAPP_ENGINE_CONFIG is unset', undefined, /WAPP_ENGINE_CONFIG is not set/],
		['it is not JSON', '{upstream: sandbox', /not valid JSON/],
		['a field is missing', JSON.stringify({ ...valid, redis_url: undefined }), /must have required property 'redis_url'/],
		['a field has a wrong value', JSON.stringify({ ...valid, log_level: 'verbose' }), /log_level must be equal to one of the allowed values/],
		['a field is unknown', JSON.stringify({ ...valid, colour: 'blue' }), /must NOT have additional properties/],
		['the TTL does not outlive the interval', JSON.stringify({ ...valid, heartbeat_interval_s: 5, heartbeat_ttl_s: 5 }), /heartbeat_ttl_s \(5\) must be longer/],
		['the Redis URL has a foreign scheme', JSON.stringify({ ...valid, redis_url: 'http://localhost:6379' }), /scheme must be unix:\/\/, redis:\/\/ or rediss:\/\//],
	]
	for (const [when, raw, message] of cases) {
		it(`when ${when}`, async () => {
			const engine = startEngine(raw)
			const { code } = await engine.exited
			assert.equal(code, 3)
			const fatal = engine.logs.find(l => l.level === 'fatal')
			assert.ok(fatal, `no fatal log line; stdout: ${JSON.stringify(engine.logs)} other: ${engine.noise.join('')}`)
			assert.match(fatal.msg, message)
			assert.equal(fatal.service, 'engine')
		})
	}
})
