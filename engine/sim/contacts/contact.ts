// A simulated contact: someone in the outside world with no Baileys behind
// them. It is the contact account's device 0 (the phone), holding a real Signal
// identity so it can send to and receive from real Baileys clients through the
// simulator. The simulator routes stanzas; this class only does the crypto.
import { encodeWAMessage, proto, unpadRandomMax16 } from '@whiskeysockets/baileys'
import { parseSignalAddress, type SignalAddress } from './address.js'
import { toLibsignalBundle, toWirePublicKey, type WireKeyBundle } from './bundle.js'
import { ContactError } from './errors.js'
import { SessionBuilder, SessionCipher } from './libsignal.js'
import { ContactSignalStore, type SignalStateJson, type StoreOptions } from './store.js'

export type EncType = 'pkmsg' | 'msg'

/** What goes into `<enc v="2" type=..>ciphertext</enc>`. */
export interface Encrypted {
	type: EncType
	ciphertext: Buffer
}

export interface ContactProfile {
	/** Phone number digits, the user part of `<pn>@s.whatsapp.net`. */
	pn: string
	/** The user part of `<lid>@lid`. */
	lid: string
	/** Push name sent as `notify` on relayed messages. */
	name?: string | undefined
}

/** The persisted form of a contact: profile plus Signal state. Plain JSON. */
export interface SimContactJson {
	profile: ContactProfile
	signal: SignalStateJson
}

export class SimContact {
	readonly profile: Readonly<ContactProfile>
	private readonly store: ContactSignalStore
	/** Per-address tail of the operation chain (see `serialize`). */
	private readonly queues = new Map<string, Promise<unknown>>()

	private constructor(profile: ContactProfile, store: ContactSignalStore) {
		this.profile = Object.freeze({ ...profile })
		this.store = store
	}

	/** A new contact with fresh keys. */
	static create(profile: ContactProfile, options?: StoreOptions): SimContact {
		if (!/^\d+$/.test(profile.pn) || !/^\d+$/.test(profile.lid)) {
			throw new ContactError('bad_address', `pn and lid must be digits: ${JSON.stringify(profile)}`)
		}
		return new SimContact(profile, ContactSignalStore.generate(options))
	}

	/** Restores a contact saved with `toJSON()`; sessions continue where they stopped. */
	static fromJSON(json: SimContactJson, options?: StoreOptions): SimContact {
		if (!json?.profile || !json.signal) throw new ContactError('bad_state', 'contact JSON lacks profile or signal')
		return new SimContact(json.profile, ContactSignalStore.fromJSON(json.signal, options))
	}

	/** Snapshot for persistence; JSON.stringify-safe. Take it after every encrypt/decrypt you want kept. */
	toJSON(): SimContactJson {
		return { profile: { ...this.profile }, signal: this.store.toJSON() }
	}

	get pnJid(): string {
		return `${this.profile.pn}@s.whatsapp.net`
	}

	get lidJid(): string {
		return `${this.profile.lid}@lid`
	}

	get registrationId(): number {
		return this.store.registrationId
	}

	/** The 32-byte identity public key, as it appears on the wire. */
	get identityKey(): Buffer {
		return toWirePublicKey(this.store.identity.pubKey)
	}

	/**
	 * What the server answers for this device in `iq encrypt get <key>`: one
	 * one-time prekey is handed out per call (consumed for good, as on the real
	 * server). Keys are 32-byte wire form; `keyBundleUserNode` builds the node.
	 */
	keyBundle(): WireKeyBundle {
		const pre = this.store.issuePreKey()
		const spk = this.store.signedPreKey
		return {
			registrationId: this.store.registrationId,
			identityKey: this.identityKey,
			signedPreKey: {
				keyId: spk.keyId,
				publicKey: toWirePublicKey(spk.keyPair.pubKey),
				signature: Buffer.from(spk.signature)
			},
			preKey: { keyId: pre.keyId, publicKey: toWirePublicKey(pre.keyPair.pubKey) }
		}
	}

	/** Is there an open session with `address`? If not, `encryptTo` needs a bundle. */
	hasSession(address: SignalAddress): boolean {
		return this.store.hasOpenSession(parseSignalAddress(address).toString())
	}

	/** Addresses this contact holds sessions with. */
	sessions(): SignalAddress[] {
		return this.store.sessionAddresses()
	}

	/**
	 * Forgets the session with `address`, so the next `encryptTo` starts a new
	 * one from a fresh bundle (a pkmsg). This is the contact's answer to a
	 * retry receipt; the simulator decides when to call it.
	 */
	resetSession(address: SignalAddress): boolean {
		return this.store.deleteSession(parseSignalAddress(address).toString())
	}

	/**
	 * Encrypts `message` for one remote device. With no open session, `bundle`
	 * (that device's prekey bundle, popped from the server's store) starts one
	 * and the result is a pkmsg until the remote answers; with a session the
	 * bundle is ignored, so pass null to avoid spending a prekey.
	 */
	encryptTo(address: SignalAddress, bundle: WireKeyBundle | null, message: proto.IMessage): Promise<Encrypted> {
		const addr = parseSignalAddress(address)
		return this.serialize(addr.toString(), async () => {
			if (!this.store.hasOpenSession(addr.toString())) {
				if (!bundle) throw new ContactError('no_session', `no session with ${addr} and no prekey bundle given`)
				await new SessionBuilder(this.store, addr).initOutgoing(toLibsignalBundle(bundle))
			}
			// Random padding 1..16 bytes, as every WhatsApp client does (Baileys' writeRandomPadMax16).
			const plaintext = encodeWAMessage(message)
			const { type, body } = await new SessionCipher(this.store, addr).encrypt(plaintext)
			return { type: type === 3 ? 'pkmsg' : 'msg', ciphertext: Buffer.from(body) }
		})
	}

	/** Decrypts one `<enc>` payload from the remote device `address`; returns the unpadded message. */
	decryptFrom(address: SignalAddress, type: EncType, ciphertext: Uint8Array): Promise<proto.Message> {
		const addr = parseSignalAddress(address)
		return this.serialize(addr.toString(), async () => {
			const cipher = new SessionCipher(this.store, addr)
			let padded: Buffer
			try {
				const data = Buffer.from(ciphertext)
				if (type === 'pkmsg') padded = await cipher.decryptPreKeyWhisperMessage(data)
				else if (type === 'msg') padded = await cipher.decryptWhisperMessage(data)
				else throw new Error(`unknown enc type ${JSON.stringify(type)}`)
			} catch (err) {
				const reason = err instanceof Error ? `${err.name}: ${err.message}` : String(err)
				throw new ContactError('bad_ciphertext', `cannot decrypt ${type} from ${addr}: ${reason}`, { cause: err })
			}
			try {
				return proto.Message.decode(unpadRandomMax16(padded))
			} catch (err) {
				throw new ContactError('bad_plaintext', `decrypted ${type} from ${addr} is not a message: ${String(err)}`, {
					cause: err
				})
			}
		})
	}

	/**
	 * Runs operations on one address one at a time. libsignal queues its own
	 * steps per address, but "build a session if none, then encrypt" is two
	 * steps; two concurrent sends could both build and the first pkmsg's session
	 * would be closed under it.
	 */
	private serialize<T>(key: string, op: () => Promise<T>): Promise<T> {
		const prev = this.queues.get(key) ?? Promise.resolve()
		const next = prev.then(op) // prev never rejects: it is a tail below
		const tail = next.catch(() => undefined)
		this.queues.set(key, tail)
		void tail.then(() => {
			if (this.queues.get(key) === tail) this.queues.delete(key)
		})
		return next
	}
}
