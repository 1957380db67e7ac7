/**
 * Baileys auth state (creds + signal keys) in one Redis hash per session,
 * `wapp:auth:{session}`, every field sealed (crypto.ts):
 *
 * | field | value |
 * | --- | --- |
 * | `dek` | the session's data key, wrapped by the master key (AAD `wapp:auth:{session}:dek`) |
 * | `creds` | `AuthenticationCreds` as BufferJSON, sealed with the data key |
 * | `k:{type}:{id}` | one signal key (`session`, `pre-key`, `sender-key`, ...), same |
 *
 * Writes are batched per tick: every set queued in one turn of the event loop goes out in
 * one MULTI. Reads see queued writes at once. Hot keys (everything but pre-keys, which
 * are read once and deleted) are kept decrypted in the process-wide budgeted LRU.
 *
 * Per message this is the hottest code of the engine after Baileys (docs/benchmarks.md),
 * so: the data key is imported once as a KeyObject; a value is serialised and sealed when
 * its batch goes out, not on every set (a field set twice in a tick is sealed once); and a
 * value equal to what this process last wrote or read for that field (a SHA-1 of its
 * plaintext kept in the same LRU, never in Redis) is not written again.
 */
import { hash, type KeyObject } from 'node:crypto'
import { BufferJSON, initAuthCreds, proto, type AuthenticationCreds, type AuthenticationState, type SignalDataSet, type SignalDataTypeMap } from '@whiskeysockets/baileys'
import type { Redis } from 'ioredis'
import type { Logger } from '../log.js'
import { MasterKeyring, newDataKey, open, seal, secretKey } from './crypto.js'
import type { BudgetLru } from './lru.js'

type KeyType = keyof SignalDataTypeMap

/** Read once when a pkmsg arrives, then deleted: caching them would only hold memory. */
const UNCACHED: ReadonlySet<KeyType> = new Set<KeyType>(['pre-key'])

/**
 * Cached "Redis has no such field": Baileys asks for absent keys on every send (tc tokens,
 * LID mappings, ...), and each such miss was one HMGET round trip.
 */
const ABSENT = Symbol('absent')

/**
 * Every store instance caches under its own prefix: while it is open it is the only writer
 * of its hash, so its cache (values, absences, digests) is exact; once it is closed the
 * session may be written by another engine, so a later instance must not trust it.
 */
let instances = 0

export interface AuthStoreOptions {
	redis: Redis
	/** `wapp:auth:{session}` */
	key: string
	/** A ring follows `wapp keys rotate-master` online (crypto.ts). */
	masterKey: Buffer | MasterKeyring
	/** The process-wide decrypted-key cache; entries are prefixed per session. */
	cache: BudgetLru
	log: Logger
}

export class RedisAuthStore {
	readonly state: AuthenticationState
	/** Queued writes: the value (null: delete) and its key type (none for creds). */
	private readonly pending = new Map<string, { plain: unknown; type: KeyType | undefined }>()
	private flushing: Promise<void> | undefined
	private readonly cachePrefix: string
	/** Counts queued writes: a read that overlapped one must not cache what it read. */
	private writes = 0
	private tickFlush: Promise<void> | undefined
	private closed = false

	private constructor(
		private readonly o: AuthStoreOptions,
		private readonly dataKey: KeyObject,
		creds: AuthenticationCreds,
	) {
		this.cachePrefix = `${o.key}\0${++instances}\0`
		this.state = {
			creds,
			keys: {
				get: (type, ids) => this.getKeys(type, ids),
				set: data => this.setKeys(data),
			},
		}
	}

