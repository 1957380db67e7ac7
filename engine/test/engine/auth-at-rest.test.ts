/**
 * Auth state at rest (design.md, Security): after real pairings and a real Signal
 * session, no Redis key or value holds a plaintext private key, data key or the master
 * key, in raw bytes, base64 or hex. The test decrypts the stored state itself (it knows
 * the master key) to learn what the secrets are, then scans everything Redis holds.
 */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { after, before, describe, it } from 'node:test'
import { BufferJSON, type AuthenticationCreds } from '@whiskeysockets/baileys'
import type { Redis } from 'ioredis'
import pino from 'pino'
import { open, loadMasterKey } from '../../src/auth/crypto.js'
import { BudgetLru } from '../../src/auth/lru.js'
import { RedisAuthStore } from '../../src/auth/redis-auth.js'
import type { EngineRuntimeConfig } from '../../src/generated/contracts.js'
import type { ControlServer } from '../../sim/control.js'
import type { Simulator } from '../../sim/sim.js'
import { startControl, startSim } from '../sim/helpers.js'
import { startEngine, startRedis, waitFor, type EngineChild, type TestRedis } from './helpers.js'
import { sandboxConfig, send, startCommand, waitState } from './sessions-harness.js'

const SESSIONS = ['alpha', 'beta', 'gamma']
const phoneOf = (i: number) => `4917100000${i}`
const CONTACT = '4917199999'

/** Every byte Redis holds, key names included (without the keys named in `skip`). */
async function everything(client: Redis, skip: string[] = []): Promise<Buffer> {
	const parts: Buffer[] = []
	const push = (v: unknown): void => {
		if (Buffer.isBuffer(v)) parts.push(v)
		else if (Array.isArray(v)) v.forEach(push)
		else if (v !== null && v !== undefined) parts.push(Buffer.from(String(v)))
	}
	let cursor = '0'
	do {
		const [next, keys] = await client.scanBuffer(cursor, 'COUNT', 500)
		cursor = next.toString()
		for (const key of keys) {
			if (skip.includes(key.toString())) continue
			push(key)
			const type = await client.type(key)
			if (type === 'string') push(await client.getBuffer(key))
			else if (type === 'hash') push(Object.entries(await client.hgetallBuffer(key)).flat())
			else if (type === 'list') push(await client.lrangeBuffer(key, 0, -1))
			else if (type === 'set') push(await client.smembersBuffer(key))
			else if (type === 'zset') push(await client.zrangeBuffer(key, 0, -1))
			else if (type === 'stream') push(await client.xrangeBuffer(key, '-', '+'))
			else throw new Error(`unexpected key type ${type}`)
		}
	} while (cursor !== '0')
	return Buffer.concat(parts)
}

/** Every `privKey`, `rootKey` and chain `key` (base64) in a serialized session record. */
function ratchetSecrets(record: unknown): Buffer[] {
	const out: Buffer[] = []
	const walk = (v: unknown, name: string): void => {
		if (typeof v === 'string' && ['privKey', 'rootKey', 'key'].includes(name)) out.push(Buffer.from(v, 'base64'))
		else if (v !== null && typeof v === 'object') for (const [k, child] of Object.entries(v)) walk(child, k)
	}
	walk(record, '')
	return out.filter(b => b.length >= 16)
}

function forms(secret: Buffer): Buffer[] {
	return [secret, Buffer.from(secret.toString('base64')), Buffer.from(secret.toString('base64url')), Buffer.from(secret.toString('hex')), Buffer.from(secret.toString('hex').toUpperCase())]
}

