import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import { after, before, describe, it } from 'node:test'
import type { ControlServer } from '../../sim/control.js'
import type { Simulator } from '../../sim/sim.js'
import { connectClient, endClient, startControl, startSim, waitClose, waitForEvent, waitOpen, waitQr, waitStatus, waitUntil } from './helpers.js'

describe('control API', () => {
	let sim: Simulator
	let control: ControlServer

	async function call(method: string, path: string, body?: unknown, raw?: string) {
		const res = await fetch(`${control.url}${path}`, {
			method,
			headers: { 'content-type': 'application/json' },
			body: raw ?? (body === undefined ? undefined : JSON.stringify(body))
		})
		return { status: res.status, json: (await res.json()) as { success: boolean; data?: any; error?: { code: string; message: string; details: object } } }
	}

	before(async () => {
		sim = await startSim()
		control = await startControl(sim)
	})
	after(async () => {
		await control.close()
		await sim.close()
	})

	it('tells where the root key and the media CA certificate live', async () => {
		const { status, json } = await call('GET', '/info')
		assert.equal(status, 200)
		assert.equal(json.data.wsUrl, sim.wsUrl)
		assert.equal(readFileSync(json.data.rootPublicKeyFile, 'utf8').trim(), json.data.rootPublicKeyBase64)
		assert.equal(Buffer.from(json.data.rootPublicKeyHex, 'hex').equals(Buffer.from(sim.certs.root.public)), true)
		assert.ok(existsSync(json.data.caCertFile))
		assert.match(readFileSync(json.data.caCertFile, 'utf8'), /BEGIN CERTIFICATE/)
	})

	it('rejects bad input with the one error shape and never crashes', async () => {
		const cases: Array<[string, string, unknown, string | undefined, number, string]> = [
			['POST', '/accounts', { phone: 'abc' }, undefined, 400, 'INVALID_PHONE'],
			['POST', '/accounts', undefined, '{not json', 400, 'INVALID_JSON'],
			['POST', '/accounts', undefined, '[1,2]', 400, 'INVALID_JSON'],
			['GET', '/accounts/15559999999', undefined, undefined, 404, 'ACCOUNT_NOT_FOUND'],
			['GET', '/nope', undefined, undefined, 404, 'NOT_FOUND'],
			['DELETE', '/stats', undefined, undefined, 405, 'METHOD_NOT_ALLOWED'],
			['POST', '/faults/kick', { phone: '15550005001', kind: 'explode' }, undefined, 400, 'INVALID_FIELD'],
			['POST', '/faults/kick', { phone: '15550005001', kind: '515' }, undefined, 404, 'NOT_CONNECTED'],
			['POST', '/faults/iq', { delayMs: 10 }, undefined, 400, 'INVALID_FAULT'],
			['POST', '/faults/iq', { xmlns: 'usync', errorCode: 'x' }, undefined, 400, 'INVALID_FAULT'],
			['POST', '/pairing/qr-scan', { phone: '15550005001', qr: 'garbage' }, undefined, 400, 'INVALID_QR'],
			['POST', '/pairing/qr-scan', { phone: '15550005001', qr: 'a,b,c,d,e' }, undefined, 404, 'QR_NOT_FOUND'],
			['POST', '/contacts', { phone: '12' }, undefined, 400, 'INVALID_PHONE'],
			['POST', '/contacts/15550005999/messages', { to: '15550005001', text: 'x' }, undefined, 404, 'CONTACT_NOT_FOUND'],
			['DELETE', '/faults/999', undefined, undefined, 404, 'FAULT_NOT_FOUND']
		]
		for (const [method, path, body, raw, status, code] of cases) {
			const res = await call(method, path, body, raw)
			assert.equal(res.status, status, `${method} ${path}`)
			assert.equal(res.json.success, false)
			assert.equal(res.json.error!.code, code, `${method} ${path}`)
			assert.equal(typeof res.json.error!.message, 'string')
			assert.deepEqual(typeof res.json.error!.details, 'object')
		}
	})

	it('pairs by QR, inspects the account, drives a contact and a kick, all over HTTP', async () => {
		const phone = '15550005001'
		const first = connectClient(sim)
		const qr = await waitQr(first)
		const restarted = waitClose(first)
		const scan = await call('POST', '/pairing/qr-scan', { phone, qr, bizName: 'Http Co' })
		assert.equal(scan.status, 200, JSON.stringify(scan.json))
		assert.equal(scan.json.data.jid, `${phone}:1@s.whatsapp.net`)
		assert.equal(await restarted, 515)
		let client = connectClient(sim, first.auth)
		await waitOpen(client)

		const acc = await call('GET', `/accounts/${phone}`)
		assert.equal(acc.json.data.bizName, 'Http Co')
		assert.equal(acc.json.data.devices[0].connected, true)
		assert.ok(acc.json.data.devices[0].preKeys > 0)

		const contact = await call('POST', '/contacts', { phone: '15550005999', pushName: 'Dave', readDelayMs: 0 })
		assert.equal(contact.status, 200)
		assert.equal(contact.json.data.created, true)
		const got = waitForEvent(client, 'messages.upsert', u => u.messages.some(m => (m.message?.conversation ?? m.message?.extendedTextMessage?.text) === 'over http'))
		const sent = await call('POST', '/contacts/15550005999/messages', { to: phone, text: 'over http' })
		assert.equal(sent.status, 200, JSON.stringify(sent.json))
		await got

		const out = await client.sock.sendMessage('15550005999@s.whatsapp.net', { text: 'answer' })
		await waitUntil(() => hub().received.some(r => r.id === out!.key.id && r.text === 'answer'))
		const received = await call('GET', '/contacts/15550005999/received')
		assert.ok(received.json.data.some((r: { id: string; text: string }) => r.id === out!.key.id && r.text === 'answer'))

		const rule = await call('POST', '/faults/iq', { xmlns: 'usync', errorCode: 429 })
		assert.equal(rule.json.data.error.text, 'rate-overlimit')
		assert.equal((await call('DELETE', `/faults/${rule.json.data.id}`)).status, 200)

		const closed = waitClose(client)
		const kick = await call('POST', '/faults/kick', { phone, kind: '515' })
		assert.equal(kick.status, 200)
		assert.equal(await closed, 515)
		client = connectClient(sim, first.auth)
		await waitOpen(client)

		const stats = await call('GET', '/stats')
		assert.equal(stats.json.data.connectedClients, 1)
		assert.ok(stats.json.data.messagesRelayed >= 2)
		assert.deepEqual((await call('GET', '/unhandled')).json.data, [])
		await endClient(client)
	})

	it('drives pairing codes, ping silencing, message refusal, pause and unlinking over HTTP', async () => {
		const phone = '15550005002'
		const first = connectClient(sim)
		await waitQr(first)
		const code = await first.sock.requestPairingCode(phone)
		const restarted = waitClose(first)
		const linked = await call('POST', '/pairing/code', { phone, code })
		assert.equal(linked.status, 200, JSON.stringify(linked.json))
		assert.equal(await restarted, 515)
		const client = connectClient(sim, first.auth, { keepAliveIntervalMs: 500 })
		await waitOpen(client)

		const refuse = await call('POST', '/faults/messages', { phone, errorCode: 463, count: 1 })
		assert.equal(refuse.status, 200)
		const sent = await client.sock.sendMessage('15550005999@s.whatsapp.net', { text: 'refused over http' })
		await waitStatus(client, sent!.key.id!, 0)
		assert.equal((await call('GET', '/faults')).json.data.messageRules.length, 0, 'a count-limited rule is used up')

		assert.equal((await call('POST', '/server/pause')).json.data.paused, true)
		assert.equal((await call('GET', '/stats')).json.data.paused, true)
		assert.equal((await call('POST', '/server/resume')).json.data.paused, false)

		const silenced = await call('POST', '/faults/pings', { phone, answer: false })
		assert.equal(silenced.status, 200)
		assert.equal(await waitClose(client, 15_000), 408)
		assert.equal((await call('POST', '/faults/pings', { phone, answer: true })).status, 200)

		const again = connectClient(sim, first.auth)
		await waitOpen(again)
		const removed = waitClose(again)
		assert.equal((await call('DELETE', `/accounts/${phone}/devices/1`)).status, 200)
		assert.equal(await removed, 401)
		assert.equal((await call('GET', `/accounts/${phone}`)).json.data.devices.length, 0)
		assert.equal((await call('DELETE', `/accounts/${phone}/devices/1`)).status, 404)
	})

	function hub() {
		return sim.contacts!.get('15550005999')
	}
})
