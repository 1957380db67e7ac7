import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { downloadMediaMessage, proto, type WAMessage } from '@whiskeysockets/baileys'
import type { Simulator } from '../../sim/sim.js'
import { connectClient, endClient, pairByQr, startSim, waitForEvent, waitOpen, waitStatus, waitUntil, type Client } from './helpers.js'

const A = '15550002001'
const B = '15550002002'

const textOf = (m: WAMessage) => m.message?.conversation ?? m.message?.extendedTextMessage?.text

function waitText(client: Client, text: string, timeoutMs = 10_000): Promise<WAMessage> {
	return waitForEvent(client, 'messages.upsert', u => u.messages.some(m => textOf(m) === text), timeoutMs).then(u => u.messages.find(m => textOf(m) === text)!)
}

describe('messaging between two Baileys accounts', () => {
	let sim: Simulator
	let a: Client
	let b: Client
	let lidA: string
	let lidB: string

	before(async () => {
		sim = await startSim()
		a = await pairByQr(sim, A, { bizName: 'Alice Co' })
		b = await pairByQr(sim, B, { bizName: 'Bob Co' })
		lidA = `${sim.store.getByPhone(A)!.lid}@lid`
		lidB = `${sim.store.getByPhone(B)!.lid}@lid`
	})
	after(async () => {
		await endClient(a)
		await endClient(b)
		assert.deepEqual(sim.unhandled.entries, [], 'no unhandled stanzas')
		await sim.close()
	})

	it('relays a text A->B by phone number and reports delivery back to A', async () => {
		const got = waitText(b, 'hello B by PN')
		const sent = await a.sock.sendMessage(`${B}@s.whatsapp.net`, { text: 'hello B by PN' })
		const delivered = waitStatus(a, sent!.key.id!, proto.WebMessageInfo.Status.DELIVERY_ACK)
		const msg = await got
		assert.equal(msg.key.remoteJid, `${A}@s.whatsapp.net`)
		assert.equal(msg.key.fromMe, false)
		assert.equal(msg.key.id, sent!.key.id)
		await delivered
	})

	it('relays a text B->A by phone number', async () => {
		const got = waitText(a, 'hi A by PN')
		await b.sock.sendMessage(`${A}@s.whatsapp.net`, { text: 'hi A by PN' })
		assert.equal((await got).key.remoteJid, `${A.replace(A, B)}@s.whatsapp.net`)
	})

	it('relays a text A->B addressed by LID', async () => {
		const got = waitText(b, 'hello B by LID')
		const sent = await a.sock.sendMessage(lidB, { text: 'hello B by LID' })
		const msg = await got
		assert.equal(msg.key.remoteJid, lidA)
		await waitStatus(a, sent!.key.id!, proto.WebMessageInfo.Status.DELIVERY_ACK)
	})

	it('relays a text B->A addressed by LID', async () => {
		const got = waitText(a, 'hi A by LID')
		await b.sock.sendMessage(lidA, { text: 'hi A by LID' })
		assert.equal((await got).key.remoteJid, lidB)
	})

	it('forwards read receipts to the sender', async () => {
		const got = waitText(b, 'please read')
		const sent = await a.sock.sendMessage(`${B}@s.whatsapp.net`, { text: 'please read' })
		const msg = await got
		const read = waitStatus(a, sent!.key.id!, proto.WebMessageInfo.Status.READ)
		await b.sock.readMessages([msg.key])
		await read
	})

	it('delivers a repeated message id only once', async () => {
		const id = 'SIMDUP0000000000000001'
		const got = waitText(b, 'only once')
		await a.sock.sendMessage(`${B}@s.whatsapp.net`, { text: 'only once' }, { messageId: id })
		await got
		const before = sim.stats.duplicatesDropped
		await a.sock.sendMessage(`${B}@s.whatsapp.net`, { text: 'only once' }, { messageId: id })
		await new Promise(r => setTimeout(r, 500))
		assert.equal(sim.stats.duplicatesDropped, before + 1)
		const copies = (b.seen['messages.upsert'] ?? []).flatMap(u => u.messages).filter(m => m.key.id === id)
		assert.equal(copies.length, 1)
	})

	it('queues messages for an offline device and delivers them at login with the offline count', async () => {
		await endClient(b)
		await waitUntil(() => !sim.live.get(B, 1))
		const sent = await a.sock.sendMessage(`${B}@s.whatsapp.net`, { text: 'while you were away' })
		await waitUntil(() => sim.relay.queued(B, 1) === 1, 5000, 'message queued for the offline device')
		b = connectClient(sim, b.auth)
		const got = waitText(b, 'while you were away', 15_000)
		await waitOpen(b)
		const msg = await got
		assert.equal(msg.key.id, sent!.key.id)
		assert.equal(sim.relay.queued(B, 1), 0)
		await waitStatus(a, sent!.key.id!, proto.WebMessageInfo.Status.DELIVERY_ACK)
	})

	it('round-trips media through the HTTPS media server with identical bytes', async () => {
		const bytes = Buffer.alloc(70_000)
		for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 31 + 7) & 0xff
		const got = waitForEvent(b, 'messages.upsert', u => u.messages.some(m => !!m.message?.documentMessage))
		await a.sock.sendMessage(`${B}@s.whatsapp.net`, { document: bytes, mimetype: 'application/octet-stream', fileName: 'blob.bin' })
		const msg = (await got).messages.find(m => !!m.message?.documentMessage)!
		const downloaded = await downloadMediaMessage(msg, 'buffer', {})
		assert.ok(Buffer.from(downloaded).equals(bytes))
		assert.equal(sim.media.uploads >= 1, true)
	})

	it('fans a message out to every linked device of the recipient and to the sender\'s other devices', async () => {
		const b2 = await pairByQr(sim, B)
		const a2 = await pairByQr(sim, A)
		try {
			assert.equal(b2.auth.creds.me!.id, `${B}:2@s.whatsapp.net`)
			const onB1 = waitText(b, 'to all devices')
			const onB2 = waitText(b2, 'to all devices')
			const onA2 = waitForEvent(a2, 'messages.upsert', u => u.messages.some(m => m.key.fromMe && textOf(m) === 'to all devices'))
			await a.sock.sendMessage(`${B}@s.whatsapp.net`, { text: 'to all devices' })
			await Promise.all([onB1, onB2, onA2])
		} finally {
			await endClient(b2)
			await endClient(a2)
		}
	})
})