describe('no plaintext key material in Redis', { timeout: 90_000 }, () => {
	let redis: TestRedis
	let sim: Simulator
	let control: ControlServer
	let engine: EngineChild
	let config: EngineRuntimeConfig

	before(async () => {
		redis = await startRedis()
		sim = await startSim()
		control = await startControl(sim)
		config = sandboxConfig(redis.url, sim, control)
		engine = startEngine(config)
		await engine.waitForLog('engine started', l => l.msg === 'engine started', 10_000)
	}, { timeout: 30_000 })

	after(async () => {
		await engine?.kill()
		await control?.close()
		await sim?.close()
		await redis?.stop()
	}, { timeout: 20_000 })

	it('pairs sessions, opens a Signal session, and finds none of the secrets in any key or value', async () => {
		for (const [i, name] of SESSIONS.entries()) await send(redis.client, startCommand(name, { phone: phoneOf(i) }))
		for (const name of SESSIONS) await waitState(redis.client, name, 'connected', '0-0', 30_000)
		// A simulated contact writes to the first session: its engine decrypts a pkmsg and
		// stores a Signal session record (and consumes a pre-key).
		await fetch(`${control.url}/contacts`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ phone: CONTACT }) })
		const res = await fetch(`${control.url}/contacts/${CONTACT}/messages`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ to: phoneOf(0), text: 'hello' }) })
		assert.equal(res.status, 200, await res.text())
		await waitFor('a stored signal session', async () => ((await redis.client.hkeys('wapp:auth:alpha')).some(f => f.startsWith('k:session:')) ? true : undefined), 10_000)
		// Let the engine's batched writes settle.
		await new Promise(r => setTimeout(r, 300))

		const master = loadMasterKey(config.master_key_file)
		assert.deepEqual(master, Buffer.from(readFileSync(config.master_key_file, 'utf8').trim(), 'base64'))
		const secrets: { what: string; bytes: Buffer }[] = [{ what: 'master key', bytes: master }]
		const advSecrets: { what: string; bytes: Buffer }[] = []
		for (const name of SESSIONS) {
			const key = `wapp:auth:${name}`
			const hash = await redis.client.hgetallBuffer(key)
			const dataKey = open(master, hash.dek!, `${key}:dek`)
			secrets.push({ what: `${name} data key`, bytes: dataKey })
			const value = (field: string) => JSON.parse(open(dataKey, hash[field]!, `${key}:${field}`).toString('utf8'), BufferJSON.reviver) as unknown
			const creds = value('creds') as AuthenticationCreds
			assert.ok(creds.me?.id.startsWith(phoneOf(SESSIONS.indexOf(name))), 'the stored creds are the paired account')
			secrets.push(
				{ what: `${name} noise key`, bytes: Buffer.from(creds.noiseKey.private) },
				{ what: `${name} identity key`, bytes: Buffer.from(creds.signedIdentityKey.private) },
				{ what: `${name} signed pre-key`, bytes: Buffer.from(creds.signedPreKey.keyPair.private) },
			)
			// The QR string carries the ADV secret by design (the phone needs it to sign the
			// pairing); the QR is published in `session.state` for the api to show. Nowhere
			// else may it appear.
			advSecrets.push({ what: `${name} adv secret`, bytes: Buffer.from(creds.advSecretKey, 'base64') })
			const preKeys = Object.keys(hash).filter(f => f.startsWith('k:pre-key:'))
			assert.ok(preKeys.length >= 30, `${name} has ${preKeys.length} pre-keys stored`)
			for (const field of preKeys.slice(0, 50)) secrets.push({ what: `${name} ${field}`, bytes: Buffer.from((value(field) as { private: Uint8Array }).private) })
			for (const field of Object.keys(hash).filter(f => f.startsWith('k:session:'))) {
				// A libsignal SessionRecord as JSON: ratchet private keys, root and chain keys in base64.
				const found = ratchetSecrets(value(field))
				assert.ok(found.length >= 2, `${field}: no ratchet keys found in ${JSON.stringify(value(field)).slice(0, 200)}`)
				for (const [i, bytes] of found.entries()) secrets.push({ what: `${name} ${field} secret ${i}`, bytes })
			}
		}
		assert.ok(secrets.some(s => s.what.includes('k:session:')), 'a signal session record was checked')

		const haystack = await everything(redis.client)
		// The scan itself works: what IS stored is found (a sealed value, a field name).
		const sealedCreds = (await redis.client.hgetBuffer('wapp:auth:alpha', 'creds'))!
		assert.ok(haystack.includes(sealedCreds) && haystack.includes(Buffer.from('k:pre-key:')))
		for (const { what, bytes } of secrets) {
			assert.equal(bytes.length >= 16, true, `${what} is too short to search for`)
			for (const form of forms(bytes)) assert.ok(!haystack.includes(form), `${what} appears in Redis in plaintext`)
		}
		const withoutEvents = await everything(redis.client, ['wapp:events'])
		for (const { what, bytes } of advSecrets) {
			assert.ok(haystack.includes(Buffer.from(bytes.toString('base64'))), `${what}: expected in its QR event`)
			for (const form of forms(bytes)) assert.ok(!withoutEvents.includes(form), `${what} appears outside the QR events`)
		}
	})

	it('a session whose data key is unwrapped with another master key cannot load (it fails, nothing decrypts)', async () => {
		const sealed = (await redis.client.hgetBuffer('wapp:auth:beta', 'dek'))!
		assert.throws(() => open(Buffer.alloc(32, 7), sealed, 'wapp:auth:beta:dek'))
		// Bound to its place: beta's data key does not open as alpha's.
		const master = loadMasterKey(config.master_key_file)
		assert.throws(() => open(master, sealed, 'wapp:auth:alpha:dek'))
		// What a session start meets with another master key file: a clear refusal.
		await assert.rejects(
			RedisAuthStore.open({ redis: redis.client, key: 'wapp:auth:beta', masterKey: Buffer.alloc(32, 7), cache: new BudgetLru(1000), log: pino({ level: 'silent' }) }),
			/does not unwrap with this master key/,
		)
	})
})
