import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { DisconnectReason, proto, type WAMessage } from '@whiskeysockets/baileys'
import type { Boom } from '@hapi/boom'
import type { KickKind } from '../../sim/faults.js'
import type { Simulator } from '../../sim/sim.js'
import { connectClient, endClient, pairByQr, startSim, waitClose, waitForEvent, waitOpen, waitStatus, waitUntil, type Client } from './helpers.js'

const A = '15550003001'
const B = '15550003002'

describe('fault injection', () => {
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
		assert.deepEqual(sim.unhandled.entries, [], 'no unhandled stanzas')
		await sim.close()
	})

	/** Kicks A's device and returns the DisconnectReason its socket closed with; then logs A in again. */
	async function kick(kind: KickKind): Promise<number | undefined> {
		await waitUntil(() => !!sim.live.get(A, 1), 5000, 'A connected')
		const closed = waitClose(a)
		assert.equal(sim.kick(A, 1, kind), true)
		const code = await closed
		if (kind !== '401') {
			a = connectClient(sim, a.auth)
			await waitOpen(a)
		}
		return code
	}

	const expected: Array<[KickKind, number]> = [
		['515', DisconnectReason.restartRequired],
		['440', DisconnectReason.connectionReplaced],
		['500', DisconnectReason.badSession],
		['403', DisconnectReason.forbidden],
		['xmlstreamend', DisconnectReason.connectionClosed],
		['drop', DisconnectReason.connectionClosed]
	]
	for (const [kind, reason] of expected) {
		it(`kick ${kind} closes the client with DisconnectReason ${reason}`, async () => {
			assert.equal(await kick(kind), reason)
		})
	}

	it('stops answering pings so the client gives up with 408', async () => {
		const c = await pairByQr(sim, '15550003003', { config: { keepAliveIntervalMs: 500 } })
		sim.faults.silentPings.add('15550003003:1@s.whatsapp.net')
		try {
			assert.equal(await waitClose(c, 15_000), DisconnectReason.connectionLost)
		} finally {
			sim.faults.silentPings.clear()
		}
	})

	it('answers an IQ with 429 rate-overlimit, which Baileys raises as a Boom with data 429', async () => {
		sim.faults.addIqRule({ xmlns: 'usync', errorCode: 429, count: 1 })
		await assert.rejects(a.sock.onWhatsApp(B), (err: Boom) => err.data === 429 && /rate-overlimit/.test(err.message))
		const [found] = (await a.sock.onWhatsApp(B))!
		assert.equal(found?.exists, true)
	})

	it('delays an IQ by the configured time', async () => {
		sim.faults.addIqRule({ xmlns: 'usync', delayMs: 400, count: 1 })
		const t0 = Date.now()
		await a.sock.onWhatsApp(B)
		assert.ok(Date.now() - t0 >= 380)
	})

	it('refuses a message with an ack error, which Baileys reports as status ERROR', async () => {
		sim.faults.addMessageRule({ phone: A, errorCode: 479, count: 1 })
		const sent = await a.sock.sendMessage(`${B}@s.whatsapp.net`, { text: 'refused' })
		await waitStatus(a, sent!.key.id!, proto.WebMessageInfo.Status.ERROR)
		await new Promise(r => setTimeout(r, 200))
		const gotIt = (b.seen['messages.upsert'] ?? []).some(u => u.messages.some((m: WAMessage) => m.key.id === sent!.key.id))
		assert.equal(gotIt, false)
	})

	it('holds all traffic while paused and delivers it on resume', async () => {
		const text = 'after the pause'
		const got = waitForEvent(b, 'messages.upsert', u => u.messages.some(m => (m.message?.conversation ?? m.message?.extendedTextMessage?.text) === text))
		sim.pause()
		const received = sim.stats.messagesReceived
		// Not awaited: the send may need IQs answered, which the paused server holds.
		const sending = a.sock.sendMessage(`${B}@s.whatsapp.net`, { text })
		await new Promise(r => setTimeout(r, 300))
		assert.equal(sim.stats.messagesReceived, received, 'nothing processed while paused')
		sim.resume()
		await sending
		await got
	})

	it('kick 401 device_removed logs the device out for good', async () => {
		assert.equal(await kick('401'), DisconnectReason.loggedOut)
		assert.equal(sim.store.getByPhone(A)!.devices.length, 0)
		const again = connectClient(sim, a.auth)
		assert.equal(await waitClose(again), DisconnectReason.loggedOut)
	})
})
