/**
 * Nothing lost, nothing sent twice (design.md, message lifecycle), with the real engine
 * process: kill -9 it in the middle of a burst of 500 messages over 10 sessions, start it
 * again, and count what each simulated contact received.
 */
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import type { SessionStartCommand, SessionStatePayload } from '../../src/generated/contracts.js'
import type { ControlServer } from '../../sim/control.js'
import type { Simulator } from '../../sim/sim.js'
import { startControl, startSim, waitUntil } from '../sim/helpers.js'
import { engineConfig, pendingCount, readEvents, startEngine, startRedis, waitFor, type EngineChild, type TestRedis } from './helpers.js'
import { cmd } from './messaging-harness.js'

const SESSIONS = Array.from({ length: 10 }, (_, i) => ({ name: `burst-${i}`, phone: `1555030000${i}` }))
const CONTACTS = Array.from({ length: 10 }, (_, i) => `1555039000${i}`)
const PER_SESSION = 50

function start(session: string, phone: string): SessionStartCommand {
	const payload = { upstream: 'sandbox' as const, push_name: null, pacing: null, pairing: 'qr' as const, phone, paired_at: null }
	return { id: randomUUID(), version: 1, timestamp: new Date().toISOString(), session, trace_id: `trace-${randomUUID().slice(0, 8)}`, type: 'session_start', payload }
}

async function connectedCount(r: TestRedis, since: string): Promise<number> {
	const states = new Map<string, string>()
	for (const { entryId, event } of await readEvents(r.client)) {
		if (event.type !== 'session.state' || !isAfter(entryId, since)) continue
		states.set(event.session!, (event.payload as unknown as SessionStatePayload).state)
	}
	return [...states.values()].filter(s => s === 'connected').length
}

function isAfter(a: string, b: string): boolean {
	const [am, as] = a.split('-').map(Number) as [number, number]
	const [bm, bs] = b.split('-').map(Number) as [number, number]
	return am > bm || (am === bm && as > bs)
}

describe('a crashed engine loses nothing and sends nothing twice', { timeout: 240_000 }, () => {
	let redis: TestRedis
	let sim: Simulator
	let control: ControlServer
	const engines: EngineChild[] = []

	before(async () => {
		redis = await startRedis()
		sim = await startSim()
		control = await startControl(sim)
		for (const phone of CONTACTS) sim.contacts!.create({ phone, deliveryDelayMs: 0, readDelayMs: null })
	})

	after(async () => {
		for (const e of engines) await e.kill()
		await control?.close()
		await sim?.close()
		await redis?.stop()
	})

	it('kill -9 in the middle of 500 messages over 10 sessions: after a restart every message reached its contact exactly once', async t => {
		const config = engineConfig(redis.url, {
			log_level: 'info',
			sandbox: { ws_url: sim.wsUrl, control_url: control.url, root_key_file: sim.certs.files.rootPublicKey, ca_file: sim.certs.files.caCert },
		})
		const first = startEngine(config)
		engines.push(first)
		await first.waitForLog('engine started', l => l.msg === 'engine started', 15_000)
		for (const s of SESSIONS) await redis.client.xadd('wapp:cmd:engine:sandbox', '*', 'data', JSON.stringify(start(s.name, s.phone)))
		await waitFor('10 sessions connected', async () => ((await connectedCount(redis, '0-0')) === SESSIONS.length ? true : undefined), 60_000)

		const sends = SESSIONS.flatMap((s, i) => Array.from({ length: PER_SESSION }, (_, j) => cmd.text(s.name, { to: CONTACTS[(i + j) % CONTACTS.length]!, text: `${s.name} #${j}` })))
		const pipeline = redis.client.pipeline()
		for (const c of sends) pipeline.xadd(`wapp:cmd:${c.session}`, '*', 'data', JSON.stringify(c))
		await pipeline.exec()

		const received = () => CONTACTS.reduce((n, phone) => n + sim.contacts!.get(phone).received.length, 0)
		await waitUntil(() => received() >= 120, 30_000, 'a part of the burst delivered')
		first.proc.kill('SIGKILL')
		const { signal } = await first.exited
		assert.equal(signal, 'SIGKILL')
		const atKill = received()
		assert.ok(atKill < sends.length, `the burst was still running at the kill (${atKill} delivered)`)

		const lastBeforeRestart = ((await redis.client.xrevrange('wapp:events', '+', '-', 'COUNT', 1)) as [string, string[]][])[0]![0]
		const second = startEngine(config)
		engines.push(second)
		await waitFor('sessions back from their stored auth', async () => ((await connectedCount(redis, lastBeforeRestart)) === SESSIONS.length ? true : undefined), 60_000)
		await waitUntil(() => received() >= sends.length, 60_000, `all ${sends.length} messages delivered (${received()} so far)`)
		for (const s of SESSIONS) {
			await waitFor(`${s.name} fully acked`, async () => ((await pendingCount(redis.client, `wapp:cmd:${s.name}`, 'engine')) === 0 ? true : undefined), 20_000)
		}

		const byContact = new Map(CONTACTS.map(phone => [phone, sim.contacts!.get(phone).received]))
		for (const c of sends) {
			const got = byContact.get(c.payload.to)!.filter(r => r.id === c.payload.wa_id)
			assert.equal(got.length, 1, `${c.payload.text} reached ${c.payload.to} ${got.length} times`)
			assert.equal(got[0]!.text, c.payload.text)
			assert.equal(got[0]!.error, undefined)
		}
		assert.equal(received(), sends.length, 'nothing else arrived')
		// The simulator drops a repeated id from the same sender (as WhatsApp does); only the
		// sends in hand at the kill (at most one per session) may have gone out twice.
		assert.ok(sim.stats.duplicatesDropped <= SESSIONS.length, `${sim.stats.duplicatesDropped} duplicates`)
		const marks = await redis.client.mget(...sends.map(c => `wapp:sent:${c.payload.message_id}`))
		assert.deepEqual(new Set(marks), new Set(['sent']))
		assert.ok(second.logs.some(l => l.msg === 'taking over a pending command'), 'the restarted engine reclaimed the dead one\'s entries')
		t.diagnostic(JSON.stringify({ atKill, duplicates: sim.stats.duplicatesDropped, taken_over: second.logs.filter(l => l.msg === 'taking over a pending command').length }))
	})
})
