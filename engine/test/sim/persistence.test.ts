import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { connectClient, endClient, pairByQr, startSim, waitForEvent, waitOpen } from './helpers.js'

describe('persistent mode', () => {
	const dataDir = mkdtempSync(join(tmpdir(), 'wa-sim-persist-'))
	after(() => rmSync(dataDir, { recursive: true, force: true }))

	it('lets saved devices log in again after the simulator restarts, with the same root key', async () => {
		const sim1 = await startSim({ dataDir, inMemory: false })
		const rootKey = Buffer.from(sim1.certs.root.public)
		const a = await pairByQr(sim1, '15550006001')
		const b = await pairByQr(sim1, '15550006002')
		const contactLid = sim1.contacts!.create({ phone: '15550006999' }).contact.lid
		await endClient(a)
		await endClient(b)
		await sim1.close()

		const sim2 = await startSim({ dataDir, inMemory: false })
		try {
			assert.ok(Buffer.from(sim2.certs.root.public).equals(rootKey))
			assert.equal(sim2.store.getByPhone('15550006001')!.devices.length, 1)
			assert.equal(sim2.contacts!.list()[0]!.lid, contactLid)
			const a2 = connectClient(sim2, a.auth)
			const b2 = connectClient(sim2, b.auth)
			await Promise.all([waitOpen(a2), waitOpen(b2)])
			const got = waitForEvent(b2, 'messages.upsert', u => u.messages.some(m => (m.message?.conversation ?? m.message?.extendedTextMessage?.text) === 'after restart'))
			await a2.sock.sendMessage('15550006002@s.whatsapp.net', { text: 'after restart' })
			await got
			await endClient(a2)
			await endClient(b2)
			assert.deepEqual(sim2.unhandled.entries, [], 'no unhandled stanzas')
		} finally {
			await sim2.close()
		}
	})
})
