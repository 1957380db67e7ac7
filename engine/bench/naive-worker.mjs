/**
 * The naive design, for engine_memory's comparison: ONE plain Baileys socket in its own
 * Node process, no gateway around it. It pairs through the simulator's control API, sends
 * its messages, receives its contacts' messages, then collects garbage and reports.
 *
 * argv: JSON {wsUrl, controlUrl, rootKeyB64, phone, contacts: [phone...], perContact}
 * stdout: JSON lines {event: 'open'} / {event: 'sent', count} / {event: 'done', received, rss}
 * stdin: a line "report" asks for the final report once the contacts have sent.
 */
import { createInterface } from 'node:readline'
import makeWASocket, { Browsers, initAuthCreds, WA_CERT_DETAILS } from '@whiskeysockets/baileys'
import pino from 'pino'

const args = JSON.parse(process.argv[2])
WA_CERT_DETAILS.PUBLIC_KEY = Buffer.from(args.rootKeyB64, 'base64')
const out = obj => process.stdout.write(JSON.stringify(obj) + '\n')

const data = new Map()
const auth = {
	creds: initAuthCreds(),
	keys: {
		async get(type, ids) {
			const o = {}
			for (const id of ids) {
				const v = data.get(`${type}:${id}`)
				if (v !== undefined) o[id] = v
			}
			return o
		},
		async set(set) {
			for (const [type, entries] of Object.entries(set)) {
				for (const [id, v] of Object.entries(entries ?? {})) {
					if (v == null) data.delete(`${type}:${id}`)
					else data.set(`${type}:${id}`, v)
				}
			}
		},
	},
}

let received = 0
function connect() {
	const sock = makeWASocket({
		waWebSocketUrl: args.wsUrl,
		auth,
		logger: pino({ level: 'silent' }),
		browser: Browsers.ubuntu('Chrome'),
		shouldSyncHistoryMessage: () => false,
		markOnlineOnConnect: false,
	})
	sock.ev.on('creds.update', u => Object.assign(auth.creds, u))
	sock.ev.on('messages.upsert', ({ messages, type }) => {
		if (type === 'notify') received += messages.filter(m => !m.key.fromMe).length
	})
	sock.ev.on('connection.update', async u => {
		if (u.qr) {
			await fetch(new URL('/pairing/qr-scan', args.controlUrl), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ phone: args.phone, qr: u.qr, bizName: 'naive' }) })
		}
		if (u.connection === 'close') {
			const code = u.lastDisconnect?.error?.output?.statusCode
			if (code === 515) connect()
			else out({ event: 'closed', code })
		}
		if (u.connection === 'open') {
			out({ event: 'open' })
			let count = 0
			for (const c of args.contacts) {
				for (let i = 0; i < args.perContact; i++) {
					await sock.sendMessage(`${c}@s.whatsapp.net`, { text: `naive ${args.phone} -> ${c} #${i}` })
					count++
				}
			}
			out({ event: 'sent', count })
		}
	})
}
connect()

createInterface({ input: process.stdin }).on('line', async line => {
	if (line.trim() !== 'report') return
	await new Promise(r => setTimeout(r, 2000))
	globalThis.gc?.()
	await new Promise(r => setTimeout(r, 500))
	out({ event: 'done', received, rss: process.memoryUsage.rss() })
})
