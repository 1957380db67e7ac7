/**
 * One client process of the sim_load benchmark: links its share of Baileys clients
 * through the control API, then on "go" sends its share of the message rate and
 * measures send->receive latency of what its clients receive. Talks to the
 * orchestrator with JSON lines (stdout out, stdin in).
 */
import { readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import makeWASocket, { Browsers, initAuthCreds, WA_CERT_DETAILS, type AuthenticationState, type SignalDataSet, type SignalDataTypeMap, type WASocket } from '@whiskeysockets/baileys'
import pino from 'pino'

interface Config {
	worker: number
	wsUrl: string
	controlUrl: string
	rootKeyFile: string
	phones: string[]
	/** phone -> the phone it writes to */
	partner: Record<string, string>
	ratePerSec: number
	durationSec: number
	pairConcurrency: number
}

const cfg = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as Config
const out = (msg: unknown) => process.stdout.write(JSON.stringify(msg) + '\n')
const logger = pino({ level: 'silent' })
WA_CERT_DETAILS.PUBLIC_KEY = Buffer.from(readFileSync(cfg.rootKeyFile, 'utf8').trim(), 'base64')

function memoryAuth(): AuthenticationState {
	const data = new Map<string, unknown>()
	return {
		creds: initAuthCreds(),
		keys: {
			async get<T extends keyof SignalDataTypeMap>(type: T, ids: string[]) {
				const res: { [id: string]: SignalDataTypeMap[T] } = {}
				for (const id of ids) {
					const v = data.get(`${type}:${id}`)
					if (v !== undefined) res[id] = v as SignalDataTypeMap[T]
				}
				return res
			},
			async set(set: SignalDataSet) {
				for (const [type, entries] of Object.entries(set))
					for (const [id, v] of Object.entries(entries ?? {})) v == null ? data.delete(`${type}:${id}`) : data.set(`${type}:${id}`, v)
			}
		}
	}
}

function socket(auth: AuthenticationState): WASocket {
	return makeWASocket({
		waWebSocketUrl: cfg.wsUrl,
		auth,
		logger,
		browser: Browsers.ubuntu('Chrome'),
		shouldSyncHistoryMessage: () => false,
		markOnlineOnConnect: false,
		fireInitQueries: true,
		connectTimeoutMs: 60_000,
		defaultQueryTimeoutMs: 60_000
	})
}

function until<T>(sock: WASocket, pick: (u: Parameters<Parameters<WASocket['ev']['on']>[1]>[0] & Record<string, unknown>) => T | undefined, ms = 120_000): Promise<T> {
	return new Promise((resolve, reject) => {
		const timer = setTimeout(() => reject(new Error('timeout')), ms)
		sock.ev.on('connection.update', u => {
			const v = pick(u as never)
			if (v !== undefined) {
				clearTimeout(timer)
				resolve(v)
			}
		})
	})
}

const latencies: number[] = []
let received = 0
let sent = 0
let sendErrors = 0
let measuring = false

/** POST to the control API; a connection reset by a loaded machine is retried, not fatal. */
async function post(path: string, body: unknown): Promise<Response> {
	for (let attempt = 1; ; attempt++) {
		try {
			return await fetch(`${cfg.controlUrl}${path}`, { method: 'POST', body: JSON.stringify(body) })
		} catch (err) {
			if (attempt >= 3) throw new Error(`POST ${path}: ${String((err as Error & { cause?: unknown }).cause ?? err)}`)
			await new Promise(r => setTimeout(r, 200 * attempt))
		}
	}
}

async function link(phone: string): Promise<WASocket> {
	const auth = memoryAuth()
	const first = socket(auth)
	const qr = await until(first, u => (u.qr as string | undefined) ?? undefined)
	const closed = until(first, u => (u.connection === 'close' ? true : undefined))
	const res = await post('/pairing/qr-scan', { phone, qr, bizName: `Bench ${phone}` })
	if (!res.ok) throw new Error(`pairing ${phone}: ${res.status} ${await res.text()}`)
	await closed
	const sock = socket(auth)
	await until(sock, u => (u.connection === 'open' ? true : u.connection === 'close' ? (() => { throw new Error(`${phone} closed`) })() : undefined))
	sock.ev.on('messages.upsert', ({ messages }) => {
		for (const m of messages) {
			const text = m.message?.extendedTextMessage?.text ?? m.message?.conversation
			if (!text?.startsWith('bench:') || m.key.fromMe) continue
			if (!measuring) continue
			received++
			latencies.push(Date.now() - Number(text.split(':')[1]))
		}
	})
	return sock
}

async function main(): Promise<void> {
	const socks = new Map<string, WASocket>()
	const queue = [...cfg.phones]
	await Promise.all(
		Array.from({ length: cfg.pairConcurrency }, async () => {
			for (let phone = queue.shift(); phone; phone = queue.shift()) socks.set(phone, await link(phone))
		})
	)
	out({ type: 'ready', worker: cfg.worker, clients: socks.size })
	const rl = createInterface({ input: process.stdin })
	for await (const line of rl) {
		const cmd = JSON.parse(line) as { type: string }
		if (cmd.type === 'warm') {
			// One unmeasured message per pair first, so Signal session setup (usync, key
			// fetch, pkmsg) is not what the measured window times.
			await Promise.all([...socks.entries()].map(([phone, sock]) => sock.sendMessage(`${cfg.partner[phone]}@s.whatsapp.net`, { text: 'warm-up' }).catch(() => sendErrors++)))
			out({ type: 'warmed', worker: cfg.worker })
		} else if (cmd.type === 'go') {
			measuring = true
			const senders = [...socks.entries()]
			const tickMs = 20
			let i = 0
			const start = Date.now()
			const end = start + cfg.durationSec * 1000
			await new Promise<void>(resolve => {
				const timer = setInterval(() => {
					const now = Math.min(Date.now(), end)
					// Catch up on wall time, not on ticks: a late timer must not lower the rate.
					const due = Math.floor(((now - start) / 1000) * cfg.ratePerSec) - sent
					for (let k = 0; k < due; k++) {
						const [phone, sock] = senders[i++ % senders.length]!
						sent++
						sock.sendMessage(`${cfg.partner[phone]}@s.whatsapp.net`, { text: `bench:${Date.now()}` }).catch(() => sendErrors++)
					}
					if (now >= end) {
						clearInterval(timer)
						resolve()
					}
				}, tickMs)
			})
			out({ type: 'sent', worker: cfg.worker, sent, sendErrors })
		} else if (cmd.type === 'report') {
			measuring = false
			out({ type: 'report', worker: cfg.worker, received, sent, sendErrors, latencies })
		} else if (cmd.type === 'exit') {
			for (const s of socks.values()) s.end(undefined)
			process.exit(0)
		}
	}
}

main().catch(err => {
	out({ type: 'error', worker: cfg.worker, error: String(err?.stack ?? err) })
	process.exit(1)
})
