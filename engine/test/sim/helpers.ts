/**
 * Test helpers for anything that needs WhatsApp: an in-process simulator and real
 * Baileys clients pointed at it. Reused by the engine's own tests.
 */
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as tls from 'node:tls'
import makeWASocket, {
	Browsers,
	initAuthCreds,
	WA_CERT_DETAILS,
	type AuthenticationCreds,
	type AuthenticationState,
	type BaileysEventMap,
	type SignalDataSet,
	type SignalDataTypeMap,
	type SignalKeyStore,
	type UserFacingSocketConfig,
	type WASocket
} from '@whiskeysockets/baileys'
import type { Boom } from '@hapi/boom'
import pino from 'pino'
import { Simulator, type SimOptions } from '../../sim/sim.js'
import { attachContacts } from '../../sim/contacts-hub.js'
import { ControlServer } from '../../sim/control.js'

/**
 * Baileys rc14 leaves long timers behind after a socket ends (the 30 s prekey-upload
 * race in uploadPreKeys, query timeouts whose 'close' listener `end()` removed), which
 * would hold every test process open for half a minute. Unref Baileys' long timers
 * so a finished test file exits; they still fire if the process is alive anyway.
 */
const realSetTimeout = globalThis.setTimeout
globalThis.setTimeout = Object.assign(function (this: unknown, ...args: Parameters<typeof realSetTimeout>) {
	const timer = realSetTimeout(...args)
	const ms = args[1]
	if (typeof ms === 'number' && ms >= 5000 && new Error().stack?.includes('/@whiskeysockets/baileys/')) timer.unref()
	return timer
}, realSetTimeout) as typeof setTimeout

/** Keys and TLS cert are costly to make (RSA); one set per test process is enough. */
let sharedKeysDir: string | undefined
const trustedCerts = new Set<string>()

/** Starts a simulator on free ports, in memory unless `dataDir` is given. */
export async function startSim(opts: SimOptions = {}): Promise<Simulator> {
	sharedKeysDir ??= mkdtempSync(join(tmpdir(), 'wa-sim-test-'))
	const sim = await Simulator.start({ inMemory: opts.dataDir === undefined, dataDir: sharedKeysDir, logLevel: process.env.SIM_LOG_LEVEL ?? 'silent', ...opts })
	attachContacts(sim)
	trustSim(sim)
	return sim
}

/** The control API for `sim` on a free port; close it before the simulator. */
export async function startControl(sim: Simulator): Promise<ControlServer> {
	const control = new ControlServer(sim)
	if (sim.contacts) attachContacts(sim, control)
	await control.listen(0)
	return control
}

/**
 * What a sandbox engine does: trust the simulator's root key for Noise and its
 * TLS certificate for media (setDefaultCACertificates also covers global fetch).
 */
export function trustSim(sim: Simulator): void {
	WA_CERT_DETAILS.PUBLIC_KEY = Buffer.from(sim.certs.root.public)
	if (!trustedCerts.has(sim.certs.tls.cert)) {
		trustedCerts.add(sim.certs.tls.cert)
		tls.setDefaultCACertificates([...tls.getCACertificates('default'), ...trustedCerts])
	}
}

/** Baileys auth state kept in memory; survives across sockets like a real store would. */
export function memoryAuthState(creds: AuthenticationCreds = initAuthCreds()): AuthenticationState {
	const data = new Map<string, unknown>()
	const keys: SignalKeyStore = {
		async get<T extends keyof SignalDataTypeMap>(type: T, ids: string[]) {
			const out: { [id: string]: SignalDataTypeMap[T] } = {}
			for (const id of ids) {
				const v = data.get(`${type}:${id}`)
				if (v !== undefined) out[id] = v as SignalDataTypeMap[T]
			}
			return out
		},
		async set(set: SignalDataSet) {
			for (const [type, entries] of Object.entries(set)) {
				for (const [id, value] of Object.entries(entries ?? {})) {
					if (value === null || value === undefined) data.delete(`${type}:${id}`)
					else data.set(`${type}:${id}`, value)
				}
			}
		}
	}
	return { creds, keys }
}

export interface Client {
	sock: WASocket
	auth: AuthenticationState
	/** Every event of the given name seen so far (for assertions after the fact). */
	seen: { [K in keyof BaileysEventMap]?: BaileysEventMap[K][] }
}

const silent = pino({ level: process.env.BAILEYS_LOG_LEVEL ?? 'silent' })

