/**
 * Auth state at rest (design.md, Security): every value AES-256-GCM under a per-session
 * data key; the data key itself AES-256-GCM-wrapped by the master key. Redis never sees a
 * plaintext creds or signal key, nor an unwrapped data key.
 *
 * Wire format of every sealed value: 12-byte IV || 16-byte tag || ciphertext. The AAD binds
 * a value to its place (`wapp:auth:{session}` + field), so a value copied to another
 * field or session does not decrypt. `wapp keys rotate-master` (Python) re-wraps the
 * `dek` field only: unwrap with the old master key, wrap with the new, same AAD.
 */
import { createCipheriv, createDecipheriv, createSecretKey, randomBytes, type KeyObject } from 'node:crypto'
import { readFileSync, statSync } from 'node:fs'

export const KEY_BYTES = 32
const IV_BYTES = 12
const TAG_BYTES = 16

export class MasterKeyError extends Error {
	override name = 'MasterKeyError'
}

/** The master key file as `appliance/security/master_key.py` writes it: base64 of 32 bytes, 0600. */
export function loadMasterKey(file: string): Buffer {
	let raw: string
	try {
		const st = statSync(file)
		// Same rule as the Python loader: a key others can read is not a secret any more.
		if ((st.mode & 0o077) !== 0) throw new MasterKeyError(`master key file ${file} must be readable by its owner only (chmod 600)`)
		raw = readFileSync(file, 'utf8').trim()
	} catch (err) {
		if (err instanceof MasterKeyError) throw err
		throw new MasterKeyError(`cannot read the master key file ${file}: ${(err as Error).message}`)
	}
	if (!/^[A-Za-z0-9+/]+={0,2}$/.test(raw)) throw new MasterKeyError(`master key file ${file} is not base64`)
	const key = Buffer.from(raw, 'base64')
	if (key.length !== KEY_BYTES) throw new MasterKeyError(`master key file ${file} must hold ${KEY_BYTES} bytes, has ${key.length}`)
	return key
}

/**
 * A key as seal/open take it: raw bytes, or a `KeyObject` made once by `secretKey`. The
 * KeyObject is the fast path: given raw bytes, every cipher call imports the key again
 * (the `crypto/keys` slots of the send-burst profile, docs/benchmarks.md).
 */
export type SealKey = Buffer | KeyObject

/** Import a 32-byte key once, for many seal/open calls. */
export function secretKey(key: Buffer): KeyObject {
	if (key.length !== KEY_BYTES) throw new Error(`a data key has ${KEY_BYTES} bytes, not ${key.length}`)
	return createSecretKey(key)
}

export function seal(key: SealKey, plaintext: Buffer, aad: string): Buffer {
	const iv = randomBytes(IV_BYTES)
	const cipher = createCipheriv('aes-256-gcm', key, iv)
	cipher.setAAD(Buffer.from(aad, 'utf8'))
	const head = cipher.update(plaintext)
	const tail = cipher.final()
	// One allocation: IV || tag || ciphertext (the format every stored value has).
	const out = Buffer.allocUnsafe(IV_BYTES + TAG_BYTES + head.length + tail.length)
	iv.copy(out, 0)
	cipher.getAuthTag().copy(out, IV_BYTES)
	head.copy(out, IV_BYTES + TAG_BYTES)
	tail.copy(out, IV_BYTES + TAG_BYTES + head.length)
	return out
}

/** Throws on a wrong key, a wrong place (AAD) or any tampering. */
export function open(key: SealKey, sealed: Buffer, aad: string): Buffer {
	if (sealed.length < IV_BYTES + TAG_BYTES) throw new Error('sealed value too short')
	const decipher = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, IV_BYTES))
	decipher.setAAD(Buffer.from(aad, 'utf8'))
	decipher.setAuthTag(sealed.subarray(IV_BYTES, IV_BYTES + TAG_BYTES))
	const head = decipher.update(sealed.subarray(IV_BYTES + TAG_BYTES))
	const tail = decipher.final()
	return tail.length === 0 ? head : Buffer.concat([head, tail])
}

export function newDataKey(): Buffer {
	return randomBytes(KEY_BYTES)
}

interface Loaded {
	stamp: string
	key: Buffer
}

/**
 * The master key file and its rotation companions (`appliance/security/keyring.py` has the
 * same rules): `{file}.next` is the new key before `wapp keys rotate-master` swaps it in,
 * `{file}.old` the previous one until its last pass ends. Wrapping uses the newest; a
 * stored wrapping may be under any of them. Files are stat'ed on every use (a data key is
 * unwrapped once per session open) and re-read when they change, so a rotation needs no
 * engine restart.
 */
export class MasterKeyring {
	private readonly loaded = new Map<string, Loaded>()

	/** Loads the master key at once: a missing or bad file fails the start, as before. */
	constructor(readonly file: string) {
		this.load(file, true)
	}

	private load(file: string, required: boolean): Buffer | undefined {
		let stamp: string
		try {
			const st = statSync(file)
			stamp = `${st.ino}:${st.mtimeMs}:${st.size}`
		} catch (err) {
			if (!required && (err as NodeJS.ErrnoException).code === 'ENOENT') {
				this.loaded.delete(file)
				return undefined
			}
			return loadMasterKey(file) // throws the usual MasterKeyError
		}
		const cached = this.loaded.get(file)
		if (cached?.stamp === stamp) return cached.key
		const key = loadMasterKey(file)
		this.loaded.set(file, { stamp, key })
		return key
	}

	wrappingKey(): Buffer {
		return this.load(`${this.file}.next`, false) ?? (this.load(this.file, true) as Buffer)
	}

	unwrappingKeys(): Buffer[] {
		return [this.load(`${this.file}.next`, false), this.load(this.file, false), this.load(`${this.file}.old`, false)].filter(
			(key): key is Buffer => key !== undefined,
		)
	}
}
