/**
 * The session manager against the simulator, through Redis only (as the api drives it):
 * a sandbox engine pairs sessions by itself, reconnects, logs out, stops, restarts from
 * its stored auth, and shuts down without logging anyone out.
 */
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { after as afterAll, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import type { EngineRuntimeConfig } from '../../src/generated/contracts.js'
import type { ControlServer } from '../../sim/control.js'
import type { Simulator } from '../../sim/sim.js'
import { startControl, startSim } from '../sim/helpers.js'
import { contractValidators, pendingCount, readEvents, sendTextCommand, startEngine, startRedis, waitFor, type EngineChild, type TestRedis } from './helpers.js'
import { CONTROL_STREAM, REGISTRY, after, lastEventId, lifecycleCommand, sandboxConfig, send, startCommand, stateEvents, waitState } from './sessions-harness.js'

const N = 20
const HANDSHAKES = 2
const names = Array.from({ length: N }, (_, i) => `s${i}`)
const phoneOf = (i: number) => `4917000000${String(i).padStart(2, '0')}`

describe('a sandbox engine runs many sessions', { timeout: 240_000 }, () => {
	let redis: TestRedis
	let sim: Simulator
	let control: ControlServer
	let engine: EngineChild
	let config: EngineRuntimeConfig
	const engines: EngineChild[] = []
	const { event: isEvent, explain } = contractValidators()

	before(async () => {
		redis = await startRedis()
		sim = await startSim()
		control = await startControl(sim)
		config = sandboxConfig(redis.url, sim, control)
		engine = startEngine(config)
		engines.push(engine)
		await engine.waitForLog('engine started', l => l.msg === 'engine started', 10_000)
	}, { timeout: 30_000 })

	afterAll(async () => {
		for (const e of engines) await e.kill()
		await control?.close()
		await sim?.close()
		await redis?.stop()
	}, { timeout: 20_000 })

	it('pairs 20 sessions by themselves (the simulated phone scans each QR) and reports them connected', async () => {
		for (const [i, name] of names.entries()) {
			// One session pairs by code instead: the simulated phone enters it.
			await send(redis.client, startCommand(name, { phone: phoneOf(i), push_name: `Shop ${i}`, pairing: i === 7 ? 'code' : 'qr' }))
		}
		for (const name of names) await waitState(redis.client, name, 'connected', '0-0', 60_000)

		for (const [i, name] of names.entries()) {
			const events = await stateEvents(redis.client, name)
			const states = events.map(e => e.payload.state)
			assert.deepEqual(states.slice(0, 2), ['created', 'connecting'], `${name}: ${states.join(',')}`)
			const connected = events.find(e => e.payload.state === 'connected')!
			assert.equal(connected.payload.me?.jid, `${phoneOf(i)}@s.whatsapp.net`)
			assert.match(connected.payload.me?.lid ?? '', /@lid$/)
			if (i === 7) {
				const code = events.find(e => e.payload.state === 'pairing_code')
				assert.match(code?.payload.pairing_code ?? '', /^[A-Z0-9]{8}$/)
				assert.ok(!states.includes('qr'))
			} else {
				const qr = events.find(e => e.payload.state === 'qr')
				assert.ok(qr?.payload.qr?.includes(','), 'the QR string is in the event')
				const expires = Date.parse(qr!.payload.qr_expires_at!)
				assert.ok(expires > Date.parse(new Date().toISOString()) - 60_000)
			}
			assert.ok(events.every(e => e.trace_id.startsWith('trace-')), 'state events carry the start command trace id')
		}
		assert.equal(await redis.client.hlen(REGISTRY), N)
		const beat = await waitFor('a heartbeat counting every session', async () => {
			const v = JSON.parse((await redis.client.get('wapp:engine:sandbox:heartbeat')) ?? '{}') as { sessions?: number }
			return v.sessions === N ? v : undefined
		})
		assert.equal(beat.sessions, N)
		for (const { event } of await readEvents(redis.client)) assert.ok(isEvent(event), explain(isEvent))
	})

	it('every one of the 20 sessions sends a text to a simulated contact and receives one back', async () => {
		const contact = '15559000'
		const control_ = async (path: string, body?: unknown) => {
			const res = await fetch(`${control.url}${path}`, body === undefined ? {} : { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
			assert.ok(res.ok, await res.clone().text())
			return ((await res.json()) as { data: unknown }).data
		}
		await control_('/contacts', { phone: contact, pushName: 'Carol' })
		for (const name of names) {
			const waId = `3EB0${randomUUID().replace(/-/g, '').slice(0, 18).toUpperCase()}`
			const command = sendTextCommand({ session: name, payload: { message_id: randomUUID(), wa_id: waId, to: contact, text: `hello from ${name}`, quoted: null, mentions: [] } })
			await redis.client.xadd(`wapp:cmd:${name}`, '*', 'data', JSON.stringify(command))
		}
		const received = await waitFor('the contact received a text from every session', async () => {
			const items = (await control_(`/contacts/${contact}/received`)) as Array<{ text?: string }>
			const texts = new Set(items.map(m => m.text))
			return names.every(n => texts.has(`hello from ${n}`)) ? items : undefined
		}, 60_000)
		assert.equal(received.length, N, 'each text arrived exactly once')
		for (const [i, name] of names.entries()) await control_(`/contacts/${contact}/messages`, { to: phoneOf(i), text: `hi ${name}` })
		await waitFor('every session received the contact\'s text', async () => {
			const got = new Set(
				(await readEvents(redis.client))
					.filter(e => e.event.type === 'message.received')
					.map(e => `${e.event.session}:${(e.event.payload as { text?: string | null }).text}`),
			)
			return names.every(n => got.has(`${n}:hi ${n}`)) ? true : undefined
		}, 60_000)
	})

	async function kick(i: number, kind: string): Promise<void> {
		const res = await fetch(`${control.url}/faults/kick`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ phone: phoneOf(i), kind }) })
		assert.equal(res.status, 200, await res.text())
	}

	async function statesSince(name: string, since: string): Promise<string[]> {
		return (await stateEvents(redis.client, name)).filter(e => after(e.entryId, since)).map(e => e.payload.state)
	}

	async function rejection(commandId: string) {
		return waitFor(`rejection of ${commandId}`, async () => (await readEvents(redis.client)).find(e => e.event.type === 'command.rejected' && e.event.payload.command_id === commandId)?.event)
	}

	it('rejects lifecycle commands for sessions it does not hold, and a session of another upstream', async () => {
		for (const type of ['session_stop', 'session_restart', 'session_logout'] as const) {
			const cmd = lifecycleCommand(type, 'ghost')
			await send(redis.client, cmd)
			const event = await rejection(cmd.id)
			assert.equal(event.payload.code, 'UNKNOWN_SESSION')
			assert.equal(event.session, 'ghost')
			assert.equal(event.trace_id, cmd.trace_id)
		}
		const wrong = startCommand('elsewhere', { upstream: 'whatsapp' })
		await send(redis.client, wrong)
		assert.equal((await rejection(wrong.id)).payload.code, 'INVALID_COMMAND')
		assert.equal(await redis.client.hexists(REGISTRY, 'elsewhere'), 0)
		await waitFor('every control command acked', async () => ((await pendingCount(redis.client, CONTROL_STREAM, 'engine')) === 0 ? true : undefined))
	})

	it('reconnects at once after a 515 and after a backoff when the TCP connection drops, without a QR', async () => {
		const since = await lastEventId(redis.client)
		await kick(1, '515')
		await kick(2, 'drop')
		await waitState(redis.client, 's1', 'connected', since)
		await waitState(redis.client, 's2', 'connected', since)
		assert.deepEqual(await statesSince('s1', since), ['connecting', 'connected'])
		const s2 = await statesSince('s2', since)
		assert.deepEqual(s2, ['reconnecting', 'connecting', 'connected'])
		const reconnecting = (await stateEvents(redis.client, 's2')).find(e => e.payload.state === 'reconnecting' && after(e.entryId, since))!
		assert.equal(reconnecting.payload.reason_code, 428)
		assert.equal(reconnecting.payload.attempt, 1)
	})

	it('a 401 kick logs the session out: auth state deleted, no reconnect', async () => {
		const since = await lastEventId(redis.client)
		assert.equal(await redis.client.exists('wapp:auth:s3'), 1)
		await kick(3, '401')
		const out = await waitState(redis.client, 's3', 'logged_out', since)
		assert.equal(out.payload.reason_code, 401)
		assert.equal(await redis.client.exists('wapp:auth:s3'), 0)
		assert.equal(await redis.client.hexists(REGISTRY, 's3'), 0)
		await sleep(2500)
		assert.deepEqual(await statesSince('s3', since), ['logged_out'])
	})

	it('a 440 kick (replaced) stops the session and does not fight back', async () => {
		const since = await lastEventId(redis.client)
		await kick(4, '440')
		const stopped = await waitState(redis.client, 's4', 'stopped', since)
		assert.equal(stopped.payload.reason_code, 440)
		await sleep(2500)
		assert.deepEqual(await statesSince('s4', since), ['stopped'])
		const account = (await (await fetch(`${control.url}/accounts/${phoneOf(4)}`)).json()) as { data: { devices: { connected: boolean }[] } }
		assert.deepEqual(account.data.devices.map(d => d.connected), [false], 'the engine came back for the replaced device')
		// Stopped, not logged out: the auth state stays for a later start.
		assert.equal(await redis.client.exists('wapp:auth:s4'), 1)
		assert.equal(await redis.client.hexists(REGISTRY, 's4'), 0)
	})

	it('stop keeps the auth state, so a later start logs in again without a QR; logout deletes it', async () => {
		const since = await lastEventId(redis.client)
		await send(redis.client, lifecycleCommand('session_stop', 's5'))
		await waitState(redis.client, 's5', 'stopped', since)
		assert.equal(await redis.client.hexists(REGISTRY, 's5'), 0)
		await send(redis.client, startCommand('s5', { phone: phoneOf(5) }))
		await waitState(redis.client, 's5', 'connected', since)
		assert.deepEqual(await statesSince('s5', since), ['stopped', 'created', 'connecting', 'connected'])

		await send(redis.client, lifecycleCommand('session_logout', 's6'))
		await waitState(redis.client, 's6', 'logged_out', since)
		assert.deepEqual(await redis.client.hkeys('wapp:auth:s6'), [], 'the auth state outlived the logout')
		assert.equal(await redis.client.hexists(REGISTRY, 's6'), 0)

		await send(redis.client, lifecycleCommand('session_restart', 's8'))
		await waitState(redis.client, 's8', 'connected', since)
		assert.deepEqual(await statesSince('s8', since), ['connecting', 'connected'])
	})

	it('on SIGTERM exits 0 within 10 s with sessions connected, logging nobody out; a new engine logs every session in from its stored auth', async () => {
		const held = names.filter(n => !['s3', 's4', 's6'].includes(n))
		assert.deepEqual((await redis.client.hkeys(REGISTRY)).sort(), [...held].sort())
		const since = await lastEventId(redis.client)
		const t0 = Date.now()
		engine.proc.kill('SIGTERM')
		const { code } = await engine.exited
		assert.equal(code, 0)
		assert.ok(Date.now() - t0 < 10_000, `exit took ${Date.now() - t0} ms`)
		assert.deepEqual(engine.noise, [])
		assert.deepEqual(await statesSince('s0', since), [], 'shutdown is not a state change of the session')
		for (const name of held) assert.equal(await redis.client.exists(`wapp:auth:${name}`), 1, `${name} lost its auth state`)

		// The same configuration, above all the same master key; at most 2 handshakes at once.
		engine = startEngine({ ...config, sessions: { ...config.sessions, max_concurrent_handshakes: HANDSHAKES } })
		engines.push(engine)
		await waitState(redis.client, 's0', 'connected', since, 15_000).catch(err => {
			console.error(JSON.stringify(engine.logs.filter(l => l.session === 's0' || l.level !== 'info').slice(0, 40), null, 1), engine.noise)
			throw err
		})
		for (const name of held) await waitState(redis.client, name, 'connected', since, 30_000)
		for (const name of held) {
			const states = await statesSince(name, since)
			assert.ok(!states.includes('qr') && !states.includes('pairing_code'), `${name} needed pairing again: ${states.join(',')}`)
			const traces = new Set((await stateEvents(redis.client, name)).filter(e => after(e.entryId, since)).map(e => e.trace_id))
			assert.equal(traces.size, 1, `${name}: a restored session's events share one trace id`)
		}
		assert.equal(await redis.client.hlen(REGISTRY), held.length)

		// Staggered: from `connecting` (slot taken) to `connected` (slot given back), no more
		// than HANDSHAKES sessions overlap.
		const windows = await Promise.all(
			held.map(async name => {
				const events = (await stateEvents(redis.client, name)).filter(e => after(e.entryId, since))
				const at = (state: string) => Date.parse(events.find(e => e.payload.state === state)!.timestamp)
				return [at('connecting'), at('connected')] as const
			}),
		)
		const overlap = Math.max(...windows.map(([start]) => windows.filter(([a, b]) => a <= start && start < b).length))
		assert.ok(overlap <= HANDSHAKES, `${overlap} handshakes at once`)
	})

	it('a session showing QRs that is asked to pair by code reconnects and pairs by code', async () => {
		const since = await lastEventId(redis.client)
		// No phone: nobody scans, the QR stays up.
		await send(redis.client, startCommand('late'))
		await waitState(redis.client, 'late', 'qr', since)
		await send(redis.client, startCommand('late', { phone: '4917000000099', pairing: 'code' }))
		const code = await waitState(redis.client, 'late', 'pairing_code', since)
		assert.match(code.payload.pairing_code ?? '', /^[A-Z0-9]{8}$/)
		const connected = await waitState(redis.client, 'late', 'connected', since)
		assert.equal(connected.payload.me?.jid, '4917000000099@s.whatsapp.net')
	})

	it('goes to failed after 3 attempts that never reach connected, and then stays quiet', async () => {
		const since = await lastEventId(redis.client)
		await control.close()
		await sim.close()
		await waitState(redis.client, 's0', 'failed', since, 30_000).catch(async err => {
			console.error(await statesSince('s0', since), JSON.stringify(engine.logs.filter(l => l.session === 's0').slice(-15)))
			throw err
		})
		const states = await statesSince('s0', since)
		assert.deepEqual(states, ['reconnecting', 'connecting', 'reconnecting', 'connecting', 'reconnecting', 'connecting', 'failed'])
		const failed = (await stateEvents(redis.client, 's0')).at(-1)!
		assert.equal(failed.payload.attempt, 3)
		await sleep(2000)
		assert.equal((await statesSince('s0', since)).length, states.length)
	})
})
