/**
 * The session manager's parts on their own, with real Redis where they touch it:
 * backoff bounds, the shared cache budget, the handshake limit, the lag guard under a
 * really blocked loop, collapsed state events, and auth writes batched per tick.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { WA_CERT_DETAILS } from '@whiskeysockets/baileys'
import pino from 'pino'
import { setupUpstream } from '../../src/upstream/index.js'
import { startSim } from '../sim/helpers.js'
import { loadMasterKey } from '../../src/auth/crypto.js'
import { BudgetLru } from '../../src/auth/lru.js'
import { RedisAuthStore } from '../../src/auth/redis-auth.js'
import { EventPublisher } from '../../src/events.js'
import { LagGuard } from '../../src/lag-guard.js'
import { backoffMs } from '../../src/sessions/backoff.js'
import { Semaphore } from '../../src/sessions/semaphore.js'
import { StatePublisher } from '../../src/sessions/state-events.js'
import { masterKeyFile, readEvents, startRedis, engineConfig, type TestRedis } from './helpers.js'

const silent = pino({ level: 'silent' })

describe('session manager parts', () => {
	let redis: TestRedis

	before(async () => {
		redis = await startRedis()
	})

	after(async () => {
		await redis?.stop()
	})

	it('backs off with full jitter: 0 up to base * 2^attempt, never past the cap', () => {
		assert.equal(backoffMs(0, 1000, 60_000, () => 0), 0)
		assert.equal(backoffMs(0, 1000, 60_000, () => 0.999), 999)
		assert.equal(backoffMs(3, 1000, 60_000, () => 0.5), 4000)
		assert.equal(backoffMs(20, 1000, 60_000, () => 0.999), 59_940)
		for (let i = 0; i < 1000; i++) assert.ok(backoffMs(2, 1000, 60_000) < 4000)
	})

	it('keeps every cache under one byte budget, least recently used out first, TTLs read lazily', async () => {
		const lru = new BudgetLru(10_000)
		for (let i = 0; i < 100; i++) lru.set(`k${i}`, Buffer.alloc(500))
		assert.ok(lru.bytes <= 10_000, `${lru.bytes} bytes`)
		assert.equal(lru.get('k0'), undefined)
		assert.ok(lru.get('k99') !== undefined)
		lru.get('k90') // touched: survives the next evictions
		for (let i = 100; i < 110; i++) lru.set(`k${i}`, Buffer.alloc(500))
		assert.ok(lru.get('k90') !== undefined)
		assert.equal(lru.get('k91'), undefined)
		lru.set('short', 1, 30)
		await sleep(50)
		assert.equal(lru.get('short'), undefined)
		lru.set('sess:a\0x', 1)
		lru.set('sess:a\0y', 2)
		lru.set('sess:b\0x', 3)
		assert.equal(lru.deletePrefix('sess:a\0'), 2)
		assert.equal(lru.get('sess:b\0x'), 3)
		const before = lru.bytes
		lru.set('sess:b\0x', Buffer.alloc(20_000)) // over the whole budget: not kept, nothing evicted for it
		assert.equal(lru.get('sess:b\0x'), undefined)
		assert.ok(lru.get('k99') !== undefined)
		assert.ok(lru.bytes < before)
	})

	it('lets at most K handshakes run at once, in order', async () => {
		const sem = new Semaphore(2)
		const order: number[] = []
		const releases = await Promise.all([sem.acquire(), sem.acquire()])
		const third = sem.acquire().then(release => (order.push(3), release))
		const fourth = sem.acquire().then(release => (order.push(4), release))
		await sleep(10)
		assert.deepEqual(order, [])
		releases[0]!()
		releases[0]!() // twice is harmless
		await sleep(10)
		assert.deepEqual(order, [3])
		assert.equal(sem.inUse, 2)
		releases[1]!()
		;(await third)()
		;(await fourth)()
		assert.equal(sem.inUse, 0)
	})

	it('stops reading while the event loop lags and reads again once it recovers', async () => {
		const guard = new LagGuard({ pauseAboveMs: 100, windowMs: 200, log: silent })
		guard.start()
		await sleep(450)
		assert.equal(guard.readingAllowed(), true)
		const until = Date.now() + 400
		while (Date.now() < until) {
			// a really blocked loop
		}
		await sleep(250)
		assert.equal(guard.readingAllowed(), false, `lag ${guard.lagMs} ms`)
		await sleep(800)
		assert.equal(guard.readingAllowed(), true)
		guard.stop()
		assert.equal(guard.readingAllowed(), false, 'a stopped engine reads nothing')
	})

	it('collapses a repeat of the previous state event of a session', async () => {
		const states = new StatePublisher(new EventPublisher(redis.client, 'wapp:events'), silent)
		assert.equal(await states.publish('a', 't1', { state: 'connecting', attempt: 0 }), true)
		assert.equal(await states.publish('a', 't1', { state: 'connecting', attempt: 0 }), false)
		assert.equal(await states.publish('b', 't2', { state: 'connecting', attempt: 0 }), true)
		assert.equal(await states.publish('a', 't1', { state: 'reconnecting', attempt: 1, reason_code: 428 }), true)
		assert.equal(await states.publish('a', 't1', { state: 'connecting', attempt: 0 }), true)
		const events = (await readEvents(redis.client)).filter(e => e.event.type === 'session.state')
		assert.deepEqual(events.map(e => `${e.event.session}:${e.event.payload.state}`), ['a:connecting', 'b:connecting', 'a:reconnecting', 'a:connecting'])
	})

	it('writes auth state in one MULTI per tick, reads its own queued writes, and deletes it all on clear', async () => {
		const multis = async () => Number(/cmdstat_multi:calls=(\d+)/.exec(await redis.client.info('commandstats'))?.[1] ?? 0)
		const store = await RedisAuthStore.open({ redis: redis.client, key: 'wapp:auth:t', masterKey: loadMasterKey(masterKeyFile()), cache: new BudgetLru(1_000_000), log: silent })
		const before = await multis()
		const writes = Array.from({ length: 50 }, (_, i) => store.state.keys.set({ 'pre-key': { [String(i)]: { public: Buffer.alloc(32, i), private: Buffer.alloc(32, i + 1) } } }))
		const seen = await store.state.keys.get('pre-key', ['7'])
		assert.deepEqual(Buffer.from(seen['7']!.private), Buffer.alloc(32, 8))
		await Promise.all(writes)
		assert.equal((await multis()) - before, 1)
		assert.equal(await redis.client.hlen('wapp:auth:t'), 51) // the data key and 50 pre-keys
		await store.state.keys.set({ 'pre-key': { '7': null } })
		assert.deepEqual(Object.keys(await store.state.keys.get('pre-key', ['7', '8'])), ['8'])
		await store.clear()
		assert.equal(await redis.client.exists('wapp:auth:t'), 0)
		await store.state.keys.set({ session: { x: Buffer.alloc(8) } })
		await sleep(20)
		assert.equal(await redis.client.exists('wapp:auth:t'), 0, 'a write after clear recreated the hash')
	})

	it('a whatsapp engine never installs a root key, even handed a sandbox block; a sandbox engine installs the one in its file', async () => {
		const sim = await startSim()
		try {
			const before = Buffer.from(WA_CERT_DETAILS.PUBLIC_KEY)
			const keyFile = join(mkdtempSync(join(tmpdir(), 'wapp-root-')), 'root.b64')
			const key = randomBytes(32)
			writeFileSync(keyFile, key.toString('base64') + '\n')
			const sandbox = { ws_url: sim.wsUrl, control_url: 'http://127.0.0.1:1', root_key_file: keyFile, ca_file: sim.certs.files.caCert }

			const whatsapp = setupUpstream(engineConfig('unix:///x', { upstream: 'whatsapp', sandbox }), silent)
			assert.equal(whatsapp.wsUrl, undefined)
			assert.equal(whatsapp.phone, undefined)
			assert.deepEqual(Buffer.from(WA_CERT_DETAILS.PUBLIC_KEY), before)

			const sandboxed = setupUpstream(engineConfig('unix:///x', { upstream: 'sandbox', sandbox }), silent)
			assert.equal(sandboxed.wsUrl, sim.wsUrl)
			assert.ok(sandboxed.phone !== undefined)
			assert.deepEqual(Buffer.from(WA_CERT_DETAILS.PUBLIC_KEY), key)

			const unconfigured = setupUpstream(engineConfig('unix:///x', { upstream: 'sandbox', sandbox: null }), silent)
			assert.match(unconfigured.unusable ?? '', /no simulator configured/)
		} finally {
			await sim.close()
		}
	})
})
