import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { ControlServer } from '../../sim/control.js'
import type { Simulator } from '../../sim/sim.js'
import { startControl, startSim } from './helpers.js'

describe('POST /contacts on an existing contact', () => {
	let sim: Simulator
	let control: ControlServer

	async function post(body: unknown) {
		const res = await fetch(`${control.url}/contacts`, {
			method: 'POST',
			headers: { 'content-type': 'application/json' },
			body: JSON.stringify(body)
		})
		return (await res.json()) as { success: boolean; data: { created: boolean; contact: { lid: string; deliveryDelayMs: number; readDelayMs: number | null } } }
	}

	before(async () => {
		sim = await startSim()
		control = await startControl(sim)
	})
	after(async () => {
		await control.close()
		await sim.close()
	})

	it('retunes the receipt delays it is given and keeps the identity', async () => {
		const first = await post({ phone: '15559100' })
		assert.equal(first.data.created, true)
		assert.equal(first.data.contact.readDelayMs, null)
		const tuned = await post({ phone: '15559100', readDelayMs: 250, deliveryDelayMs: 10 })
		assert.equal(tuned.data.created, false)
		assert.equal(tuned.data.contact.readDelayMs, 250)
		assert.equal(tuned.data.contact.deliveryDelayMs, 10)
		assert.equal(tuned.data.contact.lid, first.data.contact.lid)
		const untouched = await post({ phone: '15559100' })
		assert.equal(untouched.data.contact.readDelayMs, 250)
		const never = await post({ phone: '15559100', readDelayMs: null })
		assert.equal(never.data.contact.readDelayMs, null)
	})
})
