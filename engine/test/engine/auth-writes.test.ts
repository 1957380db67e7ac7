/**
 * The auth store's write path as the send burst exercises it (docs/benchmarks.md): the
 * data key used as a KeyObject keeps the stored format (values sealed before still open),
 * a field set again in one tick is written once with its last value, an unchanged value
 * is not written again, and what is skipped is still what Redis holds.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { BufferJSON } from '@whiskeysockets/baileys'
import pino from 'pino'
import { loadMasterKey, newDataKey, open, seal, secretKey } from '../../src/auth/crypto.js'
import { BudgetLru } from '../../src/auth/lru.js'
import { RedisAuthStore } from '../../src/auth/redis-auth.js'
import { masterKeyFile, startRedis, type TestRedis } from './helpers.js'

const silent = pino({ level: 'silent' })

describe('auth store writes', () => {
	let redis: TestRedis

	before(async () => {
		redis = await startRedis()
	})

	after(async () => {
		await redis?.stop()
	})

	const hsets = async () => Number(/cmdstat_hset:calls=(\d+)/.exec(await redis.client.info('commandstats'))?.[1] ?? 0)
	let masterKey: Buffer | undefined
	const openStore = (key: string, cache = new BudgetLru(1_000_000)) => RedisAuthStore.open({ redis: redis.client, key, masterKey: (masterKey ??= loadMasterKey(masterKeyFile())), cache, log: silent })

	it('seals with a KeyObject in the same format as with the raw key: IV 12 || tag 16 || ciphertext, AAD bound', () => {
		const raw = newDataKey()
		const key = secretKey(raw)
		const plaintext = Buffer.from('{"a":1,"b":"two"}')
		const byRaw = seal(raw, plaintext, 'wapp:auth:s:k:session:x')
		const byObject = seal(key, plaintext, 'wapp:auth:s:k:session:x')
		assert.equal(byRaw.length, 12 + 16 + plaintext.length)
		assert.equal(byObject.length, 12 + 16 + plaintext.length)
		assert.deepEqual(open(key, byRaw, 'wapp:auth:s:k:session:x'), plaintext)
		assert.deepEqual(open(raw, byObject, 'wapp:auth:s:k:session:x'), plaintext)
		assert.throws(() => open(key, byRaw, 'wapp:auth:s:k:session:y'))
		assert.throws(() => open(secretKey(newDataKey()), byRaw, 'wapp:auth:s:k:session:x'))
		const tampered = Buffer.from(byObject)
		tampered[tampered.length - 1]! ^= 1
		assert.throws(() => open(key, tampered, 'wapp:auth:s:k:session:x'))
		assert.throws(() => secretKey(Buffer.alloc(16)))
	})

	it('writes a field set twice in a tick once, with its last value', async () => {
		const store = await openStore('wapp:auth:w1')
		const before = await hsets()
		const a = store.state.keys.set({ session: { x: Buffer.from('first') } })
		const b = store.state.keys.set({ session: { x: Buffer.from('second') } })
		await Promise.all([a, b])
		assert.equal((await hsets()) - before, 1)
		const fresh = await openStore('wapp:auth:w1')
		assert.deepEqual(Buffer.from((await fresh.state.keys.get('session', ['x']))['x']!), Buffer.from('second'))
	})

	it('does not write an unchanged value again, but writes a changed one and a deleted-then-set one', async () => {
		const store = await openStore('wapp:auth:w2')
		await store.state.keys.set({ session: { x: Buffer.from('v1') }, 'device-list': { u: ['0', '1'] } })
		let before = await hsets()
		await store.state.keys.set({ session: { x: Buffer.from('v1') }, 'device-list': { u: ['0', '1'] } })
		assert.equal((await hsets()) - before, 0, 'an unchanged value was written again')

		before = await hsets()
		await store.state.keys.set({ session: { x: Buffer.from('v2') }, 'device-list': { u: ['0', '1'] } })
		assert.equal((await hsets()) - before, 1)
		const sealed = await redis.client.hgetBuffer('wapp:auth:w2', 'k:session:x')
		assert.ok(sealed !== null && !sealed.includes(Buffer.from('v2')))

		await store.state.keys.set({ session: { x: null } })
		await store.state.keys.set({ session: { x: Buffer.from('v2') } })
		assert.ok((await redis.client.hexists('wapp:auth:w2', 'k:session:x')) === 1, 'a value set again after its delete was skipped')

		// Creds: saved unchanged, not written; changed, written.
		await store.saveCreds()
		before = await hsets()
		await store.saveCreds()
		assert.equal((await hsets()) - before, 0)
		store.state.creds.nextPreKeyId += 1
		await store.saveCreds()
		assert.equal((await hsets()) - before, 1)
		const reopened = await openStore('wapp:auth:w2')
		assert.equal(reopened.state.creds.nextPreKeyId, store.state.creds.nextPreKeyId)
		// A value this process read from Redis counts as known too.
		before = await hsets()
		await reopened.saveCreds()
		assert.deepEqual(await reopened.state.keys.get('session', ['x']), { x: JSON.parse(JSON.stringify(Buffer.from('v2'), BufferJSON.replacer), BufferJSON.reviver) })
		await reopened.state.keys.set({ session: { x: Buffer.from('v2') } })
		assert.equal((await hsets()) - before, 0)
	})

	it('after its digest is evicted, or another writer changed Redis and the digest is gone, a set is written', async () => {
		const tiny = new BudgetLru(1) // holds nothing: no digest survives
		const store = await openStore('wapp:auth:w3', tiny)
		await store.state.keys.set({ session: { x: Buffer.from('v1') } })
		await redis.client.hdel('wapp:auth:w3', 'k:session:x')
		await store.state.keys.set({ session: { x: Buffer.from('v1') } })
		assert.equal(await redis.client.hexists('wapp:auth:w3', 'k:session:x'), 1)
	})

	it('caches absent keys (one HMGET), sees a later set of them, and a new instance does not trust an old one', async () => {
		const hmgets = async () => Number(/cmdstat_hmget:calls=(\d+)/.exec(await redis.client.info('commandstats'))?.[1] ?? 0)
		const cache = new BudgetLru(1_000_000)
		const store = await openStore('wapp:auth:w4', cache)
		let before = await hmgets()
		assert.deepEqual(await store.state.keys.get('tctoken', ['a']), {})
		assert.deepEqual(await store.state.keys.get('tctoken', ['a']), {})
		assert.equal((await hmgets()) - before, 1)
		await store.state.keys.set({ 'lid-mapping': { a: 'x' } })
		assert.deepEqual(await store.state.keys.get('lid-mapping', ['a']), { a: 'x' })
		await store.state.keys.set({ 'lid-mapping': { a: null } })
		assert.deepEqual(await store.state.keys.get('lid-mapping', ['a']), {})

		// This engine wrote v1 and closed; another engine wrote v2; back here, v1 again must land.
		await store.state.keys.set({ session: { x: Buffer.from('v1') } })
		await store.close()
		const other = await openStore('wapp:auth:w4')
		await other.state.keys.set({ session: { x: Buffer.from('v2') } })
		await other.close()
		const again = await openStore('wapp:auth:w4', cache)
		before = await hmgets()
		await again.state.keys.set({ session: { x: Buffer.from('v1') } })
		const check = await openStore('wapp:auth:w4')
		assert.deepEqual(Buffer.from((await check.state.keys.get('session', ['x']))['x']!), Buffer.from('v1'))
		await again.clear()
		assert.equal(cache.size, 0, 'clear left cache entries of the session')
	})
})