	/** Load (or create) the data key and creds of a session. */
	static async open(o: AuthStoreOptions): Promise<RedisAuthStore> {
		const dekAad = `${o.key}:dek`
		const ring = o.masterKey instanceof MasterKeyring ? o.masterKey : undefined
		let wrapped = await o.redis.hgetBuffer(o.key, 'dek')
		if (wrapped === null) {
			const wrapWith = ring ? ring.wrappingKey() : (o.masterKey as Buffer)
			// HSETNX: two starts racing for one session must end up with one data key.
			await o.redis.hsetnx(o.key, 'dek', seal(wrapWith, newDataKey(), dekAad))
			wrapped = await o.redis.hgetBuffer(o.key, 'dek')
			if (wrapped === null) throw new Error(`${o.key}: data key vanished while it was created`)
		}
		let dataKey: KeyObject | undefined
		// During a rotation the data key is under the old or the new master key.
		for (const master of ring ? ring.unwrappingKeys() : [o.masterKey as Buffer]) {
			try {
				dataKey = secretKey(open(master, wrapped, dekAad))
				break
			} catch {
				continue
			}
		}
		if (dataKey === undefined) {
			// The one way this happens without tampering: another master key file than the
			// one the state was written with.
			throw new Error(`${o.key}: the stored data key does not unwrap with this master key (a different master key file?)`)
		}
		const sealedCreds = await o.redis.hgetBuffer(o.key, 'creds')
		let creds: AuthenticationCreds
		let credsDigest: string | undefined
		if (sealedCreds === null) creds = initAuthCreds()
		else {
			const plaintext = open(dataKey, sealedCreds, `${o.key}:creds`)
			creds = parse(plaintext) as AuthenticationCreds
			credsDigest = digestOf(plaintext)
		}
		const store = new RedisAuthStore(o, dataKey, creds)
		if (credsDigest !== undefined) store.rememberDigest('creds', credsDigest)
		return store
	}

	/** True once this session has paired (creds carry an account). */
	get registered(): boolean {
		return this.state.creds.me !== undefined
	}

	/** Queue the current creds (Baileys' `creds.update`). */
	saveCreds(): Promise<void> {
		this.queue('creds', this.state.creds)
		return this.scheduleFlush()
	}

	/** Wait until everything queued so far is in Redis. */
	async flush(): Promise<void> {
		while (this.pending.size > 0 || this.flushing) {
			if (this.flushing) await this.flushing
			else await this.writeOut()
		}
	}

	/** Flush, then refuse further writes (the socket is gone; a late event must not write). */
	async close(): Promise<void> {
		await this.flush()
		this.closed = true
	}

	/** Logout: drop queued writes and delete the whole hash, data key included. */
	async clear(): Promise<void> {
		this.closed = true
		this.pending.clear()
		await this.flushing
		await this.o.redis.del(this.o.key)
		// Every instance's entries of this session, not only this one's.
		this.o.cache.deletePrefix(`${this.o.key}\0`)
	}

	/** LRU key of the digest of what Redis holds for `field` (under the session's prefix). */
	private digestKey(field: string): string {
		return `${this.cachePrefix}#${field}`
	}

	private rememberDigest(field: string, digest: string): void {
		this.o.cache.set(this.digestKey(field), digest, 0, digest.length)
	}

	private async getKeys<T extends KeyType>(type: T, ids: string[]): Promise<{ [id: string]: SignalDataTypeMap[T] }> {
		const out: { [id: string]: SignalDataTypeMap[T] } = {}
		const missing: string[] = []
		for (const id of ids) {
			const field = keyField(type, id)
			const queued = this.pending.get(field)
			if (queued !== undefined) {
				if (queued.plain !== null && queued.plain !== undefined) out[id] = queued.plain as SignalDataTypeMap[T]
				continue
			}
			const cached = this.o.cache.get(this.cachePrefix + field)
			if (cached === ABSENT) continue
			if (cached !== undefined) out[id] = cached as SignalDataTypeMap[T]
			else missing.push(id)
		}
		if (missing.length === 0) return out
		const fields = missing.map(id => keyField(type, id))
		const writesBefore = this.writes
		const values = await this.o.redis.hmgetBuffer(this.o.key, ...fields)
		// A write queued meanwhile may already be in the cache; what was read is older.
		const cache = this.writes === writesBefore && !this.closed
		missing.forEach((id, i) => {
			const sealed = values[i]
			if (sealed === null || sealed === undefined) {
				if (cache && !UNCACHED.has(type)) this.o.cache.set(this.cachePrefix + fields[i], ABSENT, 0, 8)
				return
			}
			const plaintext = open(this.dataKey, sealed, `${this.o.key}:${fields[i]}`)
			let value = parse(plaintext)
			// Stored as plain JSON; Baileys wants the protobuf object back (as its file store does).
			if (type === 'app-state-sync-key' && value) value = proto.Message.AppStateSyncKeyData.fromObject(value as object)
			out[id] = value as SignalDataTypeMap[T]
			if (cache && !UNCACHED.has(type)) {
				this.o.cache.set(this.cachePrefix + fields[i], value, 0, plaintext.length)
				this.rememberDigest(fields[i]!, digestOf(plaintext))
			}
		})
		return out
	}

