// Simulated contacts against Baileys' own Signal code: the peer below is
// Baileys' real signal repository (makeLibSignalRepository) over an in-memory
// key store, fed through Baileys' real binary codec and message decoder, so a
// wire-format or padding mistake on the contact side fails here.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
	addTransactionCapability,
	type AuthenticationCreds,
	type BinaryNode,
	decodeBinaryNode,
	decryptMessageNode,
	downloadEncryptedContent,
	encodeBinaryNode,
	encodeWAMessage,
	extractE2ESessionFromRetryReceipt,
	getBinaryNodeChild,
	getBinaryNodeChildBuffer,
	getBinaryNodeChildren,
	getBinaryNodeChildUInt,
	getMediaKeys,
	getNextPreKeysNode,
	initAuthCreds,
	parseAndInjectE2ESessions,
	proto,
	type SignalDataSet,
	type SignalKeyStore,
	toBuffer
} from '@whiskeysockets/baileys'
import { makeLibSignalRepository } from '@whiskeysockets/baileys/lib/Signal/libsignal.js'
import pino from 'pino'
import {
	ContactError,
	encryptMedia,
	keyBundleNodes,
	keyBundleUserNode,
	lidAddress,
	mediaMessage,
	signalAddressFor,
	SimContact,
	textMessage,
	type WireKeyBundle
} from '../../sim/contacts/index.js'

const logger = pino({ level: 'silent' })

// The world of this test: account A (a Baileys companion, device 1) and contact C.
const A = { pn: '15550001', lid: '700000000000001', device: 1 }
const A_PN_DEVICE = `${A.pn}:${A.device}@s.whatsapp.net`
const A_LID_DEVICE = `${A.lid}:${A.device}@lid`
const lidForPn = (pnUser: string): string | undefined =>
	pnUser === `${A.pn}@s.whatsapp.net` ? `${A.lid}@lid` : undefined
const A_ADDR = signalAddressFor(A_LID_DEVICE, lidForPn)

function newContact(): SimContact {
	return SimContact.create({ pn: '15559999', lid: '900000000000009', name: 'Carol' })
}

/** Baileys' signal repository for account A, plus the prekey bundle its upload would give the server. */
async function baileysPeer() {
	const creds: AuthenticationCreds = initAuthCreds()
	const data = new Map<string, unknown>()
	const store: SignalKeyStore = {
		get: (type, ids) => {
			const out: Record<string, any> = {}
			for (const id of ids) if (data.has(`${type}/${id}`)) out[id] = data.get(`${type}/${id}`)
			return out
		},
		set: (set: SignalDataSet) => {
			for (const [type, values] of Object.entries(set)) {
				for (const [id, value] of Object.entries(values ?? {})) {
					if (value == null) data.delete(`${type}/${id}`)
					else data.set(`${type}/${id}`, value)
				}
			}
		}
	}
	const keys = addTransactionCapability(store, logger, { maxCommitRetries: 1, delayBetweenTriesMs: 1 })
	const repo = makeLibSignalRepository({ creds, keys }, logger)
	// The real upload stanza, through the real codec, read the way a server would.
	const { node } = await getNextPreKeysNode({ creds, keys }, 5)
	const upload = await decodeBinaryNode(encodeBinaryNode(node))
	const preKeys = getBinaryNodeChildren(getBinaryNodeChild(upload, 'list'), 'key')
	const skey = getBinaryNodeChild(upload, 'skey')!
	const popPreKey = (): WireKeyBundle => {
		const key = preKeys.shift()
		return {
			registrationId: getBinaryNodeChildUInt(upload, 'registration', 4)!,
			identityKey: getBinaryNodeChildBuffer(upload, 'identity')!,
			signedPreKey: {
				keyId: getBinaryNodeChildUInt(skey, 'id', 3)!,
				publicKey: getBinaryNodeChildBuffer(skey, 'value')!,
				signature: getBinaryNodeChildBuffer(skey, 'signature')!
			},
			preKey: key && {
				keyId: getBinaryNodeChildUInt(key, 'id', 3)!,
				publicKey: getBinaryNodeChildBuffer(key, 'value')!
			}
		}
	}
	return { repo, popPreKey, meId: A_PN_DEVICE, meLid: A_LID_DEVICE }
}
type Peer = Awaited<ReturnType<typeof baileysPeer>>

/** A `<message>` as the simulator would relay it from contact C to A, through the codec. */
async function relayedStanza(c: SimContact, enc: { type: string; ciphertext: Buffer }, addressing: 'pn' | 'lid') {
	const attrs: Record<string, string> =
		addressing === 'pn'
			? { from: c.pnJid, sender_lid: c.lidJid }
			: { from: c.lidJid, sender_pn: c.pnJid, addressing_mode: 'lid' }
	const node: BinaryNode = {
		tag: 'message',
		attrs: {
			id: `3EB0${Math.random().toString(16).slice(2, 14).toUpperCase()}`,
			t: '1764100000',
			type: 'text',
			notify: 'Carol',
			...attrs
		},
		content: [{ tag: 'enc', attrs: { v: '2', type: enc.type }, content: enc.ciphertext }]
	}
	return decodeBinaryNode(encodeBinaryNode(node))
}

