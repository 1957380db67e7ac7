import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { KICK_KINDS, type KickKind } from './faults.js'
import { InvalidInput, normalizePhone } from './store.js'
import type { Simulator } from './sim.js'

type Params = Record<string, string>
type Body = Record<string, unknown>
type Handler = (p: Params, body: Body, query: URLSearchParams) => unknown | Promise<unknown>

/** HTTP error with the project's single error shape. */
export class ApiError extends Error {
	constructor(
		readonly status: number,
		readonly code: string,
		message: string,
		readonly details: Record<string, unknown> = {}
	) {
		super(message)
	}
}

const MAX_BODY = 64 * 1024 * 1024

const optName = (v: unknown, field: string): string | undefined => {
	if (v === undefined || v === null) return undefined
	if (typeof v !== 'string' || v.length > 100) throw new ApiError(400, 'INVALID_FIELD', `${field} must be a string of at most 100 characters`, { field })
	return v
}

const deviceOf = (v: unknown): number => {
	if (v === undefined || v === null) return 1
	if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new ApiError(400, 'INVALID_FIELD', 'device must be a non-negative integer', { field: 'device' })
	return v
}

/**
 * The control API: JSON over HTTP on 127.0.0.1, every route a thin call into the
 * simulator. Routes are documented in docs/simulator.md.
 */
export class ControlServer {
	private server?: Server
	private readonly routes: Array<{ method: string; re: RegExp; keys: string[]; handler: Handler }> = []
	port = 0

	constructor(private readonly sim: Simulator) {
		this.defineRoutes()
	}

	private route(method: string, path: string, handler: Handler): void {
		const keys: string[] = []
		const re = new RegExp(`^${path.replace(/:(\w+)/g, (_m, k: string) => (keys.push(k), '([^/]+)'))}$`)
		this.routes.push({ method, re, keys, handler })
	}

	private defineRoutes(): void {
		const sim = this.sim
		this.route('GET', '/health', () => ({ ok: true }))
		this.route('GET', '/info', () => ({
			wsUrl: sim.wsUrl,
			mediaHost: sim.media.host,
			dataDir: sim.opts.dataDir,
			inMemory: !!sim.opts.inMemory,
			rootPublicKeyBase64: Buffer.from(sim.certs.root.public).toString('base64'),
			rootPublicKeyHex: Buffer.from(sim.certs.root.public).toString('hex'),
			rootPublicKeyFile: sim.certs.files.rootPublicKey,
			rootPublicKeyHexFile: sim.certs.files.rootPublicKeyHex,
			caCertFile: sim.certs.files.caCert
		}))
		this.route('GET', '/stats', () => sim.statsSnapshot())
		this.route('POST', '/stats/reset', () => (sim.stats.reset(), sim.statsSnapshot()))

		this.route('GET', '/accounts', () => sim.store.accounts().map(a => sim.describeAccount(a)))
		this.route('POST', '/accounts', (_p, b) => {
			const phone = normalizePhone(b.phone)
			const existed = !!sim.store.getByPhone(phone)
			const acc = sim.store.createAccount(phone, { pushName: optName(b.pushName, 'pushName'), bizName: optName(b.bizName, 'bizName') })
			return { created: !existed, account: sim.describeAccount(acc) }
		})
		this.route('GET', '/accounts/:phone', p => sim.describeAccount(sim.account(normalizePhone(p.phone))))
		this.route('DELETE', '/accounts/:phone/devices/:device', p => {
			const acc = sim.account(normalizePhone(p.phone))
			const device = Number(p.device)
			if (!sim.store.findDevice(acc, device)) throw new ApiError(404, 'DEVICE_NOT_FOUND', `no device ${device} on ${acc.phone}`)
			// A live socket is told it was removed (401 device_removed), as after "log out" on the phone.
			if (!sim.kick(acc.phone, device, '401')) sim.removeDevice(acc, device)
			return { removed: true }
		})

		this.route('GET', '/pairing/pending', () => sim.pairing.pending())
		this.route('POST', '/pairing/qr-scan', async (_p, b) => {
			const res = await sim.pairing.scanQr(b.phone, b.qr, { pushName: optName(b.pushName, 'pushName'), bizName: optName(b.bizName, 'bizName') })
			if (!res.ok) throw new ApiError(409, 'PAIRING_FAILED', res.error ?? 'pairing failed')
			return res
		})
		this.route('POST', '/pairing/code', async (_p, b) => {
			const res = await sim.pairing.enterCode(b.phone, b.code, { pushName: optName(b.pushName, 'pushName'), bizName: optName(b.bizName, 'bizName') })
			if (!res.ok) throw new ApiError(409, 'PAIRING_FAILED', res.error ?? 'pairing failed')
			return res
		})

		this.route('POST', '/faults/kick', (_p, b) => {
			const phone = normalizePhone(b.phone)
			const kind = String(b.kind ?? '') as KickKind
			if (!KICK_KINDS.includes(kind)) throw new ApiError(400, 'INVALID_FIELD', `kind must be one of ${KICK_KINDS.join(', ')}`, { field: 'kind' })
			const device = deviceOf(b.device)
			if (!sim.kick(phone, device, kind)) throw new ApiError(404, 'NOT_CONNECTED', `${phone}:${device} has no live connection`)
			return { kicked: `${phone}:${device}`, kind }
		})
		this.route('POST', '/faults/pings', (_p, b) => {
			const phone = normalizePhone(b.phone)
			const device = deviceOf(b.device)
			if (typeof b.answer !== 'boolean') throw new ApiError(400, 'INVALID_FIELD', 'answer must be true or false', { field: 'answer' })
			const jid = `${phone}:${device}@s.whatsapp.net`
			if (b.answer) sim.faults.silentPings.delete(jid)
			else sim.faults.silentPings.add(jid)
			return { jid, answerPings: b.answer }
		})
		this.route('POST', '/faults/iq', (_p, b) => sim.faults.addIqRule(b))
		// {"version": "2.3000.N"}: refuse logins from older clients with 405; null lifts it.
		this.route('POST', '/faults/min-version', (_p, b) => ({ minVersion: sim.faults.setMinVersion(b.version)?.join('.') ?? null }))
		this.route('POST', '/faults/messages', (_p, b) => sim.faults.addMessageRule(b))
		this.route('GET', '/faults', () => sim.faults.snapshot())
		this.route('DELETE', '/faults', () => (sim.faults.clear(), { cleared: true }))
		this.route('DELETE', '/faults/:id', p => {
			if (!sim.faults.remove(Number(p.id))) throw new ApiError(404, 'FAULT_NOT_FOUND', `no fault rule ${p.id}`)
			return { removed: Number(p.id) }
		})
		this.route('POST', '/server/pause', () => (sim.pause(), { paused: true }))
		this.route('POST', '/server/resume', () => (sim.resume(), { paused: false }))

		this.route('GET', '/unhandled', () => sim.unhandled.entries)
		this.route('DELETE', '/unhandled', () => (sim.unhandled.clear(), { cleared: true }))
	}

