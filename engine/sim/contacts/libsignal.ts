// Typed access to the `libsignal` npm package (the one Baileys itself runs).
//
// Why a typed require instead of `import 'libsignal'`: the package ships an
// index.d.ts that is wrong for what we use (it types `encrypt().body` as a
// string while the runtime returns a Buffer, omits `ProtocolAddress.from`,
// the error classes and `curve`, and types the storage callbacks loosely).
// An ambient `declare module` cannot override a package's own types, so we
// load the CommonJS module through createRequire and describe exactly the
// runtime surface of libsignal 6.0.0 (src/session_builder.js,
// src/session_cipher.js, src/session_record.js, src/curve.js) here.
import { createRequire } from 'node:module'

/** A Curve25519 key pair in libsignal form: pubKey is 33 bytes (0x05 prefix), privKey 32. */
export interface SignalKeyPair {
	pubKey: Buffer
	privKey: Buffer
}

/** The JSON-safe shape `SessionRecord.serialize()` returns (base64 strings and numbers). */
export type SerializedSessionRecord = { _sessions: Record<string, unknown>; version: string }

export interface SessionRecordInstance {
	serialize(): SerializedSessionRecord
	haveOpenSession(): boolean
}

export interface SessionRecordClass {
	new (): SessionRecordInstance
	deserialize(data: SerializedSessionRecord): SessionRecordInstance
}

export interface ProtocolAddressInstance {
	readonly id: string
	readonly deviceId: number
	toString(): string
}

export interface ProtocolAddressClass {
	new (id: string, deviceId: number): ProtocolAddressInstance
	/** Parses `name.device`; throws on anything else. */
	from(encoded: string): ProtocolAddressInstance
}

/** What SessionBuilder.initOutgoing reads: keys in 33-byte form. */
export interface LibsignalDeviceBundle {
	registrationId: number
	identityKey: Buffer
	signedPreKey: { keyId: number; publicKey: Buffer; signature: Buffer }
	preKey?: { keyId: number; publicKey: Buffer }
}

/**
 * The storage interface SessionBuilder and SessionCipher call (every call site
 * in session_builder.js and session_cipher.js). All methods may be sync or async:
 * libsignal awaits each result.
 */
export interface SignalStorage {
	loadSession(id: string): Promise<SessionRecordInstance | undefined> | SessionRecordInstance | undefined
	storeSession(id: string, record: SessionRecordInstance): Promise<void> | void
	isTrustedIdentity(id: string, identityKey: Buffer): Promise<boolean> | boolean
	loadPreKey(id: number | undefined): Promise<SignalKeyPair | undefined> | SignalKeyPair | undefined
	removePreKey(id: number): Promise<void> | void
	loadSignedPreKey(id: number): Promise<SignalKeyPair | undefined> | SignalKeyPair | undefined
	getOurRegistrationId(): Promise<number> | number
	getOurIdentity(): Promise<SignalKeyPair> | SignalKeyPair
}

export interface SessionBuilderClass {
	new (
		storage: SignalStorage,
		addr: ProtocolAddressInstance
	): {
		initOutgoing(device: LibsignalDeviceBundle): Promise<void>
	}
}

export interface SessionCipherClass {
	new (
		storage: SignalStorage,
		addr: ProtocolAddressInstance
	): {
		/** type 3 = PreKeyWhisperMessage (pkmsg), 1 = WhisperMessage (msg). */
		encrypt(data: Buffer): Promise<{ type: 1 | 3; body: Buffer; registrationId: number }>
		decryptPreKeyWhisperMessage(data: Buffer): Promise<Buffer>
		decryptWhisperMessage(data: Buffer): Promise<Buffer>
	}
}

export interface Curve {
	generateKeyPair(): SignalKeyPair
	calculateSignature(privKey: Buffer, message: Buffer): Buffer
	/** Returns false on a bad signature (it does not throw); throws on malformed input. */
	verifySignature(pubKey: Buffer, message: Buffer, signature: Buffer): boolean
}

interface Libsignal {
	ProtocolAddress: ProtocolAddressClass
	SessionBuilder: SessionBuilderClass
	SessionCipher: SessionCipherClass
	SessionRecord: SessionRecordClass
	curve: Curve
	SignalError: new (...args: unknown[]) => Error
}

const lib = createRequire(import.meta.url)('libsignal') as Libsignal

export const { ProtocolAddress, SessionBuilder, SessionCipher, SessionRecord, curve, SignalError } = lib
