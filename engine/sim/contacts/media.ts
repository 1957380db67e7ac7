// WhatsApp media encryption for contacts, as pure functions over Buffers.
//
// Format (what Baileys' encryptedStream writes and downloadEncryptedContent reads):
//   mediaKey  = 32 random bytes, sent inside the message
//   HKDF-SHA256(mediaKey, 112, info = "WhatsApp <Type> Keys") -> iv(16) | cipherKey(32) | macKey(32) | unused
//   blob      = AES-256-CBC(cipherKey, iv, plaintext, PKCS#7) || HMAC-SHA256(macKey, iv || ciphertext)[0..10]
//   fileSha256 = sha256(plaintext), fileEncSha256 = sha256(blob), fileLength = plaintext length
// The key expansion is Baileys' own getMediaKeys, so the info string per media
// type can never drift from the client's; the rest is a few lines of node:crypto
// because Baileys' encryptedStream works on temp files, not Buffers.
import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import { getMediaKeys, type MediaType } from '@whiskeysockets/baileys'
import { ContactError } from './errors.js'

const MAC_LENGTH = 10
const AES_BLOCK = 16

export interface EncryptedMedia {
	mediaKey: Buffer
	/** The bytes the media server hosts: ciphertext followed by the 10-byte mac. */
	encrypted: Buffer
	fileSha256: Buffer
	fileEncSha256: Buffer
	fileLength: number
}

const sha256 = (b: Uint8Array): Buffer => createHash('sha256').update(b).digest()

/** Baileys' getMediaKeys, with macKey made non-optional (its type allows absence; it always sets it). */
async function mediaKeys(
	mediaKey: Uint8Array,
	mediaType: MediaType
): Promise<{ iv: Uint8Array; cipherKey: Uint8Array; macKey: Uint8Array }> {
	const { iv, cipherKey, macKey } = await getMediaKeys(mediaKey, mediaType)
	if (!macKey) throw new ContactError('bad_media', `no mac key derived for media type "${mediaType}"`)
	return { iv, cipherKey, macKey }
}

function macOf(macKey: Uint8Array, iv: Uint8Array, ciphertext: Uint8Array): Buffer {
	return createHmac('sha256', macKey).update(iv).update(ciphertext).digest().subarray(0, MAC_LENGTH)
}

/** Encrypts `plaintext` as media of `mediaType`; `mediaKey` defaults to 32 random bytes. */
export async function encryptMedia(
	plaintext: Uint8Array,
	mediaType: MediaType,
	mediaKey: Uint8Array = randomBytes(32)
): Promise<EncryptedMedia> {
	if (mediaKey.length !== 32) throw new ContactError('bad_media', `mediaKey must be 32 bytes, got ${mediaKey.length}`)
	const { iv, cipherKey, macKey } = await mediaKeys(mediaKey, mediaType)
	const aes = createCipheriv('aes-256-cbc', cipherKey, iv)
	const ciphertext = Buffer.concat([aes.update(plaintext), aes.final()])
	const encrypted = Buffer.concat([ciphertext, macOf(macKey, iv, ciphertext)])
	return {
		mediaKey: Buffer.from(mediaKey),
		encrypted,
		fileSha256: sha256(plaintext),
		fileEncSha256: sha256(encrypted),
		fileLength: plaintext.length
	}
}

export interface MediaExpectations {
	/** Checked against sha256(blob) before anything else, when given. */
	fileEncSha256?: Uint8Array | null | undefined
	/** Checked against sha256(plaintext) after decryption, when given. */
	fileSha256?: Uint8Array | null | undefined
}

/**
 * Decrypts a downloaded blob. Checks the mac (always) and the hashes the
 * message carried (when given), so a corrupted or substituted upload is
 * reported as such instead of as garbage bytes.
 */
export async function decryptMedia(
	encrypted: Uint8Array,
	mediaKey: Uint8Array,
	mediaType: MediaType,
	expect: MediaExpectations = {}
): Promise<Buffer> {
	if (encrypted.length < AES_BLOCK + MAC_LENGTH || (encrypted.length - MAC_LENGTH) % AES_BLOCK !== 0) {
		throw new ContactError('bad_media', `media blob of ${encrypted.length} bytes is not ciphertext + 10-byte mac`)
	}
	if (expect.fileEncSha256 && !sha256(encrypted).equals(Buffer.from(expect.fileEncSha256))) {
		throw new ContactError('bad_media', 'media blob does not match fileEncSha256')
	}
	const { iv, cipherKey, macKey } = await mediaKeys(mediaKey, mediaType)
	const ciphertext = encrypted.subarray(0, encrypted.length - MAC_LENGTH)
	const mac = encrypted.subarray(encrypted.length - MAC_LENGTH)
	if (!timingSafeEqual(macOf(macKey, iv, ciphertext), mac)) {
		throw new ContactError(
			'bad_media',
			`media mac mismatch (wrong mediaKey or media type "${mediaType}", or tampered blob)`
		)
	}
	let plaintext: Buffer
	try {
		const aes = createDecipheriv('aes-256-cbc', cipherKey, iv)
		plaintext = Buffer.concat([aes.update(ciphertext), aes.final()])
	} catch (err) {
		throw new ContactError('bad_media', `media decryption failed after a valid mac: ${String(err)}`, { cause: err })
	}
	if (expect.fileSha256 && !sha256(plaintext).equals(Buffer.from(expect.fileSha256))) {
		throw new ContactError('bad_media', 'decrypted media does not match fileSha256')
	}
	return plaintext
}