	/** Extra routes from optional modules (simulated contacts). */
	extend(method: string, path: string, handler: Handler): void {
		this.route(method, path, handler)
	}

	async listen(port: number, host = '127.0.0.1'): Promise<void> {
		this.server = createServer((req, res) => void this.onRequest(req, res))
		// Outlive clients' idle keep-alive sockets so a reused connection is never cut mid-request.
		this.server.keepAliveTimeout = 65_000
		await new Promise<void>((resolve, reject) => {
			this.server!.once('error', reject)
			this.server!.listen(port, host, () => resolve())
		})
		this.port = (this.server.address() as AddressInfo).port
	}

	get url(): string {
		return `http://127.0.0.1:${this.port}`
	}

	private async onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
		try {
			const url = new URL(req.url ?? '/', 'http://127.0.0.1')
			const candidates = this.routes.filter(r => r.re.test(url.pathname))
			if (!candidates.length) throw new ApiError(404, 'NOT_FOUND', `no route ${url.pathname}`)
			const route = candidates.find(r => r.method === req.method)
			if (!route) throw new ApiError(405, 'METHOD_NOT_ALLOWED', `${req.method} not allowed on ${url.pathname}`)
			const m = route.re.exec(url.pathname)!
			const params: Params = {}
			route.keys.forEach((k, i) => (params[k] = decodeURIComponent(m[i + 1]!)))
			const body = req.method === 'POST' || req.method === 'PUT' ? await readJson(req) : {}
			const data = await route.handler(params, body, url.searchParams)
			send(res, 200, { success: true, data })
		} catch (err) {
			if (err instanceof ApiError) return send(res, err.status, errorBody(err.code, err.message, err.details))
			if (err instanceof InvalidInput) {
				const status = err.code.endsWith('NOT_FOUND') ? 404 : 400
				return send(res, status, errorBody(err.code, err.message, {}))
			}
			this.sim.log.error({ err }, 'control request failed')
			send(res, 500, errorBody('INTERNAL', (err as Error).message, {}))
		}
	}

	async close(): Promise<void> {
		if (!this.server) return
		this.server.closeAllConnections()
		await new Promise<void>(resolve => this.server!.close(() => resolve()))
	}
}

const errorBody = (code: string, message: string, details: Record<string, unknown>) => ({ success: false, error: { code, message, details } })

function send(res: ServerResponse, status: number, body: unknown): void {
	const data = JSON.stringify(body)
	res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) })
	res.end(data)
}

async function readJson(req: IncomingMessage): Promise<Body> {
	const chunks: Buffer[] = []
	let size = 0
	for await (const c of req) {
		size += (c as Buffer).length
		if (size > MAX_BODY) throw new ApiError(413, 'BODY_TOO_LARGE', 'request body over 64 MiB')
		chunks.push(c as Buffer)
	}
	if (!size) return {}
	let parsed: unknown
	try {
		parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'))
	} catch {
		throw new ApiError(400, 'INVALID_JSON', 'request body is not valid JSON')
	}
	if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new ApiError(400, 'INVALID_JSON', 'request body must be a JSON object')
	return parsed as Body
}
