/**
 * Sends to numbers that are not on WhatsApp: failed with
 * NOT_ON_WHATSAPP, nothing reaches the simulator, the answer cached per session, lookups
 * paced; sends to registered numbers (a simulated contact, a paired account) unchanged.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { SessionPacing } from '../../src/sessions/types.js'
import type { ContactHub } from '../../sim/contacts-hub.js'
import type { Simulator } from '../../sim/sim.js'
import { startSim, waitUntil } from '../sim/helpers.js'
import { contractValidators, pendingCount, waitFor } from './helpers.js'
import { cmd, startHarness, type Harness } from './messaging-harness.js'

const SHOP = { name: 'num-1', phone: '15550300001' }
const OTHER = { name: 'num-2', phone: '15550300002' }
const PACED = { name: 'num-paced', phone: '15550300003' }
const CAROL = '15550309001'
const NOBODY = '15550309990'
const PACING: SessionPacing = { enabled: true, min_interval_s: 1.5, max_interval_s: 1.5, daily_cap: 100, warmup_days: 0, warmup_daily_cap: 100, composing_min_s: 0, composing_max_s: 0 }

describe('sends to numbers that are not on WhatsApp', () => {
	let sim: Simulator
	let hub: ContactHub
	let h: Harness
	const validators = contractValidators()

	before(async () => {
		sim = await startSim()
		hub = sim.contacts!
		hub.create({ phone: CAROL, pushName: 'Carol', deliveryDelayMs: 0, readDelayMs: null })
		h = await startHarness(sim)
		await h.registry.pair(SHOP.name, SHOP.phone)
		await h.registry.pair(OTHER.name, OTHER.phone)
		await h.registry.pair(PACED.name, PACED.phone, PACING)
	})

	after(async () => {
		await h?.stop()
		assert.deepEqual(sim.unhandled.entries, [], 'no unhandled stanzas')
		await sim?.close()
	})

	const failedOf = (messageId: string) =>
		h.waitEvent(`failed ${messageId}`, e => e.type === 'message.status' && e.payload.message_id === messageId && e.payload.status === 'failed')
	const statusesOf = async (messageId: string) =>
		(await h.events('message.status')).map(e => e.event).filter(e => e.payload.message_id === messageId).map(e => e.payload.status as string)
	const acked = (session: string) => waitFor(`acks on ${session}`, async () => ((await pendingCount(h.redis.client, `wapp:cmd:${session}`, 'engine')) === 0 ? true : undefined))

	it('a send to an unknown number ends failed NOT_ON_WHATSAPP, acked, and no message reaches the simulator', async () => {
		const received = sim.stats.messagesReceived
		const c = cmd.text(SHOP.name, { to: NOBODY, text: 'anyone there?' })
		await h.command(c)
		const e = await failedOf(c.payload.message_id)
		assert.equal(e.payload.code, 'NOT_ON_WHATSAPP')
		assert.match(String(e.payload.reason), new RegExp(NOBODY))
		assert.equal(e.payload.recipient, NOBODY)
		assert.equal(e.trace_id, c.trace_id)
		assert.ok(validators.event(e), validators.explain(validators.event))
		await acked(SHOP.name)
		assert.equal(await h.redis.client.get(`wapp:sent:${c.payload.message_id}`), 'failed')
		assert.deepEqual(await statusesOf(c.payload.message_id), ['sending', 'failed'])
		assert.equal(sim.stats.messagesReceived, received, 'no message stanza reached the simulator')
		assert.ok(sim.usync.lookups(NOBODY) >= 1)
	})

	it('the answer is cached per session: a second send to the same number fails without another lookup', async () => {
		const lookups = sim.usync.lookups(NOBODY)
		const received = sim.stats.messagesReceived
		const again = cmd.text(SHOP.name, { to: NOBODY, text: 'still nobody?' })
		await h.command(again)
		assert.equal((await failedOf(again.payload.message_id)).payload.code, 'NOT_ON_WHATSAPP')
		assert.equal(sim.usync.lookups(NOBODY), lookups, 'no USync query for a cached answer')
		assert.equal(h.messaging.numbers.get(SHOP.name, NOBODY), false)
		// Another session asks for itself (its own cache): one more lookup, same answer.
		const other = cmd.text(OTHER.name, { to: NOBODY, text: 'from elsewhere' })
		await h.command(other)
		assert.equal((await failedOf(other.payload.message_id)).payload.code, 'NOT_ON_WHATSAPP')
		assert.ok(sim.usync.lookups(NOBODY) > lookups)
		assert.equal(sim.stats.messagesReceived, received)
	})

	it('sends to a simulated contact and to a paired account still arrive; a known contact is not looked up again', async () => {
		const first = cmd.text(SHOP.name, { to: CAROL, text: 'hello carol' })
		await h.command(first)
		await waitUntil(() => hub.get(CAROL).received.some(r => r.id === first.payload.wa_id), 10_000, 'Carol got the first text')
		await h.waitEvent('sent', e => e.type === 'message.status' && e.payload.message_id === first.payload.message_id && e.payload.status === 'sent')
		assert.equal(h.messaging.numbers.get(SHOP.name, CAROL), true)
		const lookups = sim.usync.lookups(CAROL)
		const second = cmd.text(SHOP.name, { to: CAROL, text: 'hello again' })
		await h.command(second)
		await waitUntil(() => hub.get(CAROL).received.some(r => r.id === second.payload.wa_id), 10_000, 'Carol got the second text')
		assert.equal(sim.usync.lookups(CAROL), lookups, 'the second send asked nothing about Carol')

		const toAccount = cmd.text(SHOP.name, { to: OTHER.phone, text: 'hi other shop' })
		await h.command(toAccount)
		await h.waitEvent('sent to an account', e => e.type === 'message.status' && e.payload.message_id === toAccount.payload.message_id && e.payload.status === 'sent')
		assert.equal(h.messaging.numbers.get(SHOP.name, OTHER.phone), true)
		assert.ok(!(await statusesOf(toAccount.payload.message_id)).includes('failed'))
	})

	it('check_numbers fills the cache, so a send after it needs no lookup of its own', async () => {
		const unknown = '15550309991'
		const c = cmd.checkNumbers(OTHER.name, [unknown])
		await h.command(c)
		const [, raw] = (await h.redis.client.brpop(c.payload.reply_to, 10))!
		assert.equal(JSON.parse(raw).results[0].exists, false)
		const lookups = sim.usync.lookups(unknown)
		const send = cmd.text(OTHER.name, { to: unknown, text: 'hello?' })
		await h.command(send)
		assert.equal((await failedOf(send.payload.message_id)).payload.code, 'NOT_ON_WHATSAPP')
		assert.equal(sim.usync.lookups(unknown), lookups)
	})

	it('lookups are paced: sends to unknown numbers on a paced session fail one interval apart', async () => {
		const numbers = ['15550309981', '15550309982', '15550309983']
		const sends = numbers.map(n => cmd.text(PACED.name, { to: n, text: `hi ${n}` }))
		for (const c of sends) await h.command(c)
		for (const c of sends) await failedOf(c.payload.message_id)
		// Read back from the stream ids (ms timestamps) so the test's own polling does not blur them.
		const events = (await h.events('message.status')).filter(e => e.event.payload.status === 'failed' && sends.some(c => c.payload.message_id === e.event.payload.message_id))
		const times = events.map(e => Number(e.entryId.split('-')[0]))
		assert.equal(times.length, 3)
		for (let i = 1; i < times.length; i++) assert.ok(times[i]! - times[i - 1]! >= 1400, `lookup ${i} came ${times[i]! - times[i - 1]!} ms after the one before`)
		for (const n of numbers) assert.equal(sim.usync.lookups(n) >= 1, true)
	})
})
