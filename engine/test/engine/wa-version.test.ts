/**
 * The WhatsApp Web version: fetched from `wa_version.url` at start (a real local
 * HTTP server plays web.whatsapp.com), stored in Redis, reported in the heartbeat and
 * announced by the sockets; offline, the stored one, else Baileys' pinned one; a login
 * refused for an old version (the simulator's min-version fault) publishes
 * `session.version_refused`.
 */
import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after as afterAll, afterEach, before, describe, it } from 'node:test'
import { DEFAULT_CONNECTION_CONFIG } from '@whiskeysockets/baileys'
import type { EngineHeartbeat } from '../../src/generated/contracts.js'
import type { ControlServer } from '../../sim/control.js'
import type { Simulator } from '../../sim/sim.js'
import { startControl, startSim } from '../sim/helpers.js'
import { contractValidators, readEvents, startEngine, startRedis, waitFor, type EngineChild, type TestRedis } from './helpers.js'
import { sandboxConfig, send, startCommand, waitState } from './sessions-harness.js'

const CURRENT = '2.3000.1099999999'
const PINNED = DEFAULT_CONNECTION_CONFIG.version.join('.')
const KEY = 'wapp:engine:sandbox:wa_version'

describe('the WhatsApp Web version', { timeout: 120_000 }, () => {
	let redis: TestRedis
	let sim: Simulator
	let control: ControlServer
	let web: Server
	let webUrl: string
	let engine: EngineChild | undefined
	let fetches = 0
	const { event: isEvent, heartbeat: isHeartbeat, explain } = contractValidators()

	const minVersion = async (version: string | null) => {
		const res = await fetch(`${control.url}/faults/min-version`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ version }) })
		assert.equal(res.status, 200)
	}
	const heartbeat = () =>
		waitFor(
			'a heartbeat with the version in use',
			async () => {
				const raw = await redis.client.get('wapp:engine:sandbox:heartbeat')
				const beat = raw ? (JSON.parse(raw) as EngineHeartbeat) : undefined
				return beat?.wa_version ? beat : undefined
			},
			10_000,
		)

	before(async () => {
		redis = await startRedis()
		sim = await startSim()
		control = await startControl(sim)
		// What web.whatsapp.com/sw.js carries, in the escaped form Baileys' regex accepts too.
		web = createServer((req, res) => {
			fetches++
			res.writeHead(200, { 'content-type': 'application/javascript' }).end(`self.__swData=JSON.parse("{\\"client_revision\\":${CURRENT.split('.')[2]},\\"x\\":1}");`)
		})
		await new Promise<void>(resolve => web.listen(0, '127.0.0.1', resolve))
		webUrl = `http://127.0.0.1:${(web.address() as AddressInfo).port}/sw.js`
	})

	afterEach(async () => {
		await engine?.kill()
		engine = undefined
		await minVersion(null)
		// The next test reads a heartbeat of its own engine, not the last one's.
		await redis.client.del('wapp:engine:sandbox:heartbeat')
	})

	afterAll(async () => {
		await control?.close()
		await sim?.close()
		await redis?.stop()
		await new Promise(resolve => web?.close(resolve))
	})

	it('is fetched at start, stored in Redis, reported in the heartbeat and used to log in', async () => {
		// Only a client announcing the fetched version may log in: the pinned one is refused.
		await minVersion(CURRENT)
		engine = startEngine(sandboxConfig(redis.url, sim, control, { wa_version: { url: webUrl, timeout_s: 2, refresh_s: 3600 } }))
		const beat = await heartbeat()
		assert.ok(isHeartbeat(beat), explain(isHeartbeat))
		assert.equal(beat.wa_version?.version, CURRENT)
		assert.equal(beat.wa_version?.source, 'fetched')
		assert.ok(fetches >= 1)
		const stored = JSON.parse((await redis.client.get(KEY)) ?? '{}') as { version?: string; source?: string }
		assert.deepEqual([stored.version, stored.source], [CURRENT, 'fetched'])

		await send(redis.client, startCommand('v-new', { phone: '4917100000001' }))
		await waitState(redis.client, 'v-new', 'connected', '0-0', 30_000)
		assert.ok(!(await readEvents(redis.client)).some(e => e.event.type === 'session.version_refused'))
	})

	it('offline: the stored version, else the pinned one, without waiting long', async () => {
		const offline = { url: 'http://127.0.0.1:9/sw.js', timeout_s: 1, refresh_s: 3600 }
		const t0 = Date.now()
		engine = startEngine(sandboxConfig(redis.url, sim, control, { wa_version: offline }))
		let beat = await heartbeat()
		assert.deepEqual([beat.wa_version?.version, beat.wa_version?.source], [CURRENT, 'stored'])
		await engine.waitForLog('engine started', l => l.msg === 'engine started', 5000)
		assert.ok(Date.now() - t0 < 8000, 'a failed fetch does not hold the start up')
		await engine.kill()

		await redis.client.del(KEY, 'wapp:engine:sandbox:heartbeat')
		engine = startEngine(sandboxConfig(redis.url, sim, control, { wa_version: offline }))
		beat = await heartbeat()
		assert.deepEqual([beat.wa_version?.version, beat.wa_version?.source], [PINNED, 'pinned'])
		assert.equal(await redis.client.get(KEY), null, 'a fallback is not stored as if it were fetched')
	})

	it('a login refused for an old version publishes session.version_refused naming the version', async () => {
		await redis.client.del(KEY)
		await minVersion(CURRENT)
		engine = startEngine(sandboxConfig(redis.url, sim, control))
		await heartbeat()
		await send(redis.client, startCommand('v-old', { phone: '4917100000002' }))
		const refused = await waitFor(
			'session.version_refused',
			async () => (await readEvents(redis.client)).find(e => e.event.type === 'session.version_refused' && e.event.session === 'v-old'),
			20_000,
		)
		assert.ok(isEvent(refused.event), explain(isEvent))
		const payload = refused.event.payload as { version: string; source: string; reason_code: number; reason: string }
		assert.deepEqual([payload.version, payload.source, payload.reason_code], [PINNED, 'pinned', 405])
		assert.match(payload.reason, /outdated/)
		const states = (await readEvents(redis.client)).filter(e => e.event.session === 'v-old' && e.event.type === 'session.state').map(e => e.event.payload.state)
		assert.ok(!states.includes('connected') && !states.includes('qr'), `no QR and no login: ${states.join(',')}`)
	})
})
