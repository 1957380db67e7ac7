/**
 * Messaging end to end through Redis, as the api drives it: commands XADDed to the
 * session streams and the control stream, events read back from `wapp:events`, the
 * simulator's contacts saying what really arrived.
 */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import type { ContactHub } from '../../sim/contacts-hub.js'
import type { Simulator } from '../../sim/sim.js'
import { startSim, waitUntil } from '../sim/helpers.js'
import { contractValidators, pendingCount, waitFor } from './helpers.js'
import { cmd, startHarness, type Harness } from './messaging-harness.js'

const SESSIONS = [
	{ name: 'shop-1', phone: '15550100001' },
	{ name: 'shop-2', phone: '15550100002' },
	{ name: 'shop-3', phone: '15550100003' },
]
const CAROL = '15550109001'
const DAN = '15550109002'
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex')
const bytes = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * seed + 3) & 0xff))

describe('messaging', () => {
	let sim: Simulator
	let hub: ContactHub
	let h: Harness
	let dir: string
	let http: Server
	let httpUrl: string
	const validators = contractValidators()

	before(async () => {
		sim = await startSim()
		hub = sim.contacts!
		hub.create({ phone: CAROL, pushName: 'Carol', deliveryDelayMs: 0, readDelayMs: 100 })
		hub.create({ phone: DAN, pushName: 'Dan', deliveryDelayMs: 0, readDelayMs: null })
		h = await startHarness(sim)
		for (const s of SESSIONS) await h.registry.pair(s.name, s.phone)
		dir = mkdtempSync(join(tmpdir(), 'wapp-messaging-'))
		http = createServer((req, res) => {
			if (req.url === '/photo.jpg') {
				res.writeHead(200, { 'content-type': 'image/jpeg' })
				res.end(bytes(30_000, 11))
			} else {
				res.writeHead(404).end()
			}
		})
		await new Promise<void>(r => http.listen(0, '127.0.0.1', r))
		const addr = http.address()
		httpUrl = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`
	})

	after(async () => {
		await h?.stop()
		http?.close()
		assert.deepEqual(sim.unhandled.entries, [], 'no unhandled stanzas')
		await sim?.close()
	})

	it('each session sends a text that reaches its contact once, with sending, sent, delivered and read events carrying the trace id', async () => {
		const sent = SESSIONS.map(s => cmd.text(s.name, { to: CAROL, text: `hello from ${s.name}` }))
		for (const c of sent) await h.command(c)
		for (const c of sent) {
			await waitUntil(() => hub.get(CAROL).received.some(r => r.id === c.payload.wa_id && r.text === c.payload.text), 10_000, `Carol got ${c.payload.text}`)
			for (const status of ['sending', 'sent', 'delivered', 'read']) {
				const e = await h.waitEvent(`${status} of ${c.session}`, e => e.type === 'message.status' && e.payload.message_id === c.payload.message_id && e.payload.status === status)
				assert.equal(e.trace_id, c.trace_id)
				assert.equal(e.session, c.session)
				assert.equal(e.payload.wa_id, c.payload.wa_id)
				assert.ok(validators.event(e), validators.explain(validators.event))
			}
		}
		for (const c of sent) assert.equal(hub.get(CAROL).received.filter(r => r.id === c.payload.wa_id).length, 1)
		for (const s of SESSIONS) await waitFor(`acks on ${s.name}`, async () => ((await pendingCount(h.redis.client, `wapp:cmd:${s.name}`, 'engine')) === 0 ? true : undefined))
		assert.equal(await h.redis.client.get(`wapp:sent:${sent[0]!.payload.message_id}`), 'sent')
	})

	it('every media kind reaches the contact byte for byte, from a stored blob or a URL', async () => {
		const kinds = [
			{ kind: 'image', mimetype: 'image/jpeg', caption: 'a photo' },
			{ kind: 'video', mimetype: 'video/mp4', caption: 'a clip' },
			{ kind: 'audio', mimetype: 'audio/mpeg' },
			{ kind: 'voice', mimetype: 'audio/ogg; codecs=opus' },
			{ kind: 'document', mimetype: 'application/pdf', filename: 'invoice.pdf', caption: 'your invoice' },
			{ kind: 'sticker', mimetype: 'image/webp' },
		] as const
		const sends = kinds.map((k, i) => {
			const data = bytes(20_000 + i * 1000, i + 5)
			const blob = join(dir, `blob-${k.kind}`)
			writeFileSync(blob, data)
			return { data, c: cmd.media('shop-1', { to: DAN, blob_path: blob, ...k }) }
		})
		const fromUrl = { data: bytes(30_000, 11), c: cmd.media('shop-2', { to: DAN, kind: 'image', mimetype: 'image/jpeg', url: `${httpUrl}/photo.jpg` }) }
		for (const { c } of [...sends, fromUrl]) await h.command(c)
		for (const { data, c } of [...sends, fromUrl]) {
			await waitUntil(() => !!hub.get(DAN).received.find(r => r.id === c.payload.wa_id)?.media, 15_000, `Dan got the ${c.payload.kind}`)
			const got = hub.get(DAN).received.find(r => r.id === c.payload.wa_id)!
			assert.equal(got.error, undefined)
			assert.equal(got.media!.sha256, sha(data), `${c.payload.kind} bytes`)
			// A voice note is an audio message on the wire.
			assert.equal(got.media!.kind, c.payload.kind === 'voice' ? 'audio' : c.payload.kind)
			if (c.payload.caption) assert.equal(got.media!.caption, c.payload.caption)
			if (c.payload.filename) assert.equal(got.media!.fileName, c.payload.filename)
		}
	})

	it('a media send whose blob is missing or whose URL fails is failed with MEDIA_UNAVAILABLE and acked', async () => {
		const missing = cmd.media('shop-3', { to: DAN, kind: 'image', mimetype: 'image/jpeg', blob_path: join(dir, 'nope.jpg') })
		const dead = cmd.media('shop-3', { to: DAN, kind: 'image', mimetype: 'image/jpeg', url: `${httpUrl}/gone.jpg` })
		for (const c of [missing, dead]) {
			await h.command(c)
			const e = await h.waitEvent('failed', e => e.type === 'message.status' && e.payload.message_id === c.payload.message_id && e.payload.status === 'failed')
			assert.equal(e.payload.code, 'MEDIA_UNAVAILABLE')
			assert.equal(e.trace_id, c.trace_id)
		}
		await waitFor('acked', async () => ((await pendingCount(h.redis.client, 'wapp:cmd:shop-3', 'engine')) === 0 ? true : undefined))
		assert.equal(hub.get(DAN).received.some(r => r.id === missing.payload.wa_id || r.id === dead.payload.wa_id), false)
	})

	it('location, contact card, reaction, quoted reply and mentions are sent and readable by the contact', async () => {
		const first = cmd.text('shop-2', { to: CAROL, text: 'the original' })
		await h.command(first)
		await waitUntil(() => hub.get(CAROL).received.some(r => r.id === first.payload.wa_id), 10_000, 'original')
		const target = { wa_id: first.payload.wa_id, chat: `${CAROL}@s.whatsapp.net`, from_me: true, participant: null, text: 'the original' }
		const others = [
			cmd.location('shop-2', { to: CAROL, latitude: 52.52, longitude: 13.405, name: 'Berlin' }),
			cmd.contact('shop-2', { to: CAROL, display_name: 'Eve', vcard: 'BEGIN:VCARD\nVERSION:3.0\nFN:Eve\nTEL;type=CELL;waid=15550109003:+15550109003\nEND:VCARD' }),
			cmd.reaction('shop-2', { to: CAROL, target, emoji: '👍' }),
			cmd.text('shop-2', { to: CAROL, text: 'a reply to it', quoted: target }),
			cmd.text('shop-2', { to: CAROL, text: '@15550109001 look', mentions: [CAROL] }),
		]
		for (const c of others) await h.command(c)
		for (const c of others) {
			await waitUntil(() => hub.get(CAROL).received.some(r => r.id === c.payload.wa_id), 10_000, `${c.type} arrived`)
			assert.equal(hub.get(CAROL).received.find(r => r.id === c.payload.wa_id)!.error, undefined, `${c.type} decrypted`)
			await h.waitEvent(`${c.type} sent`, e => e.type === 'message.status' && e.payload.message_id === c.payload.message_id && e.payload.status === 'sent')
		}
		assert.equal(hub.get(CAROL).received.find(r => r.id === others[3]!.payload.wa_id)!.text, 'a reply to it')
	})

	it("a contact's text and media arrive as normalised message.received events, by phone number and by LID", async () => {
		const lid = `${sim.store.getByPhone(SESSIONS[0]!.phone)!.lid}@lid`
		const carolLid = hub.get(CAROL).contact.profile.lid
		const byPn = await hub.send(CAROL, { to: SESSIONS[0]!.phone, text: 'hi shop' })
		const image = bytes(12_345, 7)
		const byLid = await hub.send(CAROL, { to: lid, media: { kind: 'image', dataBase64: image.toString('base64'), mimetype: 'image/jpeg', caption: 'see this' } })
		const text = await h.waitEvent('text received', e => e.type === 'message.received' && e.payload.wa_id === byPn.id)
		assert.ok(validators.event(text), validators.explain(validators.event))
		assert.equal(text.session, 'shop-1')
		assert.equal(text.payload.kind, 'text')
		assert.equal(text.payload.text, 'hi shop')
		assert.equal(text.payload.from_pn, `${CAROL}@s.whatsapp.net`)
		assert.equal(text.payload.push_name, 'Carol')
		const media = await h.waitEvent('image received', e => e.type === 'message.received' && e.payload.wa_id === byLid.id)
		assert.ok(validators.event(media), validators.explain(validators.event))
		assert.equal(media.payload.kind, 'image')
		assert.equal(media.payload.from_lid, `${carolLid}@lid`)
		assert.equal(media.payload.from_pn, `${CAROL}@s.whatsapp.net`)
		const info = media.payload.media as { caption: string; file_length: number; file_sha256: string; ref: Record<string, unknown> }
		assert.equal(info.caption, 'see this')
		assert.equal(info.file_length, image.length)
		assert.equal(Buffer.from(info.file_sha256, 'base64').toString('hex'), sha(image))

		// download_media: the engine decrypts it to the target path and replies on the list.
		const target = join(dir, 'downloads', 'carol.jpg')
		const dl = cmd.download('shop-1', info.ref as never, target)
		await h.command(dl)
		const [, raw] = (await h.redis.client.brpop(dl.payload.reply_to, 10))!
		const reply = JSON.parse(raw)
		assert.deepEqual(reply, { request_id: dl.payload.request_id, ok: true, path: target, size: image.length, code: null, reason: null })
		assert.equal(sha(readFileSync(target)), sha(image))
		assert.ok((await h.redis.client.ttl(dl.payload.reply_to)) <= 300)
	})

	it('download_media of media that is not on the server replies ok=false', async () => {
		const dl = cmd.download('shop-1', { kind: 'image', mimetype: 'image/jpeg', direct_path: '/d/nothing-here', url: `https://${sim.media.host}/d/nothing-here`, media_key: Buffer.alloc(32, 1).toString('base64'), file_enc_sha256: Buffer.alloc(32).toString('base64'), file_sha256: null, file_length: null }, join(dir, 'x.jpg'))
		await h.command(dl)
		const [, raw] = (await h.redis.client.brpop(dl.payload.reply_to, 10))!
		const reply = JSON.parse(raw)
		assert.equal(reply.ok, false)
		assert.equal(reply.code, 'DOWNLOAD_FAILED')
	})

	it('check_numbers replies on its list with who is on WhatsApp', async () => {
		const c = cmd.checkNumbers('shop-2', [CAROL, '15550109998', SESSIONS[2]!.phone])
		await h.command(c)
		const [, raw] = (await h.redis.client.brpop(c.payload.reply_to, 10))!
		const reply = JSON.parse(raw)
		assert.equal(reply.ok, true)
		assert.equal(reply.request_id, c.payload.request_id)
		const byPhone = Object.fromEntries(reply.results.map((r: { phone: string }) => [r.phone, r]))
		assert.equal(byPhone[CAROL].exists, true)
		assert.equal(byPhone[CAROL].jid, `${CAROL}@s.whatsapp.net`)
		assert.equal(byPhone['15550109998'].exists, false)
		assert.equal(byPhone[SESSIONS[2]!.phone].exists, true)
	})

	it('mark_read sends a read receipt the contact sees', async () => {
		const sent = await hub.send(DAN, { to: SESSIONS[2]!.phone, text: 'read me' })
		await h.waitEvent('received', e => e.type === 'message.received' && e.payload.wa_id === sent.id)
		await h.command(cmd.markRead('shop-3', [{ wa_id: sent.id, chat: `${DAN}@s.whatsapp.net`, from_me: false, participant: null, text: null }]))
		await waitUntil(() => hub.get(DAN).sent.find(s => s.id === sent.id)!.receipts.some(r => r.type === 'read'), 10_000, 'read receipt at Dan')
	})

	it('a redelivered command marked sent is acked without a send; one marked sending is sent again with the same id, once', async () => {
		const done = cmd.text('shop-1', { to: DAN, text: 'already sent' })
		await h.redis.client.set(`wapp:sent:${done.payload.message_id}`, 'sent')
		const crashed = cmd.text('shop-1', { to: DAN, text: 'crashed while sending' })
		await h.redis.client.set(`wapp:sent:${crashed.payload.message_id}`, 'sending')
		await h.command(done)
		await h.command(crashed)
		await waitUntil(() => hub.get(DAN).received.some(r => r.id === crashed.payload.wa_id), 10_000, 'resent message')
		await waitFor('acked', async () => ((await pendingCount(h.redis.client, 'wapp:cmd:shop-1', 'engine')) === 0 ? true : undefined))
		assert.equal(hub.get(DAN).received.some(r => r.id === done.payload.wa_id), false)
		assert.equal(hub.get(DAN).received.filter(r => r.id === crashed.payload.wa_id).length, 1)
		assert.equal(await h.redis.client.get(`wapp:sent:${crashed.payload.message_id}`), 'sent')
	})

	it('a message WhatsApp refuses is failed with SERVER_REJECTED', async () => {
		const rule = sim.faults.addMessageRule({ phone: SESSIONS[1]!.phone, errorCode: 479, count: 1 })
		const c = cmd.text('shop-2', { to: CAROL, text: 'refused' })
		await h.command(c)
		const e = await h.waitEvent('failed', e => e.type === 'message.status' && e.payload.message_id === c.payload.message_id && e.payload.status === 'failed')
		assert.equal(e.payload.code, 'SERVER_REJECTED')
		assert.match(String(e.payload.reason), /479/)
		sim.faults.remove(rule.id)
		assert.equal(hub.get(CAROL).received.some(r => r.id === c.payload.wa_id), false)
	})

	it('bad commands are rejected with command.rejected events and acked', async () => {
		const stream = 'wapp:cmd:shop-1'
		await h.redis.client.xadd(stream, '*', 'data', '{not json')
		const foreign = cmd.text('shop-2', { to: CAROL, text: 'wrong stream' })
		await h.redis.client.xadd(stream, '*', 'data', JSON.stringify(foreign))
		const invalid = cmd.text('shop-1', { to: CAROL, text: '' })
		await h.redis.client.xadd(stream, '*', 'data', JSON.stringify(invalid))
		const unpaced = cmd.markRead('shop-1', [{ wa_id: 'X', chat: `${CAROL}@s.whatsapp.net`, from_me: false, participant: null, text: null }])
		await h.redis.client.xadd(stream, '*', 'data', JSON.stringify(unpaced))
		const unknown = cmd.markRead('nobody', [{ wa_id: 'X', chat: `${CAROL}@s.whatsapp.net`, from_me: false, participant: null, text: null }])
		await h.command(unknown)
		const rejected = async (id: string | null, code: string) => {
			const e = await h.waitEvent(`${code} rejection`, e => e.type === 'command.rejected' && e.payload.code === code && (id === null || e.payload.command_id === id))
			assert.ok(validators.event(e), validators.explain(validators.event))
			return e
		}
		await rejected(null, 'INVALID_COMMAND')
		assert.equal((await rejected(foreign.id, 'UNKNOWN_SESSION')).trace_id, foreign.trace_id)
		await rejected(invalid.id, 'INVALID_COMMAND')
		await rejected(unpaced.id, 'UNSUPPORTED_COMMAND')
		await rejected(unknown.id, 'UNKNOWN_SESSION')
		await waitFor('all acked', async () => ((await pendingCount(h.redis.client, stream, 'engine')) === 0 && (await pendingCount(h.redis.client, 'wapp:cmd:engine:sandbox', 'engine')) === 0 ? true : undefined))
		assert.equal(hub.get(CAROL).received.some(r => r.id === foreign.payload.wa_id), false)
	})
})