/** A real Baileys socket connected to `sim`. */
export function connectClient(sim: Simulator, auth: AuthenticationState = memoryAuthState(), config: Partial<UserFacingSocketConfig> = {}): Client {
	trustSim(sim)
	const sock = makeWASocket({
		waWebSocketUrl: sim.wsUrl,
		auth,
		logger: silent,
		browser: Browsers.ubuntu('Chrome'),
		shouldSyncHistoryMessage: () => false,
		markOnlineOnConnect: false,
		connectTimeoutMs: 10_000,
		defaultQueryTimeoutMs: 10_000,
		retryRequestDelayMs: 50,
		...config
	})
	const seen: Client['seen'] = {}
	const record = <K extends keyof BaileysEventMap>(name: K) =>
		sock.ev.on(name, (v: BaileysEventMap[K]) => {
			;((seen[name] ??= []) as BaileysEventMap[K][]).push(v)
		})
	record('messages.upsert')
	record('messages.update')
	record('connection.update')
	return { sock, auth, seen }
}

/** Resolves with the first event `name` matching `pred`, or rejects after `timeoutMs`. */
export function waitForEvent<K extends keyof BaileysEventMap>(
	client: Client,
	name: K,
	pred: (v: BaileysEventMap[K]) => boolean = () => true,
	timeoutMs = 15_000
): Promise<BaileysEventMap[K]> {
	return new Promise((resolve, reject) => {
		const timer = setTimeout(() => {
			client.sock.ev.off(name, handler)
			reject(new Error(`timed out waiting for ${name}`))
		}, timeoutMs)
		const handler = (v: BaileysEventMap[K]) => {
			if (!pred(v)) return
			clearTimeout(timer)
			client.sock.ev.off(name, handler)
			resolve(v)
		}
		client.sock.ev.on(name, handler)
	})
}

/** Waits until the connection opens; rejects if it closes first. */
export async function waitOpen(client: Client, timeoutMs = 15_000): Promise<void> {
	const u = await waitForEvent(client, 'connection.update', u => u.connection === 'open' || u.connection === 'close', timeoutMs)
	if (u.connection === 'close') throw new Error(`closed instead of opening: ${closeCode(u)}`)
}

/** Waits for the socket to close and returns Baileys' DisconnectReason status code. */
export async function waitClose(client: Client, timeoutMs = 15_000): Promise<number | undefined> {
	return closeCode(await waitForEvent(client, 'connection.update', u => u.connection === 'close', timeoutMs))
}

export function closeCode(u: Partial<BaileysEventMap['connection.update']>): number | undefined {
	return (u.lastDisconnect?.error as Boom | undefined)?.output?.statusCode
}

export async function waitQr(client: Client, timeoutMs = 15_000): Promise<string> {
	const u = await waitForEvent(client, 'connection.update', u => !!u.qr, timeoutMs)
	return u.qr!
}

/** Pairs a new companion by QR ("the phone scans it"), rides the 515 restart, returns the open client. */
export async function pairByQr(
	sim: Simulator,
	phone: string,
	opts: { bizName?: string; pushName?: string; config?: Partial<UserFacingSocketConfig> } = {}
): Promise<Client> {
	const first = connectClient(sim, memoryAuthState(), opts.config)
	const qr = await waitQr(first)
	const closed = waitClose(first)
	const res = await sim.pairing.scanQr(phone, qr, { bizName: opts.bizName, pushName: opts.pushName })
	if (!res.ok) throw new Error(`pairing failed: ${res.error}`)
	const code = await closed
	if (code !== 515) throw new Error(`expected 515 restart, got ${code}`)
	const client = connectClient(sim, first.auth, opts.config)
	await waitOpen(client)
	return client
}

/** Ends a client and waits for its close event so no timers or sockets outlive the test. */
export async function endClient(client: Client): Promise<void> {
	const closed = client.sock.ws.isClosed ? Promise.resolve() : waitClose(client, 5000).catch(() => undefined)
	client.sock.end(undefined)
	await closed
}

export const sleep = (ms: number) => new Promise<void>(r => setTimeout(r, ms))

/** Polls `cond` until true (for state the simulator updates asynchronously, e.g. a socket's close). */
export async function waitUntil(cond: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
	const deadline = Date.now() + timeoutMs
	while (!cond()) {
		if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
		await sleep(10)
	}
}

/**
 * Waits until Baileys reports `status` for message `id`. When the receipt lands in the
 * same event-buffer window as the sender's own upsert, Baileys folds the status into
 * that upsert instead of emitting messages.update, so both places are checked.
 */
export async function waitStatus(client: Client, id: string, status: number, timeoutMs = 10_000) {
	const inUpdates = () => (client.seen['messages.update'] ?? []).some(ups => ups.some(u => u.key.id === id && u.update.status === status))
	const inUpserts = () => (client.seen['messages.upsert'] ?? []).some(u => u.messages.some(m => m.key.id === id && m.status === status))
	await waitUntil(() => inUpdates() || inUpserts(), timeoutMs, `status ${status} for ${id}`)
}