	private setKeys(data: SignalDataSet): Promise<void> {
		for (const [type, entries] of Object.entries(data) as [KeyType, Record<string, unknown> | undefined][]) {
			for (const [id, value] of Object.entries(entries ?? {})) this.queue(keyField(type, id), value ?? null, type)
		}
		return this.scheduleFlush()
	}

	private queue(field: string, value: unknown, type?: KeyType): void {
		if (this.closed) {
			this.o.log.debug({ field }, 'auth write after close dropped')
			return
		}
		this.writes++
		if (value === null) {
			this.o.cache.delete(this.cachePrefix + field)
			this.o.cache.delete(this.digestKey(field))
		}
		// Serialised and sealed in writeOut: a field set again in this tick is sealed once.
		// Reads see the queued value meanwhile (getKeys looks at `pending` first).
		this.pending.set(field, { plain: value, type })
	}

	// One flush per tick: every set queued in this turn of the loop shares one MULTI.
	private scheduleFlush(): Promise<void> {
		this.tickFlush ??= new Promise<void>((resolve, reject) =>
			setImmediate(() => {
				this.tickFlush = undefined
				this.flush().then(resolve, reject)
			}),
		)
		return this.tickFlush
	}

	private writeOut(): Promise<void> {
		const batch = [...this.pending.entries()]
		this.pending.clear()
		const sets: (string | Buffer)[] = []
		const dels: string[] = []
		const written: [field: string, digest: string][] = []
		for (const [field, { plain, type }] of batch) {
			if (plain === null) {
				dels.push(field)
				continue
			}
			const plaintext = Buffer.from(JSON.stringify(plain, BufferJSON.replacer), 'utf8')
			const cached = type === undefined || !UNCACHED.has(type)
			if (type !== undefined && cached) this.o.cache.set(this.cachePrefix + field, plain, 0, plaintext.length)
			let digest: string | undefined
			if (cached) {
				digest = digestOf(plaintext)
				// Redis already holds exactly this value (we wrote or read it): nothing to send.
				if (this.o.cache.get(this.digestKey(field)) === digest) continue
				written.push([field, digest])
			}
			// Unknown until the MULTI is known to have landed (a failed exec may have).
			this.o.cache.delete(this.digestKey(field))
			sets.push(field, seal(this.dataKey, plaintext, `${this.o.key}:${field}`))
		}
		if (sets.length === 0 && dels.length === 0) return Promise.resolve()
		const multi = this.o.redis.multi()
		if (sets.length > 0) multi.hset(this.o.key, ...sets)
		if (dels.length > 0) multi.hdel(this.o.key, ...dels)
		this.flushing = multi
			.exec()
			.then(results => {
				const failed = results?.find(([err]) => err !== null)
				if (failed) throw failed[0]
				// Only now is it what Redis holds (unless cleared meanwhile).
				if (!this.closed) for (const [field, digest] of written) this.rememberDigest(field, digest)
			})
			.catch(err => {
				// Put back what did not land, unless newer values were queued meanwhile.
				for (const [field, entry] of batch) if (!this.pending.has(field) && !this.closed) this.pending.set(field, entry)
				throw err
			})
			.finally(() => {
				this.flushing = undefined
			})
		return this.flushing
	}
}

function keyField(type: string, id: string): string {
	return `k:${type}:${id}`
}

function parse(plaintext: Buffer): unknown {
	return JSON.parse(plaintext.toString('utf8'), BufferJSON.reviver)
}

/** Which value a field holds, to skip rewriting an unchanged one; in process memory only. */
function digestOf(plaintext: Buffer): string {
	return hash('sha1', plaintext, 'base64')
}
