/**
 * Messages WhatsApp held while a session was offline are handed over at login marked
 * `offline`, and Baileys upserts them as `append`: they are received messages all the same.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { Simulator } from '../../sim/sim.js'
import { startSim, waitClose, waitUntil } from '../sim/helpers.js'
import { startHarness, type Harness } from './messaging-harness.js'

const PHONE = '15550500001'
const DORA = '15550500901'

describe('inbound while offline', () => {
	let sim: Simulator
	let h: Harness

	before(async () => {
		sim = await startSim()
		h = await startHarness(sim)
		await h.registry.pair('away-1', PHONE)
		sim.contacts!.create({ phone: DORA, pushName: 'Dora' })
	})

	after(async () => {
		await h?.stop()
		assert.deepEqual(sim.unhandled.entries, [])
		await sim?.close()
	})

	it('messages queued while the socket was down arrive as message.received, once each, in order', async () => {
		const s = h.registry.get('away-1')!
		const closed = waitClose(s.client!)
		s.sock!.end(undefined)
		await closed
		await waitUntil(() => !sim.live.get(PHONE, 1), 5000, 'the simulator sees the device offline')

		const text = await sim.contacts!.send(DORA, { to: PHONE, text: 'while you were away' })
		const image = await sim.contacts!.send(DORA, { to: PHONE, media: { kind: 'image', dataBase64: Buffer.alloc(900, 7).toString('base64'), mimetype: 'image/jpeg', caption: 'look' } })
		const reaction = await sim.contacts!.send(DORA, { to: PHONE, reaction: { emoji: '❤', targetId: text.id } })
		assert.equal(sim.relay.queued(PHONE, 1), 3)

		await h.registry.reopen(s)
		const ids = [text.id, image.id, reaction.id]
		await waitUntil(() => sim.relay.queued(PHONE, 1) === 0, 15_000, 'the offline queue handed over and acknowledged')
		const received = async () => (await h.events('message.received')).map(e => e.event.payload as { wa_id: string; kind: string; text: string | null; reaction: { target_wa_id: string } | null })
		for (let i = 0; i < 100 && (await received()).length < 3; i++) await new Promise(r => setTimeout(r, 100))
		const got = await received()
		assert.deepEqual(
			got.map(p => p.wa_id),
			ids
		)
		assert.deepEqual(
			got.map(p => p.kind),
			['text', 'image', 'reaction']
		)
		assert.equal(got[0]!.text, 'while you were away')
		assert.equal(got[2]!.reaction!.target_wa_id, text.id)

		// A message while online still arrives (`notify`), after them.
		const live = await sim.contacts!.send(DORA, { to: PHONE, text: 'now you are here' })
		await h.waitEvent('live message', e => e.type === 'message.received' && e.payload.wa_id === live.id)
		assert.deepEqual(
			(await received()).map(p => p.wa_id),
			[...ids, live.id]
		)
	})
})
