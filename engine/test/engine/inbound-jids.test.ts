/**
 * How a received message names its chat and sender: the user, never one of its devices.
 * Every wapp session is a linked device (`<phone>:1`), so a message from one session to
 * another is sent by a device; the receiving side's `chat` and `from_pn` must still be
 * `<phone>@s.whatsapp.net`, the same form the api keeps for outbound recipients.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { Simulator } from '../../sim/sim.js'
import { startSim } from '../sim/helpers.js'
import { userJid } from '../../src/messaging/normalise.js'
import { cmd, startHarness, type Harness } from './messaging-harness.js'

const A = '15550410001'
const B = '15550410002'

describe('received messages name users, not devices', () => {
	let sim: Simulator
	let h: Harness

	before(async () => {
		sim = await startSim()
		h = await startHarness(sim)
		await h.registry.pair('jid-a', A)
		await h.registry.pair('jid-b', B)
	})

	after(async () => {
		await h?.stop()
		await sim?.close()
	})

	for (const addressing of ['phone number', 'LID'] as const) {
		it(`a message from another linked device, addressed by ${addressing}, names no device`, async () => {
			const to = addressing === 'LID' ? `${sim.store.getByPhone(B)!.lid}@lid` : B
			const c = cmd.text('jid-a', { to, text: `from a linked device by ${addressing}` })
			await h.command(c)
			const e = await h.waitEvent('received at b', e => e.type === 'message.received' && e.session === 'jid-b' && e.payload.wa_id === c.payload.wa_id)
			const aLid = `${sim.store.getByPhone(A)!.lid}@lid`
			assert.equal(e.payload.chat, addressing === 'LID' ? aLid : `${A}@s.whatsapp.net`)
			assert.equal(e.payload.from_pn, `${A}@s.whatsapp.net`)
			assert.equal(e.payload.from_lid, aLid)
		})
	}

	it('userJid drops the device and maps c.us, and leaves groups and broadcasts alone', () => {
		assert.equal(userJid(`${A}:1@s.whatsapp.net`), `${A}@s.whatsapp.net`)
		assert.equal(userJid('123456789012345:7@lid'), '123456789012345@lid')
		assert.equal(userJid(`${A}@c.us`), `${A}@s.whatsapp.net`)
		assert.equal(userJid('120363025246125486@g.us'), '120363025246125486@g.us')
		assert.equal(userJid('status@broadcast'), 'status@broadcast')
	})
})
