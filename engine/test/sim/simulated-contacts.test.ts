import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import { downloadMediaMessage, proto, type WAMessage } from '@whiskeysockets/baileys'
import type { ContactHub } from '../../sim/contacts-hub.js'
import type { Simulator } from '../../sim/sim.js'
import { endClient, pairByQr, startSim, waitForEvent, waitStatus, waitUntil, type Client } from './helpers.js'

const A = '15550004001'
const C = '15550004999'
const textOf = (m: WAMessage) => m.message?.conversation ?? m.message?.extendedTextMessage?.text
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex')

describe('simulated contacts', () => {
	let sim: Simulator
	let hub: ContactHub
	let a: Client
	let lidA: string
	let lidC: string

	before(async () => {
		sim = await startSim()
		hub = sim.contacts!
		a = await pairByQr(sim, A, { bizName: 'Shop' })
		lidA = `${sim.store.getByPhone(A)!.lid}@lid`
		lidC = hub.create({ phone: C, pushName: 'Carol', deliveryDelayMs: 0, readDelayMs: 50 }).contact.lid
	})
	after(async () => {
		await endClient(a)
		assert.deepEqual(sim.unhandled.entries, [], 'no unhandled stanzas')
		await sim.close()
	})

	it('a contact sends a text to an account by phone number', async () => {
		const got = waitForEvent(a, 'messages.upsert', u => u.messages.some(m => textOf(m) === 'hello from Carol'))
		const sent = await hub.send(C, { to: A, text: 'hello from Carol' })
		const msg = (await got).messages.find(m => textOf(m) === 'hello from Carol')!
		assert.equal(msg.key.remoteJid, `${C}@s.whatsapp.net`)
		assert.equal(msg.pushName, 'Carol')
		await waitUntil(() => hub.get(C).sent.find(s => s.id === sent.id)!.receipts.length > 0, 5000, 'delivery receipt at the contact')
	})

	it('a contact sends a text to an account by LID', async () => {
		const got = waitForEvent(a, 'messages.upsert', u => u.messages.some(m => textOf(m) === 'hello via LID'))
		await hub.send(C, { to: lidA, text: 'hello via LID' })
		const msg = (await got).messages.find(m => textOf(m) === 'hello via LID')!
		assert.equal(msg.key.remoteJid, lidC)
	})

	it('an account sends a text the contact decrypts, and gets delivered then read receipts back', async () => {
		const sent = await a.sock.sendMessage(`${C}@s.whatsapp.net`, { text: 'hi Carol' })
		const id = sent!.key.id!
		await waitUntil(() => hub.get(C).received.some(r => r.id === id && r.text === 'hi Carol'), 5000, 'contact decrypted the text')
		const rec = hub.get(C).received.find(r => r.id === id)!
		assert.equal(rec.from, `${A}:1@s.whatsapp.net`)
		assert.equal(rec.error, undefined)
		await waitStatus(a, id, proto.WebMessageInfo.Status.READ)
	})

	it('an account sends media the contact downloads and decrypts byte for byte', async () => {
		const bytes = Buffer.from(Array.from({ length: 40_000 }, (_, i) => (i * 7) & 0xff))
		const sent = await a.sock.sendMessage(`${C}@s.whatsapp.net`, { document: bytes, mimetype: 'application/pdf', fileName: 'invoice.pdf' })
		await waitUntil(() => !!hub.get(C).received.find(r => r.id === sent!.key.id)?.media, 5000, 'contact got the media')
		const rec = hub.get(C).received.find(r => r.id === sent!.key.id)!
		assert.equal(rec.media!.sha256, sha(bytes))
		assert.equal(rec.media!.size, bytes.length)
		assert.equal(rec.media!.fileName, 'invoice.pdf')
	})

	it('a contact sends media the account downloads byte for byte', async () => {
		const bytes = Buffer.from(Array.from({ length: 25_000 }, (_, i) => (i * 13 + 1) & 0xff))
		const got = waitForEvent(a, 'messages.upsert', u => u.messages.some(m => !!m.message?.imageMessage))
		await hub.send(C, { to: A, media: { kind: 'image', dataBase64: bytes.toString('base64'), mimetype: 'image/jpeg', caption: 'look' } })
		const msg = (await got).messages.find(m => !!m.message?.imageMessage)!
		assert.equal(msg.message!.imageMessage!.caption, 'look')
		const downloaded = await downloadMediaMessage(msg, 'buffer', {})
		assert.ok(Buffer.from(downloaded).equals(bytes))
	})

	it('usync reports contacts as on WhatsApp with their LID', async () => {
		const [res] = (await a.sock.onWhatsApp(C))!
		assert.equal(res?.exists, true)
		const [none] = (await a.sock.onWhatsApp('15550004998')) ?? []
		assert.equal(none, undefined)
	})
})
