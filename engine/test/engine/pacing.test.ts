/**
 * The anti-ban pacer, observed where it matters: at the receiving side. The receiver is a
 * second paired account (a plain Baileys client), because the simulator forwards typing
 * indicators (`chatstate`) to accounts, not to its simulated contacts.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { WAMessage } from '@whiskeysockets/baileys'
import { Pacer } from '../../src/messaging/pacer.js'
import type { SessionPacing } from '../../src/sessions/types.js'
import type { Simulator } from '../../sim/sim.js'
import { endClient, pairByQr, sleep, startSim, waitUntil, type Client } from '../sim/helpers.js'
import { pendingCount, waitFor } from './helpers.js'
import { cmd, startHarness, type Harness } from './messaging-harness.js'

const SENDER = '15550200001'
const CAPPED = '15550200002'
const RECEIVER = '15550200009'
const CAROL = '15550209001'
const PACING: SessionPacing = { enabled: true, min_interval_s: 1.0, max_interval_s: 2.0, daily_cap: 100, warmup_days: 0, warmup_daily_cap: 100, composing_min_s: 0.3, composing_max_s: 0.6 }
const textOf = (m: WAMessage) => m.message?.conversation ?? m.message?.extendedTextMessage?.text

describe('pacing', () => {
	let sim: Simulator
	let h: Harness
	let receiver: Client
	const seen: { at: number; kind: 'presence' | 'message'; value: string }[] = []

	before(async () => {
		sim = await startSim()
		sim.contacts!.create({ phone: CAROL, deliveryDelayMs: 0, readDelayMs: null })
		receiver = await pairByQr(sim, RECEIVER, { bizName: 'Receiver' })
		receiver.sock.ev.on('presence.update', p => {
			for (const v of Object.values(p.presences)) seen.push({ at: Date.now(), kind: 'presence', value: v.lastKnownPresence })
		})
		receiver.sock.ev.on('messages.upsert', u => {
			for (const m of u.messages) if (!m.key.fromMe && textOf(m)) seen.push({ at: Date.now(), kind: 'message', value: textOf(m)! })
		})
		h = await startHarness(sim)
		await h.registry.pair('paced', SENDER, PACING)
		await h.registry.pair('capped', CAPPED, { ...PACING, min_interval_s: 0.1, max_interval_s: 0.2, composing_min_s: 0, composing_max_s: 0, daily_cap: 2 })
	})

	after(async () => {
		await h?.stop()
		if (receiver) await endClient(receiver)
		await sim?.close()
	})

	it('one session sends at intervals within [min, max], reads one command at a time, and shows composing then paused before each text', async () => {
		const texts = ['warm up', 'short', 'a somewhat longer message to type', 'x'.repeat(300), 'ok', 'the last one']
		for (const text of texts) await h.command(cmd.text('paced', { to: RECEIVER, text }))
		// While the pacer waits, the rest of the queue is still in Redis: never more than one entry read and unacked.
		let maxPending = 0
		while (seen.filter(s => s.kind === 'message').length < texts.length) {
			maxPending = Math.max(maxPending, await pendingCount(h.redis.client, 'wapp:cmd:paced', 'engine'))
			await sleep(20)
			if (seen.length > 0 && Date.now() - seen[0]!.at > 20_000) break
		}
		assert.ok(maxPending <= 1, `at most one command in hand, saw ${maxPending}`)
		const messages = seen.filter(s => s.kind === 'message')
		assert.deepEqual(messages.map(m => m.value), texts)
		// From the second gap on: the first message also sets up the Signal session (key
		// fetch, pkmsg), which delays its arrival and shortens the first gap seen here.
		for (let i = 2; i < messages.length; i++) {
			const gap = messages[i]!.at - messages[i - 1]!.at
			assert.ok(gap >= 1000 - 50 && gap <= 2000 + 250, `gap ${i}: ${gap} ms is outside [1000, 2000]`)
		}
		// Before each text: composing, then paused, then the text (and the typing lasts 0.3-0.6 s).
		let from = 0
		for (const m of messages) {
			const window = seen.filter(s => s.kind === 'presence' && s.at >= from && s.at <= m.at)
			const composing = window.find(s => s.value === 'composing')
			// Baileys reports a `paused` chatstate as lastKnownPresence 'available' (typing stopped).
			const paused = window.findLast(s => s.value === 'paused' || s.value === 'available')
			assert.ok(composing && paused && composing.at <= paused.at, `composing then paused before "${m.value}": ${JSON.stringify(window)}`)
			const typed = paused.at - composing.at
			assert.ok(typed >= 250 && typed <= 750, `typing shown for ${typed} ms`)
			from = m.at
		}
		await waitFor('pacer state saved', async () => ((await h.redis.client.hget('wapp:pacing:paced', 'count')) === String(texts.length) ? true : undefined))
	})

	it('a session at its daily cap reads nothing more: the rest waits in Redis', async () => {
		const sends = [1, 2, 3, 4].map(i => cmd.text('capped', { to: CAROL, text: `capped ${i}` }))
		for (const c of sends) await h.command(c)
		await waitUntil(() => sim.contacts!.get(CAROL).received.length >= 2, 10_000, 'two sends')
		await sleep(1500)
		const got = sim.contacts!.get(CAROL).received.map(r => r.id)
		assert.deepEqual(got, sends.slice(0, 2).map(c => c.payload.wa_id))
		assert.equal(await pendingCount(h.redis.client, 'wapp:cmd:capped', 'engine'), 0)
		const [group] = (await h.redis.client.xinfo('GROUPS', 'wapp:cmd:capped')) as unknown[][]
		const info = Object.fromEntries(Array.from({ length: group!.length / 2 }, (_, i) => [group![2 * i], group![2 * i + 1]]))
		assert.equal(info.lag, 2, 'two commands never read')
		assert.equal((await h.redis.client.hgetall('wapp:pacing:capped')).count, '2')
	})

	it('the daily cap ramps up over the warm-up days of a young number', () => {
		const pacing = { ...PACING, daily_cap: 1000, warmup_days: 10, warmup_daily_cap: 100 }
		const day = 86_400_000
		const now = Date.parse('2026-11-25T12:00:00Z')
		const capAt = (ageDays: number) => new Pacer(pacing, new Date(now - ageDays * day), undefined).dailyCap(now)
		assert.equal(capAt(0), 100)
		assert.equal(capAt(5), 550)
		assert.equal(capAt(9.5), 910)
		assert.equal(capAt(10), 1000)
		assert.equal(capAt(400), 1000)
		assert.equal(new Pacer(pacing, undefined, undefined).dailyCap(now), 1000, 'unknown pairing date: no ramp')
	})

	it('the pacer draws intervals within bounds, restores its pace after a restart and resets its count each UTC day', () => {
		const p = new Pacer({ ...PACING, daily_cap: 200 }, undefined, undefined)
		const t0 = Date.parse('2026-11-25T23:59:59Z')
		assert.ok(p.readyAt(t0) <= t0, 'nothing sent yet: ready at once')
		for (let i = 0; i < 199; i++) {
			p.recordSend(t0)
			const gap = p.sendAt() - t0
			assert.ok(gap >= 1000 && gap <= 2000, `interval ${gap}`)
			assert.ok(p.readyAt(t0) <= p.sendAt() && p.sendAt() - p.readyAt(t0) <= 600, 'read at most composing_max ahead')
		}
		p.recordSend(t0)
		assert.equal(p.sentToday(t0), 200)
		assert.equal(p.readyAt(t0), Date.parse('2026-11-26T00:00:00Z'), 'capped: nothing until the next UTC day')
		assert.equal(p.sentToday(t0 + 2000), 0, 'a new UTC day')
		const restored = new Pacer(PACING, undefined, p.snapshot())
		assert.ok(restored.sendAt() >= t0 + 1000, 'a restarted pacer does not send at once')
		assert.ok(restored.composingMs('x'.repeat(500)) >= 500, 'long text types near the maximum')
		assert.ok(restored.composingMs('x') <= 400, 'short text types near the minimum')
	})
})
