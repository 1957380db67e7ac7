/**
 * Messaging with a peer that is a full WhatsApp client (a second paired account):
 * presence both ways, and retry receipts.
 *
 * Retry receipts: a recipient that cannot decrypt a message (a "Bad MAC" after
 * simultaneous first messages both ways) asks for it again, and Baileys re-sends what
 * `getMessage` returns. The gateway's sockets keep no recent-message cache of their own,
 * so without messaging's bounded store of recent sends the message would be lost.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { encodeBigEndian, getBinaryNodeChild, type BinaryNode, type WAMessage } from '@whiskeysockets/baileys'
import type { Simulator } from '../../sim/sim.js'
import { endClient, pairByQr, startSim, waitForEvent, waitUntil, type Client } from '../sim/helpers.js'
import { cmd, startHarness, type Harness } from './messaging-harness.js'

const SENDER = '15550400001'
const RECEIVER = '15550400009'
const textOf = (m: WAMessage) => m.message?.conversation ?? m.message?.extendedTextMessage?.text

describe('messaging with a peer account', () => {
	let sim: Simulator
	let h: Harness
	let b: Client

	before(async () => {
		sim = await startSim()
		b = await pairByQr(sim, RECEIVER, { bizName: 'Receiver' })
		h = await startHarness(sim)
		await h.registry.pair('retrying', SENDER)
	})

	after(async () => {
		await h?.stop()
		if (b) await endClient(b)
		assert.deepEqual(sim.unhandled.entries, [])
		await sim?.close()
	})

	it('a message the recipient asks for again is re-sent from the store of recent sends', async () => {
		const seenAtB: BinaryNode[] = []
		b.sock.ws.on('CB:message', (node: BinaryNode) => seenAtB.push(node))
		const c = cmd.text('retrying', { to: RECEIVER, text: 'please decrypt me' })
		const got = waitForEvent(b, 'messages.upsert', u => u.messages.some(m => textOf(m) === 'please decrypt me'))
		await h.command(c)
		await got
		const id = c.payload.wa_id
		assert.equal(h.messaging.recent.message('retrying', id)?.extendedTextMessage?.text, 'please decrypt me')
		// What a device that failed to decrypt sends (Baileys' sendRetryRequest, minimal form).
		await b.sock.sendNode({
			tag: 'receipt',
			attrs: { id, to: `${SENDER}:1@s.whatsapp.net`, type: 'retry' },
			content: [
				{ tag: 'retry', attrs: { count: '1', id, t: String(Math.floor(Date.now() / 1000)), v: '1' } },
				{ tag: 'registration', attrs: {}, content: encodeBigEndian(b.auth.creds.registrationId) },
			],
		})
		await waitUntil(() => seenAtB.filter(n => n.attrs.id === id).length === 2, 10_000, 'the re-send at the recipient')
		const resend = seenAtB.filter(n => n.attrs.id === id)[1]!
		assert.equal(getBinaryNodeChild(resend, 'enc')!.attrs.count, '1')
	})

	it("a peer's typing arrives as presence.update, and the presence command shows ours at the peer", async () => {
		const chat = `${SENDER}@s.whatsapp.net`
		await b.sock.sendPresenceUpdate('composing', chat)
		const e = await h.waitEvent('presence.update', e => e.type === 'presence.update' && e.payload.presence === 'composing')
		assert.equal(e.session, 'retrying')
		assert.equal(e.payload.chat, `${RECEIVER}@s.whatsapp.net`)
		const seen = waitForEvent(b, 'presence.update', p => Object.values(p.presences).some(v => v.lastKnownPresence === 'recording'))
		await h.command(cmd.presence('retrying', 'recording', RECEIVER))
		const p = await seen
		assert.equal(p.id, chat)
	})

	it('the store of recent sends stays within its byte budget, oldest out first', async () => {
		const { RecentSends } = await import('../../src/messaging/recent-sends.js')
		const store = new RecentSends(50_000)
		for (let i = 0; i < 1000; i++) store.put('s', `ID${i}`, { message_id: `m${i}`, trace_id: 't', recipient: 'r' }, { conversation: 'x'.repeat(200) })
		assert.ok(store.usedBytes <= 50_000, `${store.usedBytes} bytes`)
		assert.ok(store.size > 50 && store.size < 1000)
		assert.equal(store.message('s', 'ID0'), undefined, 'the oldest went first')
		assert.equal(store.message('s', 'ID999')?.conversation, 'x'.repeat(200))
	})
})