/** Baileys decodes and decrypts a relayed stanza exactly as its messages-recv does. */
async function baileysReceives(peer: Peer, stanza: BinaryNode): Promise<proto.IMessage> {
	const { fullMessage, decrypt } = decryptMessageNode(stanza, peer.meId, peer.meLid, peer.repo, logger)
	await decrypt()
	assert.equal(fullMessage.messageStubType, undefined, `Baileys failed: ${fullMessage.messageStubParameters}`)
	return fullMessage.message!
}

/** Baileys' key fetch path: the server's `iq encrypt get` reply built from keyBundle(), then encrypt. */
async function baileysSends(peer: Peer, c: SimContact, message: proto.IMessage) {
	if (!(await peer.repo.validateSession(c.lidJid)).exists) {
		const reply: BinaryNode = {
			tag: 'iq',
			attrs: { type: 'result', from: 's.whatsapp.net', id: '1' },
			content: [{ tag: 'list', attrs: {}, content: [keyBundleUserNode(c.lidJid, c.keyBundle())] }]
		}
		await parseAndInjectE2ESessions(await decodeBinaryNode(encodeBinaryNode(reply)), peer.repo)
	}
	const { type, ciphertext } = await peer.repo.encryptMessage({ jid: c.lidJid, data: encodeWAMessage(message) })
	return { type, ciphertext: Buffer.from(ciphertext) }
}

describe('signal addresses', () => {
	it('names PN and LID forms of one device by the same LID address', () => {
		assert.equal(signalAddressFor(A_LID_DEVICE, lidForPn), `${A.lid}_1.1`)
		assert.equal(signalAddressFor(A_PN_DEVICE, lidForPn), `${A.lid}_1.1`)
		assert.equal(signalAddressFor(`${A.lid}@lid`, lidForPn), `${A.lid}_1.0`)
		assert.equal(lidAddress(A.lid, A.device), A_ADDR)
	})

	it('refuses a PN with no known LID and a non-user JID', () => {
		assert.throws(() => signalAddressFor('15550002:1@s.whatsapp.net', lidForPn), { code: 'bad_address' })
		assert.throws(() => signalAddressFor('123@g.us', lidForPn), { code: 'bad_address' })
		assert.throws(() => newContact().hasSession('no-device'), { code: 'bad_address' })
	})
})

describe('contact to Baileys', () => {
	for (const addressing of ['pn', 'lid'] as const) {
		it(`a first message is a pkmsg that Baileys decrypts when relayed ${addressing}-addressed`, async () => {
			const peer = await baileysPeer()
			const c = newContact()
			const enc = await c.encryptTo(A_ADDR, peer.popPreKey(), textMessage('hello from Carol'))
			assert.equal(enc.type, 'pkmsg')
			const got = await baileysReceives(peer, await relayedStanza(c, enc, addressing))
			assert.equal(got.conversation, 'hello from Carol')
			// Baileys keyed its session by the contact's LID either way.
			assert.equal((await peer.repo.validateSession(c.lidJid)).exists, true)
		})
	}

	it('keeps sending pkmsg until the account answers, without needing the bundle again', async () => {
		const peer = await baileysPeer()
		const c = newContact()
		await c.encryptTo(A_ADDR, peer.popPreKey(), textMessage('one'))
		const second = await c.encryptTo(A_ADDR, null, textMessage('two'))
		assert.equal(second.type, 'pkmsg')
		assert.equal((await baileysReceives(peer, await relayedStanza(c, second, 'pn'))).conversation, 'two')
	})

	it('refuses to encrypt with neither a session nor a bundle', async () => {
		await assert.rejects(newContact().encryptTo(A_ADDR, null, textMessage('x')), { code: 'no_session' })
	})

	it('refuses a bundle whose signed prekey signature does not verify', async () => {
		const peer = await baileysPeer()
		const bundle = peer.popPreKey()
		const signature = Buffer.from(bundle.signedPreKey.signature)
		signature[10]! ^= 0x01
		const bad = { ...bundle, signedPreKey: { ...bundle.signedPreKey, signature } }
		await assert.rejects(newContact().encryptTo(A_ADDR, bad, textMessage('x')), { code: 'bad_bundle' })
	})

	it('sends a media message Baileys can decrypt and download byte for byte', async () => {
		const peer = await baileysPeer()
		const c = newContact()
		const photo = Buffer.from(Array.from({ length: 5000 }, (_, i) => (i * 7) % 256))
		const media = await encryptMedia(photo, 'image')
		const location = { url: 'https://127.0.0.1:9443/v/t62/abc?ccb=1', directPath: '/v/t62/abc?ccb=1' }
		const msg = mediaMessage('image', media, location, { mimetype: 'image/jpeg', caption: 'look' })
		const got = await baileysReceives(
			peer,
			await relayedStanza(c, await c.encryptTo(A_ADDR, peer.popPreKey(), msg), 'pn')
		)
		const image = got.imageMessage!
		assert.equal(image.caption, 'look')
		assert.equal(Number(image.fileLength), photo.length)
		// Baileys' own download-and-decrypt path, with the hosted bytes served from a data: URL.
		const url = `data:application/octet-stream;base64,${media.encrypted.toString('base64')}`
		const plain = await toBuffer(await downloadEncryptedContent(url, await getMediaKeys(image.mediaKey, 'image')))
		assert.deepEqual(plain, photo)
	})
})

