// The in-memory libsignal store behind one simulated contact device, and its
// JSON form.
//
// Sessions are kept serialized (libsignal's own `SessionRecord.serialize()`
// objects) and deserialized on every load, as Baileys does. That matters for
// failures: libsignal mutates the record while it tries to decrypt (ratchet
// steps happen before the MAC check) and only calls storeSession on success,
// so a failed decryption must not leave a half-stepped live object behind.
import { randomInt } from 'node:crypto'
import { ContactError } from './errors.js'
import {
	curve,
	type SerializedSessionRecord,
	type SessionRecordInstance,
	SessionRecord,
	type SignalKeyPair,
	type SignalStorage
} from './libsignal.js'

/** Version of the JSON below; bump with a migration when it changes. */
export const CONTACT_STATE_VERSION = 1

interface KeyPairJson {
	pub: string // base64, 33 bytes
	priv: string // base64, 32 bytes
}

/** The persisted form of a contact device's Signal state. Plain JSON. */
export interface SignalStateJson {
	v: typeof CONTACT_STATE_VERSION
	registrationId: number
	identity: KeyPairJson
	signedPreKey: KeyPairJson & { keyId: number; signature: string }
	/** Every one-time prekey whose private half we still hold, issued or not. */
	preKeys: Record<string, KeyPairJson>
	/** Ids not yet handed out in a bundle, oldest first. */
	unissuedPreKeyIds: number[]
	nextPreKeyId: number
	sessions: Record<string, SerializedSessionRecord>
}

export interface StoreOptions {
	/** One-time prekeys generated per batch (a new batch when the pool is empty). */
	preKeyBatch?: number
	/** Issued-but-unused prekeys kept at most; the oldest are forgotten first. */
	maxIssuedPreKeys?: number
}

const DEFAULTS = { preKeyBatch: 20, maxIssuedPreKeys: 500 } as const
const MAX_PREKEY_ID = 0xffffff // ids travel as 3 bytes

const b64 = (b: Buffer): string => b.toString('base64')
const unb64 = (s: string): Buffer => Buffer.from(s, 'base64')
const pairToJson = (p: SignalKeyPair): KeyPairJson => ({ pub: b64(p.pubKey), priv: b64(p.privKey) })
const pairFromJson = (j: KeyPairJson): SignalKeyPair => ({ pubKey: unb64(j.pub), privKey: unb64(j.priv) })

export class ContactSignalStore implements SignalStorage {
	readonly registrationId: number
	readonly identity: SignalKeyPair
	readonly signedPreKey: { keyId: number; keyPair: SignalKeyPair; signature: Buffer }
	private readonly preKeys = new Map<number, SignalKeyPair>()
	private readonly unissued: number[] = []
	private nextPreKeyId: number
	private readonly sessions = new Map<string, SerializedSessionRecord>()
	private readonly options: Required<StoreOptions>

	private constructor(state: SignalStateJson, options: StoreOptions) {
		this.options = { ...DEFAULTS, ...options }
		this.registrationId = state.registrationId
		this.identity = pairFromJson(state.identity)
		this.signedPreKey = {
			keyId: state.signedPreKey.keyId,
			keyPair: pairFromJson(state.signedPreKey),
			signature: unb64(state.signedPreKey.signature)
		}
		for (const [id, pair] of Object.entries(state.preKeys)) this.preKeys.set(Number(id), pairFromJson(pair))
		this.unissued.push(...state.unissuedPreKeyIds)
		this.nextPreKeyId = state.nextPreKeyId
		for (const [addr, rec] of Object.entries(state.sessions)) this.sessions.set(addr, rec)
	}

	/** A fresh device: new identity, registration id, signed prekey and one prekey batch. */
	static generate(options: StoreOptions = {}): ContactSignalStore {
		const identity = curve.generateKeyPair()
		const signed = curve.generateKeyPair()
		const store = new ContactSignalStore(
			{
				v: CONTACT_STATE_VERSION,
				// 14 bits like every Signal client; 0 is avoided because some code treats it as unset.
				registrationId: randomInt(1, 0x3fff),
				identity: pairToJson(identity),
				signedPreKey: {
					...pairToJson(signed),
					keyId: 1,
					// Signed over the 33-byte form, as Baileys' signedKeyPair does.
					signature: b64(curve.calculateSignature(identity.privKey, signed.pubKey))
				},
				preKeys: {},
				unissuedPreKeyIds: [],
				nextPreKeyId: 1,
				sessions: {}
			},
			options
		)
		store.generatePreKeys()
		return store
	}

