import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { contractValidators, engineConfig, startEngine, startRedis, waitFor, type EngineChild, type TestRedis } from './helpers.js'

const KEY = 'wapp:engine:sandbox:heartbeat'

describe('the engine heartbeat', { timeout: 30_000 }, () => {
	let redis: TestRedis
	let engine: EngineChild
	const { heartbeat: isHeartbeat, explain } = contractValidators()

	before(async () => {
		redis = await startRedis()
	}, { timeout: 10_000 })

	after(async () => {
		await engine?.kill()
		await redis?.stop()
	}, { timeout: 10_000 })

	it('appears at start with a TTL, matches the heartbeat schema and is refreshed every interval', async () => {
		engine = startEngine(engineConfig(redis.url, { heartbeat_interval_s: 0.3, heartbeat_ttl_s: 3 }))
		// The first heartbeat precedes everything else, so it is there by "engine started".
		await engine.waitForLog('engine started', l => l.msg === 'engine started')
		const raw = await redis.client.get(KEY)
		assert.ok(raw !== null, 'no heartbeat key')
		const first = JSON.parse(raw) as Record<string, unknown>
		assert.ok(isHeartbeat(first), `heartbeat does not match heartbeat.schema.json: ${explain(isHeartbeat)}`)
		assert.equal(first.pid, engine.pid)
		assert.equal(first.upstream, 'sandbox')
		assert.equal(first.sessions, 0)
		assert.equal(first.node_version, `v${process.versions.node}`)
		assert.ok((first.rss_bytes as number) > 0 && (first.heap_used_bytes as number) > 0)
		// The per-session truth the api overlays (none held yet) and idle handshake slots.
		assert.deepEqual(first.session_states, {})
		assert.deepEqual(first.handshakes, { limit: 8, active: 0, waiting: 0, oldest_active_s: 0, oldest_waiting_s: 0 })
		assert.ok(Math.abs(Date.parse(first.at as string) - Date.now()) < 5000, `at ${String(first.at)} is not now`)
		const ttl = await redis.client.pttl(KEY)
		assert.ok(ttl > 0 && ttl <= 3000, `PTTL ${ttl} is not within the configured 3 s`)

		const refreshed = await waitFor('a refreshed heartbeat', async () => {
			const value = JSON.parse((await redis.client.get(KEY)) ?? 'null') as Record<string, unknown> | null
			return value !== null && (value.uptime_s as number) > (first.uptime_s as number) ? value : undefined
		})
		assert.ok(isHeartbeat(refreshed), explain(isHeartbeat))
		assert.equal(refreshed.started_at, first.started_at)
		assert.ok((await redis.client.pttl(KEY)) > 2000, 'the refresh did not renew the TTL')
	})
})