describe('Baileys to contact', () => {
	it('decrypts a first pkmsg built from keyBundle() and a follow-up msg', async () => {
		const peer = await baileysPeer()
		const c = newContact()
		const first = await baileysSends(peer, c, { conversation: 'hi Carol' })
		assert.equal(first.type, 'pkmsg')
		assert.equal((await c.decryptFrom(A_ADDR, 'pkmsg', first.ciphertext)).conversation, 'hi Carol')
		// The contact answers on the session the pkmsg set up: a plain msg.
		const reply = await c.encryptTo(A_ADDR, null, textMessage('hi A'))
		assert.equal(reply.type, 'msg')
		assert.equal((await baileysReceives(peer, await relayedStanza(c, reply, 'lid'))).conversation, 'hi A')
		const again = await baileysSends(peer, c, { extendedTextMessage: { text: 'and again' } })
		assert.equal(again.type, 'msg')
		// Relayed with a PN `from` this time: same device, same address, same session.
		const addrFromPn = signalAddressFor(A_PN_DEVICE, lidForPn)
		assert.equal((await c.decryptFrom(addrFromPn, 'msg', again.ciphertext)).extendedTextMessage?.text, 'and again')
	})

	it('hands out a different one-time prekey per bundle and refills when the batch runs out', () => {
		const c = SimContact.create({ pn: '1', lid: '2' }, { preKeyBatch: 3 })
		const ids = Array.from({ length: 7 }, () => c.keyBundle().preKey!.keyId)
		assert.deepEqual(ids, [1, 2, 3, 4, 5, 6, 7])
		const b = c.keyBundle()
		assert.equal(b.identityKey.length, 32)
		assert.equal(b.signedPreKey.publicKey.length, 32)
		assert.equal(b.signedPreKey.signature.length, 64)
		assert.equal(b.preKey!.publicKey.length, 32)
	})
})

describe('a conversation both ways', () => {
	it('alternates pkmsg then msg in both directions', async () => {
		const peer = await baileysPeer()
		const c = newContact()
		const types: string[] = []
		let enc = await c.encryptTo(A_ADDR, peer.popPreKey(), textMessage('c1'))
		types.push(enc.type)
		assert.equal((await baileysReceives(peer, await relayedStanza(c, enc, 'pn'))).conversation, 'c1')
		for (let i = 1; i <= 3; i++) {
			const fromA = await baileysSends(peer, c, { conversation: `a${i}` })
			types.push(fromA.type)
			assert.equal((await c.decryptFrom(A_ADDR, fromA.type, fromA.ciphertext)).conversation, `a${i}`)
			enc = await c.encryptTo(A_ADDR, null, textMessage(`c${i + 1}`))
			types.push(enc.type)
			assert.equal((await baileysReceives(peer, await relayedStanza(c, enc, 'lid'))).conversation, `c${i + 1}`)
		}
		assert.deepEqual(types, ['pkmsg', 'msg', 'msg', 'msg', 'msg', 'msg', 'msg'])
	})
})

