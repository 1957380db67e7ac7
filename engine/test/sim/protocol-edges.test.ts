import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { encodeBigEndian, getBinaryNodeChild, type BinaryNode } from '@whiskeysockets/baileys'
import type { Boom } from '@hapi/boom'
import type { Simulator } from '../../sim/sim.js'
import { endClient, pairByQr, startSim, waitForEvent, waitUntil, type Client } from './helpers.js'

const A = '15550007001'
const B = '15550007002'

describe('protocol edges', () => {
	let sim: Simulator
	let a: Client
	let b: Client

	before(async () => {
		sim = await startSim()
		a = await pairByQr(sim, A)
		b = await pairByQr(sim, B)
	})
	after(async () => {
		await endClient(a)
		await endClient(b)
		await sim.close()
	})

	it('answers an IQ it does not implement with a 501 error and records it as unhandled', async () => {
		await assert.rejects(a.sock.groupMetadata('120363000000000001@g.us'), (err: Boom) => err.data === 501)
		assert.equal(sim.unhandled.entries.length, 1)
		assert.match(sim.unhandled.entries[0]!.stanza, /w:g2/)
		sim.unhandled.clear()
	})

	it('tells a device its prekeys run low, and the device uploads more', async () => {
		const acc = sim.store.getByPhone(B)!
		const dev = acc.devices[0]!
		while (dev.preKeys.length > 2) sim.keys.takeWireBundle(B, dev)
		await waitUntil(() => dev.preKeys.length >= 7, 5000, 'prekey upload after the low-prekey notification')
		assert.deepEqual(sim.unhandled.entries, [])
	})

	it('unlinks a device that logs itself out', async () => {
		const c = await pairByQr(sim, '15550007003')
		assert.equal(sim.store.getByPhone('15550007003')!.devices.length, 1)
		await c.sock.logout()
		await waitUntil(() => sim.store.getByPhone('15550007003')!.devices.length === 0, 5000, 'device removed')
		assert.deepEqual(sim.unhandled.entries, [])
	})

	it('forwards a retry receipt to the sending device, which resends to that device only', async () => {
		const seenAtB: BinaryNode[] = []
		b.sock.ws.on('CB:message', (node: BinaryNode) => seenAtB.push(node))
		const got = waitForEvent(b, 'messages.upsert', u => u.messages.some(m => m.message?.extendedTextMessage?.text === 'retry me'))
		const sent = await a.sock.sendMessage(`${B}@s.whatsapp.net`, { text: 'retry me' })
		await got
		const id = sent!.key.id!
		// What a device that failed to decrypt sends (Baileys' sendRetryRequest, minimal form).
		await b.sock.sendNode({
			tag: 'receipt',
			attrs: { id, to: `${A}:1@s.whatsapp.net`, type: 'retry' },
			content: [
				{ tag: 'retry', attrs: { count: '1', id, t: String(Math.floor(Date.now() / 1000)), v: '1' } },
				{ tag: 'registration', attrs: {}, content: encodeBigEndian(b.auth.creds.registrationId) }
			]
		})
		await waitUntil(() => seenAtB.filter(n => n.attrs.id === id).length === 2, 5000, 'the resend at B')
		const resend = seenAtB.filter(n => n.attrs.id === id)[1]!
		assert.equal(resend.attrs.from, `${A}:1@s.whatsapp.net`)
		assert.equal(getBinaryNodeChild(resend, 'enc')!.attrs.count, '1')
		assert.deepEqual(sim.unhandled.entries, [])
	})
})
