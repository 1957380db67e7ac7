// Prekey bundles in wire form, and the conversion to what libsignal wants.
//
// On the wire (the client's `iq encrypt set` upload, the server's `iq encrypt
// get <key>` reply) public keys are 32 raw bytes and the key type is a separate
// `<type>05</type>` child. libsignal wants 33-byte keys with the 0x05 prefix
// (what Baileys' `generateSignalPubKey` does). Signatures are always 64 bytes,
// computed over the 33-byte form of the signed prekey.
import { type BinaryNode, encodeBigEndian, KEY_BUNDLE_TYPE } from '@whiskeysockets/baileys'
import { ContactError } from './errors.js'
import { curve, type LibsignalDeviceBundle } from './libsignal.js'

/**
 * One device's prekey bundle as the server stores it from the device's upload
 * (and as `SimContact.keyBundle()` returns it). `preKey` is absent when the
 * device has run out of one-time prekeys; Signal then runs without it.
 */
export interface WireKeyBundle {
	registrationId: number
	/** 32 bytes (a 33-byte 0x05-prefixed key is accepted too). */
	identityKey: Uint8Array
	signedPreKey: { keyId: number; publicKey: Uint8Array; signature: Uint8Array }
	preKey?: { keyId: number; publicKey: Uint8Array } | undefined
}

const KEY_TYPE = 0x05

/** 32-byte wire key -> 33-byte libsignal key; a 33-byte 0x05 key passes through. */
export function toSignalPublicKey(key: Uint8Array, what = 'public key'): Buffer {
	if (key.length === 32) return Buffer.concat([Buffer.from([KEY_TYPE]), key])
	if (key.length === 33 && key[0] === KEY_TYPE) return Buffer.from(key)
	throw new ContactError('bad_bundle', `${what}: expected 32 bytes (or 33 with 0x05 prefix), got ${key.length}`)
}

/** 33-byte libsignal key -> 32-byte wire key. */
export function toWirePublicKey(key: Uint8Array): Buffer {
	if (key.length === 33 && key[0] === KEY_TYPE) return Buffer.from(key.subarray(1))
	if (key.length === 32) return Buffer.from(key)
	throw new ContactError('bad_bundle', `public key: unexpected length ${key.length}`)
}

function assertUint(n: number, bits: number, what: string): void {
	if (!Number.isInteger(n) || n < 0 || n >= 2 ** bits) {
		throw new ContactError('bad_bundle', `${what}: ${n} is not a ${bits}-bit unsigned integer`)
	}
}

/**
 * Validates a wire bundle and converts it for SessionBuilder.initOutgoing.
 * The signed-prekey signature is checked here because libsignal's initOutgoing
 * calls verifySignature with isInit=true, which skips the check entirely.
 */
export function toLibsignalBundle(bundle: WireKeyBundle): LibsignalDeviceBundle {
	assertUint(bundle.registrationId, 32, 'registrationId')
	assertUint(bundle.signedPreKey.keyId, 24, 'signedPreKey.keyId')
	const identityKey = toSignalPublicKey(bundle.identityKey, 'identityKey')
	const signedPub = toSignalPublicKey(bundle.signedPreKey.publicKey, 'signedPreKey.publicKey')
	const signature = Buffer.from(bundle.signedPreKey.signature)
	if (signature.length !== 64) {
		throw new ContactError('bad_bundle', `signedPreKey.signature: expected 64 bytes, got ${signature.length}`)
	}
	if (!curve.verifySignature(identityKey, signedPub, signature)) {
		throw new ContactError('bad_bundle', 'signedPreKey.signature does not verify against identityKey')
	}
	const out: LibsignalDeviceBundle = {
		registrationId: bundle.registrationId,
		identityKey,
		signedPreKey: { keyId: bundle.signedPreKey.keyId, publicKey: signedPub, signature }
	}
	if (bundle.preKey) {
		assertUint(bundle.preKey.keyId, 24, 'preKey.keyId')
		out.preKey = {
			keyId: bundle.preKey.keyId,
			publicKey: toSignalPublicKey(bundle.preKey.publicKey, 'preKey.publicKey')
		}
	}
	return out
}

const bytes = (u: Uint8Array): Buffer => Buffer.from(u)

/**
 * The children of one device's `<user jid=..>` in an `iq encrypt get <key>`
 * reply, exactly as Baileys' `parseAndInjectE2ESessions` reads them:
 * registration (4 bytes BE), type (05), identity (32), skey{id(3),value(32),signature(64)},
 * and key{id(3),value(32)} only when a one-time prekey is left.
 */
export function keyBundleNodes(bundle: WireKeyBundle): BinaryNode[] {
	const content: BinaryNode[] = [
		{ tag: 'registration', attrs: {}, content: bytes(encodeBigEndian(bundle.registrationId, 4)) },
		{ tag: 'type', attrs: {}, content: Buffer.from(KEY_BUNDLE_TYPE) },
		{ tag: 'identity', attrs: {}, content: toWirePublicKey(bundle.identityKey) },
		{
			tag: 'skey',
			attrs: {},
			content: [
				{ tag: 'id', attrs: {}, content: bytes(encodeBigEndian(bundle.signedPreKey.keyId, 3)) },
				{ tag: 'value', attrs: {}, content: toWirePublicKey(bundle.signedPreKey.publicKey) },
				{ tag: 'signature', attrs: {}, content: bytes(bundle.signedPreKey.signature) }
			]
		}
	]
	if (bundle.preKey) {
		content.push({
			tag: 'key',
			attrs: {},
			content: [
				{ tag: 'id', attrs: {}, content: bytes(encodeBigEndian(bundle.preKey.keyId, 3)) },
				{ tag: 'value', attrs: {}, content: toWirePublicKey(bundle.preKey.publicKey) }
			]
		})
	}
	return content
}

/** `<user jid=..>` with `keyBundleNodes` inside; `jid` must be the one the client asked for. */
export function keyBundleUserNode(jid: string, bundle: WireKeyBundle): BinaryNode {
	return { tag: 'user', attrs: { jid }, content: keyBundleNodes(bundle) }
}
