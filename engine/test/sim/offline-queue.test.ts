/**
 * The simulator's offline queue is WhatsApp's: complete (a stanza is owed until the device
 * acknowledges it, so a dying socket loses nothing) and persistent (a simulator restart
 * loses nothing, including receipts not yet due and the contacts' records).
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { proto, type BinaryNode, type WAMessage } from '@whiskeysockets/baileys'
import type { Simulator } from '../../sim/sim.js'
import { connectClient, endClient, pairByQr, sleep, startSim, waitOpen, waitStatus, waitUntil, type Client } from './helpers.js'

const PNG = Buffer.from('89504e470d0a1a0a0000000d4948445200000001000000010806000000', 'hex').toString('base64')

/** Received (not own) messages upserted on `client`, with the upsert type they came in. */
function received(client: Client): Array<{ msg: WAMessage; type: string }> {
	return (client.seen['messages.upsert'] ?? []).flatMap(u => u.messages.filter(m => !m.key.fromMe && m.message).map(msg => ({ msg, type: u.type })))
}

/** Stops reading the client's TCP socket: what the server writes from now on is never processed. */
function stopReading(client: Client): { destroy(): void } {
	const tcp = (client.sock.ws as unknown as { socket: { _socket: { pause(): void; destroy(): void } } }).socket._socket
	tcp.pause()
	return tcp
}