describe('persistence', () => {
	it('a contact restored from JSON continues its sessions both ways', async () => {
		const peer = await baileysPeer()
		const c = newContact()
		const first = await baileysSends(peer, c, { conversation: 'before restart' })
		await c.decryptFrom(A_ADDR, first.type, first.ciphertext)
		const restored = SimContact.fromJSON(JSON.parse(JSON.stringify(c)))
		assert.deepEqual(restored.profile, c.profile)
		assert.equal(restored.registrationId, c.registrationId)
		assert.deepEqual(restored.identityKey, c.identityKey)
		assert.deepEqual(restored.sessions(), [A_ADDR])
		const out = await restored.encryptTo(A_ADDR, null, textMessage('after restart'))
		assert.equal(out.type, 'msg')
		assert.equal((await baileysReceives(peer, await relayedStanza(restored, out, 'pn'))).conversation, 'after restart')
		const back = await baileysSends(peer, restored, { conversation: 'welcome back' })
		assert.equal((await restored.decryptFrom(A_ADDR, back.type, back.ciphertext)).conversation, 'welcome back')
	})

	it('a restored contact still accepts a pkmsg to a prekey it handed out before saving', async () => {
		const peer = await baileysPeer()
		const c = newContact()
		const reply: BinaryNode = {
			tag: 'iq',
			attrs: { type: 'result', id: '1' },
			content: [{ tag: 'list', attrs: {}, content: [keyBundleUserNode(c.lidJid, c.keyBundle())] }]
		}
		const restored = SimContact.fromJSON(JSON.parse(JSON.stringify(c.toJSON())))
		await parseAndInjectE2ESessions(reply, peer.repo)
		const enc = await peer.repo.encryptMessage({ jid: c.lidJid, data: encodeWAMessage({ conversation: 'late' }) })
		assert.equal((await restored.decryptFrom(A_ADDR, 'pkmsg', Buffer.from(enc.ciphertext))).conversation, 'late')
	})

	it('refuses state of an unknown version', () => {
		const json = newContact().toJSON()
		assert.throws(() => SimContact.fromJSON({ ...json, signal: { ...json.signal, v: 2 as 1 } }), { code: 'bad_state' })
	})
})

describe('bad ciphertext', () => {
	it('a tampered msg is rejected with a clear error and the session survives it', async () => {
		const peer = await baileysPeer()
		const c = newContact()
		const first = await baileysSends(peer, c, { conversation: 'ok' })
		await c.decryptFrom(A_ADDR, first.type, first.ciphertext)
		await baileysReceives(peer, await relayedStanza(c, await c.encryptTo(A_ADDR, null, textMessage('ack')), 'pn'))
		const good = await baileysSends(peer, c, { conversation: 'intact' })
		assert.equal(good.type, 'msg')
		const tampered = Buffer.from(good.ciphertext)
		tampered[tampered.length - 12]! ^= 0xff // inside the ciphertext, before the 8-byte mac
		const err = await c.decryptFrom(A_ADDR, 'msg', tampered).then(
			() => assert.fail('tampered message decrypted'),
			(e: unknown) => e
		)
		assert.ok(err instanceof ContactError)
		assert.equal(err.code, 'bad_ciphertext')
		assert.match(err.message, new RegExp(`cannot decrypt msg from ${A_ADDR}`))
		assert.equal((await c.decryptFrom(A_ADDR, 'msg', good.ciphertext)).conversation, 'intact')
	})

	it('a msg from a device with no session and garbage as a pkmsg are both rejected', async () => {
		const c = newContact()
		await assert.rejects(c.decryptFrom(A_ADDR, 'msg', Buffer.from([0x33, 1, 2, 3])), { code: 'bad_ciphertext' })
		await assert.rejects(c.decryptFrom(A_ADDR, 'pkmsg', Buffer.from('not signal at all')), { code: 'bad_ciphertext' })
		assert.equal(c.hasSession(A_ADDR), false)
	})

	it('restarts a session from the bundle in a retry receipt (33-byte keys, as Baileys extracts it)', async () => {
		const peer = await baileysPeer()
		const c = newContact()
		await c.encryptTo(A_ADDR, peer.popPreKey(), textMessage('lost'))
		// A retry receipt carries <registration> and <keys> with the same children as a key fetch reply.
		const nodes = keyBundleNodes(peer.popPreKey())
		const receipt: BinaryNode = {
			tag: 'receipt',
			attrs: { type: 'retry', id: 'X' },
			content: [nodes[0]!, { tag: 'keys', attrs: {}, content: nodes.slice(1) }]
		}
		const bundle = extractE2ESessionFromRetryReceipt(receipt)
		assert.ok(bundle)
		assert.equal(bundle.identityKey.length, 33)
		c.resetSession(A_ADDR)
		const again = await c.encryptTo(A_ADDR, bundle, textMessage('resent'))
		assert.equal(again.type, 'pkmsg')
		assert.equal((await baileysReceives(peer, await relayedStanza(c, again, 'pn'))).conversation, 'resent')
	})

	it('resetSession forgets the session so the next send needs a fresh bundle', async () => {
		const peer = await baileysPeer()
		const c = newContact()
		await c.encryptTo(A_ADDR, peer.popPreKey(), textMessage('x'))
		assert.equal(c.resetSession(A_ADDR), true)
		assert.equal(c.hasSession(A_ADDR), false)
		const again = await c.encryptTo(A_ADDR, peer.popPreKey(), textMessage('fresh'))
		assert.equal(again.type, 'pkmsg')
		assert.equal((await baileysReceives(peer, await relayedStanza(c, again, 'pn'))).conversation, 'fresh')
	})
})
