// Media crypto for simulated contacts, checked against Baileys' own media code
// in both directions (its encryptedStream output decrypts here; the contact-to-
// Baileys download is covered in contacts.test.ts).
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { readFile, rm } from 'node:fs/promises'
import { describe, it } from 'node:test'
import { encryptedStream } from '@whiskeysockets/baileys'
import { decryptMedia, encryptMedia, findMedia, mediaMessage } from '../../sim/contacts/index.js'

const LOCATION = { url: 'https://127.0.0.1:9443/d/1?x=1', directPath: '/d/1?x=1' }

describe('media crypto', () => {
	it('round-trips bytes, including an exact multiple of the AES block and an empty file', async () => {
		for (const size of [0, 1, 16, 4096, 100_003]) {
			const plain = randomBytes(size)
			const media = await encryptMedia(plain, 'document')
			assert.equal(media.fileLength, size)
			assert.equal(media.encrypted.length, (Math.floor(size / 16) + 1) * 16 + 10)
			const back = await decryptMedia(media.encrypted, media.mediaKey, 'document', media)
			assert.deepEqual(back, plain, `size ${size}`)
		}
	})

	it('rejects a tampered blob, the wrong media type and a hash that does not match', async () => {
		const plain = randomBytes(1000)
		const media = await encryptMedia(plain, 'image')
		const tampered = Buffer.from(media.encrypted)
		tampered[5]! ^= 0x01
		await assert.rejects(decryptMedia(tampered, media.mediaKey, 'image'), {
			code: 'bad_media',
			message: /mac mismatch/
		})
		await assert.rejects(decryptMedia(media.encrypted, media.mediaKey, 'video'), { code: 'bad_media' })
		await assert.rejects(decryptMedia(media.encrypted, media.mediaKey, 'image', { fileSha256: Buffer.alloc(32) }), {
			code: 'bad_media',
			message: /fileSha256/
		})
		await assert.rejects(decryptMedia(tampered, media.mediaKey, 'image', { fileEncSha256: media.fileEncSha256 }), {
			code: 'bad_media',
			message: /fileEncSha256/
		})
		await assert.rejects(decryptMedia(media.encrypted.subarray(0, 20), media.mediaKey, 'image'), { code: 'bad_media' })
	})

	it('decrypts what Baileys encryptedStream produces, with matching hashes', async () => {
		const plain = randomBytes(70_000)
		const enc = await encryptedStream(plain, 'video')
		try {
			const blob = await readFile(enc.encFilePath)
			const back = await decryptMedia(blob, enc.mediaKey, 'video', enc)
			assert.deepEqual(back, plain)
			const ours = await encryptMedia(plain, 'video', enc.mediaKey)
			assert.deepEqual(ours.encrypted, blob, 'same key, same bytes as Baileys')
			assert.deepEqual(ours.fileEncSha256, enc.fileEncSha256)
			assert.deepEqual(ours.fileSha256, enc.fileSha256)
		} finally {
			await rm(enc.encFilePath, { force: true })
		}
	})
})

describe('media messages', () => {
	it('builds a document message and finds its media again', async () => {
		const media = await encryptMedia(Buffer.from('%PDF-1.4 tiny'), 'document')
		const msg = mediaMessage('document', media, LOCATION, { mimetype: 'application/pdf', fileName: 'a.pdf' })
		const doc = msg.documentMessage!
		assert.equal(doc.fileName, 'a.pdf')
		assert.equal(doc.directPath, LOCATION.directPath)
		assert.equal(doc.caption, undefined)
		const found = findMedia(msg)!
		assert.equal(found.kind, 'document')
		assert.equal(found.mediaType, 'document')
		const back = await decryptMedia(media.encrypted, found.mediaKey, found.mediaType, found)
		assert.equal(back.toString(), '%PDF-1.4 tiny')
	})

	it('finds nothing in a text message', () => {
		assert.equal(findMedia({ conversation: 'no media' }), undefined)
	})
})
