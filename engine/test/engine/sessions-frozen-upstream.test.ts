/**
 * A session stopped, logged out or restarted mid-handshake gives its
 * handshake slot back. With the simulator frozen (SIGSTOP), 8 sessions take all 8 slots;
 * every one of them leaves by stop, logout or restart-then-stop; the slots are free again
 * and, once the simulator resumes, a new session connects. Before the fix each of these
 * kept its slot forever and nothing could ever connect again.
 */
import assert from 'node:assert/strict'
import { after as afterAll, before, describe, it } from 'node:test'
import type { EngineHeartbeat } from '../../src/generated/contracts.js'
import { startEngine, startRedis, waitFor, type EngineChild, type TestRedis } from './helpers.js'
import { lastEventId, lifecycleCommand, send, startCommand, waitState } from './sessions-harness.js'
import { simProcessConfig, startSimProcess, type SimProcess } from './sessions-sim-process.js'

const HEARTBEAT = 'wapp:engine:sandbox:heartbeat'
const names = Array.from({ length: 8 }, (_, i) => `h${i}`)
const phoneOf = (i: number) => `4917100000${String(i).padStart(2, '0')}`

describe('handshake slots with a frozen upstream', { timeout: 120_000 }, () => {
	let redis: TestRedis
	let sim: SimProcess
	let engine: EngineChild

	before(async () => {
		redis = await startRedis()
		sim = await startSimProcess()
		engine = startEngine(simProcessConfig(redis.url, sim))
		await engine.waitForLog('engine started', l => l.msg === 'engine started', 10_000)
	}, { timeout: 40_000 })

	afterAll(async () => {
		await engine?.kill()
		await sim?.stop()
		await redis?.stop()
	}, { timeout: 20_000 })

	const heartbeat = async () => JSON.parse((await redis.client.get(HEARTBEAT)) ?? 'null') as EngineHeartbeat | null
	/** The first heartbeat written after now that satisfies `match`. */
	const nextBeat = (what: string, match: (b: EngineHeartbeat) => boolean, timeoutMs = 10_000) => {
		const since = Date.now()
		return waitFor(what, async () => {
			const b = await heartbeat()
			return b && Date.parse(b.at!) > since && match(b) ? b : undefined
		}, timeoutMs)
	}

	it('frees every slot of sessions that leave mid-handshake, and a new session connects after resume', async () => {
		sim.freeze()
		for (const [i, name] of names.entries()) await send(redis.client, startCommand(name, { phone: phoneOf(i) }))
		for (const name of names) await waitState(redis.client, name, 'connecting')
		const busy = await nextBeat('all 8 slots held', b => b.handshakes?.active === 8)
		assert.deepEqual(Object.values(busy.session_states), names.map(() => 'connecting'))

		// Every way out of a handshake: stop, logout, and restart (a new attempt) then stop.
		const mark = await lastEventId(redis.client)
		for (const name of names.slice(0, 4)) await send(redis.client, lifecycleCommand('session_stop', name))
		for (const name of names.slice(4, 6)) await send(redis.client, lifecycleCommand('session_logout', name))
		for (const name of names.slice(6)) await send(redis.client, lifecycleCommand('session_restart', name))
		for (const name of names.slice(0, 4)) await waitState(redis.client, name, 'stopped', mark)
		for (const name of names.slice(4, 6)) await waitState(redis.client, name, 'logged_out', mark)
		// The restarted two handshake again (a repeated `connecting` is not re-published):
		// they, and only they, hold slots now.
		await nextBeat('only the restarted sessions hold slots', b => b.handshakes?.active === 2 && Object.keys(b.session_states).join() === 'h6,h7')
		const restartMark = await lastEventId(redis.client)
		for (const name of names.slice(6)) await send(redis.client, lifecycleCommand('session_stop', name))
		for (const name of names.slice(6)) await waitState(redis.client, name, 'stopped', restartMark)

		const idle = await nextBeat('no slot held, nobody waiting', b => b.handshakes?.active === 0 && b.handshakes.waiting === 0)
		assert.deepEqual(idle.session_states, {}, 'the engine holds none of them any more')

		sim.resume()
		await send(redis.client, startCommand('fresh', { phone: '491710000099' }))
		await waitState(redis.client, 'fresh', 'connected', mark, 40_000)
		const after = await nextBeat('the new session held as connected', b => b.session_states.fresh === 'connected')
		assert.deepEqual(after.session_states, { fresh: 'connected' })
		assert.equal(after.handshakes?.active, 0)
	})
})
