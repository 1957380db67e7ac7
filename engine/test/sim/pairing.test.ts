import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { Simulator } from '../../sim/sim.js'
import { connectClient, endClient, memoryAuthState, pairByQr, startSim, waitClose, waitForEvent, waitOpen, waitQr } from './helpers.js'

describe('pairing and login', () => {
	let sim: Simulator
	before(async () => {
		sim = await startSim({ qrRefs: 3 })
	})
	after(async () => {
		assert.deepEqual(sim.unhandled.entries, [], 'no unhandled stanzas')
		await sim.close()
	})

	it('pairs a companion by QR, restarts with 515 and opens with the LID the server gave', async () => {
		const client = await pairByQr(sim, '15550001001', { bizName: 'Acme' })
		const me = client.auth.creds.me!
		assert.equal(me.id, '15550001001:1@s.whatsapp.net')
		assert.equal(me.name, 'Acme')
		const acc = sim.store.getByPhone('15550001001')!
		assert.equal(me.lid, `${acc.lid}:1@lid`)
		assert.equal(acc.devices.length, 1)
		assert.ok(acc.devices[0]!.preKeys.length > 0, 'prekeys were uploaded after login')
		await endClient(client)
	})

	it('pairs with a pairing code entered on the phone', async () => {
		const client = connectClient(sim)
		await waitQr(client)
		const code = await client.sock.requestPairingCode('15550001002')
		const closed = waitClose(client)
		const res = await sim.pairing.enterCode('15550001002', code, { pushName: 'Code Phone' })
		assert.equal(res.ok, true, res.error)
		assert.equal(await closed, 515)
		const again = connectClient(sim, client.auth)
		await waitOpen(again)
		assert.equal(again.auth.creds.me!.id, '15550001002:1@s.whatsapp.net')
		await endClient(again)
	})

	it('refuses a wrong pairing code and the companion never gets linked', async () => {
		const client = connectClient(sim)
		await waitQr(client)
		await client.sock.requestPairingCode('15550001003')
		const res = await sim.pairing.enterCode('15550001003', 'AAAAAAAA', {}, 5000)
		assert.equal(res.ok, false)
		assert.equal(sim.store.getByPhone('15550001003')?.devices.length ?? 0, 0)
		await endClient(client)
	})

	it('logs in again with saved creds, and a second login replaces the first with 440', async () => {
		const first = await pairByQr(sim, '15550001004')
		await endClient(first)
		const a = connectClient(sim, first.auth)
		await waitOpen(a)
		const replaced = waitClose(a)
		const b = connectClient(sim, first.auth)
		await waitOpen(b)
		assert.equal(await replaced, 440)
		await endClient(b)
	})

	it('answers an unknown device with 401', async () => {
		const auth = memoryAuthState()
		auth.creds.me = { id: '15550009999:7@s.whatsapp.net', name: 'ghost' }
		const client = connectClient(sim, auth)
		assert.equal(await waitClose(client), 401)
	})

	it('closes with 408 once every QR ref has been shown', async () => {
		const client = connectClient(sim, memoryAuthState(), { qrTimeout: 100 })
		let qrs = 0
		client.sock.ev.on('connection.update', u => {
			if (u.qr) qrs++
		})
		assert.equal(await waitClose(client), 408)
		assert.equal(qrs, 3)
	})
})
