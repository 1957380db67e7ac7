/**
 * The handshake slots' accounting: at most `limit` holders, FIFO
 * waiters, a release that counts once however often it is called, and the ages the
 * heartbeat reports so a slot never given back cannot hide.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Semaphore } from '../../src/sessions/semaphore.js'

/** A clock the test moves by hand, so ages are exact. */
function manualClock(start = 1_000_000) {
	let now = start
	return { now: () => now, advance: (ms: number) => void (now += ms) }
}

const tick = () => new Promise<void>(resolve => setImmediate(resolve))

describe('the handshake semaphore', () => {
	it('holds at most `limit`, hands a freed slot to the oldest waiter, and counts each release once', async () => {
		const slots = new Semaphore(2)
		const a = await slots.acquire()
		const b = await slots.acquire()
		const order: string[] = []
		const c = slots.acquire().then(r => (order.push('c'), r))
		const d = slots.acquire().then(r => (order.push('d'), r))
		await tick()
		assert.deepEqual([slots.inUse, slots.queued, order], [2, 2, []])

		a()
		a() // a second release of the same slot must not free another one
		a()
		await tick()
		assert.deepEqual([slots.inUse, slots.queued, order], [2, 1, ['c']])
		const releaseC = await c
		b()
		await tick()
		assert.deepEqual(order, ['c', 'd'])
		const releaseD = await d
		releaseC()
		releaseD()
		releaseD()
		assert.deepEqual([slots.inUse, slots.queued], [0, 0])
	})

	it('never lets a newcomer take a slot freed for a waiter (no over-limit, no queue jumping)', async () => {
		const slots = new Semaphore(1)
		const first = await slots.acquire()
		const waiter = slots.acquire()
		await tick()
		first()
		// Synchronously after the release: the slot is already the waiter's.
		const newcomer = slots.acquire()
		await tick()
		assert.equal(slots.inUse, 1)
		assert.equal(slots.queued, 1)
		;(await waiter)()
		;(await newcomer)()
		assert.deepEqual([slots.inUse, slots.queued], [0, 0])
	})

	it('reports how many hold and wait, and for how long the oldest of each', async () => {
		const clock = manualClock()
		const slots = new Semaphore(2, clock.now)
		assert.deepEqual(slots.stats(), { limit: 2, active: 0, waiting: 0, oldest_active_s: 0, oldest_waiting_s: 0 })
		const held = await slots.acquire()
		clock.advance(5000)
		const other = await slots.acquire()
		clock.advance(1000)
		const waiting = slots.acquire()
		clock.advance(2500)
		assert.deepEqual(slots.stats(), { limit: 2, active: 2, waiting: 1, oldest_active_s: 8.5, oldest_waiting_s: 2.5 })
		held()
		const third = await waiting
		clock.advance(500)
		// The oldest holder is now `other` (4 s); the former waiter holds since the release.
		assert.deepEqual(slots.stats(), { limit: 2, active: 2, waiting: 0, oldest_active_s: 4, oldest_waiting_s: 0 })
		other()
		assert.equal(slots.stats().oldest_active_s, 0.5)
		third()
		assert.deepEqual(slots.stats(), { limit: 2, active: 0, waiting: 0, oldest_active_s: 0, oldest_waiting_s: 0 })
	})
})