	static fromJSON(state: SignalStateJson, options: StoreOptions = {}): ContactSignalStore {
		if (state?.v !== CONTACT_STATE_VERSION) {
			throw new ContactError('bad_state', `unsupported contact state version ${String(state?.v)}`)
		}
		try {
			return new ContactSignalStore(state, options)
		} catch (err) {
			throw new ContactError('bad_state', `contact state does not parse: ${String(err)}`, { cause: err })
		}
	}

	toJSON(): SignalStateJson {
		const preKeys: Record<string, KeyPairJson> = {}
		for (const [id, pair] of this.preKeys) preKeys[id] = pairToJson(pair)
		// structuredClone: callers may mutate or stringify later; sessions are plain JSON already.
		return {
			v: CONTACT_STATE_VERSION,
			registrationId: this.registrationId,
			identity: pairToJson(this.identity),
			signedPreKey: {
				...pairToJson(this.signedPreKey.keyPair),
				keyId: this.signedPreKey.keyId,
				signature: b64(this.signedPreKey.signature)
			},
			preKeys,
			unissuedPreKeyIds: [...this.unissued],
			nextPreKeyId: this.nextPreKeyId,
			sessions: structuredClone(Object.fromEntries(this.sessions))
		}
	}

	/** Hands out one unissued one-time prekey (generating a batch when none is left). */
	issuePreKey(): { keyId: number; keyPair: SignalKeyPair } {
		if (this.unissued.length === 0) this.generatePreKeys()
		const keyId = this.unissued.shift()!
		this.forgetOldIssuedPreKeys()
		return { keyId, keyPair: this.preKeys.get(keyId)! }
	}

	get unissuedPreKeyCount(): number {
		return this.unissued.length
	}

	hasOpenSession(address: string): boolean {
		const rec = this.sessions.get(address)
		return rec !== undefined && SessionRecord.deserialize(rec).haveOpenSession()
	}

	deleteSession(address: string): boolean {
		return this.sessions.delete(address)
	}

	sessionAddresses(): string[] {
		return [...this.sessions.keys()]
	}

	private generatePreKeys(): void {
		for (let i = 0; i < this.options.preKeyBatch; i++) {
			const id = this.nextPreKeyId
			this.nextPreKeyId = id >= MAX_PREKEY_ID ? 1 : id + 1
			this.preKeys.set(id, curve.generateKeyPair())
			this.unissued.push(id)
		}
	}

	private forgetOldIssuedPreKeys(): void {
		const issued = this.preKeys.size - this.unissued.length
		let excess = issued - this.options.maxIssuedPreKeys
		if (excess <= 0) return
		const unissued = new Set(this.unissued)
		for (const id of this.preKeys.keys()) {
			if (excess <= 0) break
			if (!unissued.has(id)) {
				this.preKeys.delete(id) // Map keeps insertion order: oldest first
				excess--
			}
		}
	}

	// ---- SignalStorage (called by libsignal) ----

	loadSession(id: string): SessionRecordInstance | undefined {
		const rec = this.sessions.get(id)
		// deserialize builds fresh objects (keys are decoded from base64), so
		// libsignal's mutations never reach the stored copy.
		return rec === undefined ? undefined : SessionRecord.deserialize(rec)
	}

	storeSession(id: string, record: SessionRecordInstance): void {
		this.sessions.set(id, record.serialize())
	}

	/**
	 * Trust on first use, like Baileys and WhatsApp Web: an account that re-pairs
	 * gets a new identity and its next pkmsg simply replaces the session.
	 */
	isTrustedIdentity(): boolean {
		return true
	}

	loadPreKey(id: number | undefined): SignalKeyPair | undefined {
		return id === undefined ? undefined : this.preKeys.get(Number(id))
	}

	removePreKey(id: number): void {
		this.preKeys.delete(Number(id))
	}

	loadSignedPreKey(id: number): SignalKeyPair | undefined {
		return Number(id) === this.signedPreKey.keyId ? this.signedPreKey.keyPair : undefined
	}

	getOurRegistrationId(): number {
		return this.registrationId
	}

	getOurIdentity(): SignalKeyPair {
		return this.identity
	}
}