describe('offline queue', () => {
	const dataDir = mkdtempSync(join(tmpdir(), 'wa-sim-offline-'))
	const sims: Simulator[] = []
	after(async () => {
		for (const s of sims) await s.close()
		rmSync(dataDir, { recursive: true, force: true })
	})
	const stop = async (sim: Simulator) => {
		sims.splice(sims.indexOf(sim), 1)
		await sim.close()
	}
	const start = async () => {
		const sim = await startSim({ dataDir, inMemory: false })
		sims.push(sim)
		return sim
	}

	it('hands over what contacts sent an offline device, in order and marked offline, across a simulator restart', async () => {
		const sim1 = await start()
		const phone = '15550007001'
		const a = await pairByQr(sim1, phone)
		await endClient(a)
		await waitUntil(() => !sim1.live.get(phone, 1))
		sim1.contacts!.create({ phone: '15550007901', pushName: 'Carol' })
		const text = await sim1.contacts!.send('15550007901', { to: phone, text: 'sent while you were away' })
		const image = await sim1.contacts!.send('15550007901', { to: phone, media: { kind: 'image', dataBase64: PNG, mimetype: 'image/png', caption: 'a pixel' } })
		const reaction = await sim1.contacts!.send('15550007901', { to: phone, reaction: { emoji: '👍', targetId: text.id } })
		assert.equal(sim1.relay.queued(phone, 1), 3)
		await stop(sim1)

		const sim2 = await start()
		assert.equal(sim2.relay.queued(phone, 1), 3, 'the queue survived the restart')
		const offlineIds: string[] = []
		const a2 = connectClient(sim2, a.auth)
		a2.sock.ws.on('CB:message', (n: BinaryNode) => {
			if (n.attrs.offline) offlineIds.push(n.attrs.id!)
		})
		try {
			await waitOpen(a2)
			await waitUntil(() => received(a2).length === 3, 15_000, 'three offline messages')
			const got = received(a2)
			assert.deepEqual(
				got.map(g => g.msg.key.id),
				[text.id, image.id, reaction.id]
			)
			assert.deepEqual(offlineIds, [text.id, image.id, reaction.id], 'each stanza carried offline="1"')
			// What Baileys makes of offline stanzas: `append`, not `notify` (engine inbound.ts relies on it).
			assert.deepEqual(
				got.map(g => g.type),
				['append', 'append', 'append']
			)
			assert.equal(got[0]!.msg.message!.conversation, 'sent while you were away')
			assert.equal(got[1]!.msg.message!.imageMessage!.caption, 'a pixel')
			assert.equal(got[2]!.msg.message!.reactionMessage!.key!.id, text.id)
			// The device's receipts acknowledge them: nothing is owed any more.
			await waitUntil(() => sim2.relay.queued(phone, 1) === 0, 5000, 'queue drained by receipts')
			const sent = sim2.contacts!.get('15550007901').sent
			assert.deepEqual(
				sent.map(s => s.id),
				[text.id, image.id, reaction.id],
				'the contact still knows what it sent'
			)
			await waitUntil(() => sim2.contacts!.get('15550007901').sent.every(s => s.receipts.length > 0), 5000, 'delivery receipts reach the contact')
			assert.deepEqual(sim2.unhandled.entries, [])
		} finally {
			await endClient(a2)
		}
	})

	it('keeps receipts written to a dying socket and delivers them at the next login', async () => {
		const sim = sims.at(-1)!
		const phone = '15550007002'
		const a = await pairByQr(sim, phone)
		sim.contacts!.create({ phone: '15550007902', deliveryDelayMs: 200, readDelayMs: 400 })
		const sent = await a.sock.sendMessage('15550007902@s.whatsapp.net', { text: 'read me' })
		const id = sent!.key.id!
		// The socket dies unnoticed (as when its engine is killed): the simulator still
		// sees it open and writes both receipts into it; the device never reads them.
		const tcp = stopReading(a)
		await waitUntil(() => sim.contacts!.get('15550007902').received.some(r => r.id === id), 5000, 'contact got it')
		await sleep(800)
		assert.equal(sim.relay.queued(phone, 1), 2, 'delivery and read are still owed')
		tcp.destroy()
		await endClient(a)
		await waitUntil(() => !sim.live.get(phone, 1))

		const a2 = connectClient(sim, a.auth)
		try {
			await waitOpen(a2)
			await waitStatus(a2, id, proto.WebMessageInfo.Status.READ)
			await waitUntil(() => sim.relay.queued(phone, 1) === 0, 5000, 'receipts acknowledged')
		} finally {
			await endClient(a2)
		}
	})

	it('delivers receipts that fell due while the simulator was down, and keeps the contacts\' records', async () => {
		const sim1 = sims.at(-1)!
		const phone = '15550007003'
		const a = await pairByQr(sim1, phone)
		sim1.contacts!.create({ phone: '15550007903', deliveryDelayMs: 0, readDelayMs: 1500 })
		const sent = await a.sock.sendMessage('15550007903@s.whatsapp.net', { text: 'read me later' })
		const id = sent!.key.id!
		await waitStatus(a, id, proto.WebMessageInfo.Status.DELIVERY_ACK)
		await endClient(a)
		await stop(sim1) // the read receipt is not due yet
		await sleep(1600) // ... and falls due while no simulator runs

		const sim2 = await start()
		const records = sim2.contacts!.get('15550007903').received
		assert.deepEqual(
			records.map(r => [r.id, r.text]),
			[[id, 'read me later']],
			'received list survived the restart'
		)
		const a2 = connectClient(sim2, a.auth)
		try {
			await waitOpen(a2)
			await waitStatus(a2, id, proto.WebMessageInfo.Status.READ)
		} finally {
			await endClient(a2)
		}
	})

	it('records an engine\'s resend of the same message id once, even after a restart', async () => {
		const sim1 = sims.at(-1)!
		const phone = '15550007004'
		const a = await pairByQr(sim1, phone)
		sim1.contacts!.create({ phone: '15550007904' })
		const id = '3EB0AAAABBBBCCCCDDDD0001'
		await a.sock.sendMessage('15550007904@s.whatsapp.net', { text: 'once' }, { messageId: id })
		await waitUntil(() => sim1.contacts!.get('15550007904').received.some(r => r.text === 'once'), 5000, 'first copy')
		await endClient(a)
		await stop(sim1) // the relay's in-memory de-duplication is gone with it

		const sim2 = await start()
		const a2 = connectClient(sim2, a.auth)
		try {
			await waitOpen(a2)
			await a2.sock.sendMessage('15550007904@s.whatsapp.net', { text: 'once' }, { messageId: id })
			await waitUntil(() => sim2.stats.messagesRelayed > 0, 5000, 'resend relayed')
			await sleep(500)
			assert.equal(sim2.contacts!.get('15550007904').received.filter(r => r.id === id).length, 1)
		} finally {
			await endClient(a2)
		}
	})
})
