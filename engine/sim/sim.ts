import { createServer, type Server } from 'node:http'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { AddressInfo } from 'node:net'
import { binaryNodeToString, jidDecode, type BinaryNode, type proto } from '@whiskeysockets/baileys'
import { WebSocketServer } from 'ws'
import { loadOrCreateKeys, type SimKeys } from './certs.js'
import { Conn } from './conn.js'
import { LiveRegistry, S_WA, SERVER_JID, Stats, UnhandledLog, unixNow, type SimContext } from './context.js'
import { Faults, kickStanza, type KickKind } from './faults.js'
import { IqRouter } from './iq.js'
import { Keys } from './keys.js'
import { makeLogger, type Logger } from './log.js'
import { MediaServer } from './media.js'
import { Pairing, serverId } from './pairing.js'
import { Relay } from './relay.js'
import { InvalidInput, Store, type Account } from './store.js'
import { USync } from './usync.js'
import type { ContactHub } from './contacts-hub.js'

export interface SimOptions {
	/** WebSocket port (0 = any free port). */
	port?: number
	/** HTTPS media port (0 = any free port). */
	mediaPort?: number
	/** Holds keys, certificates and (unless inMemory) accounts and media. Temp dir if omitted. */
	dataDir?: string
	inMemory?: boolean
	/** QR refs offered to each unpaired companion; when the client has shown them all it closes with 408. */
	qrRefs?: number
	logger?: Logger
	logLevel?: string
}

/** Client stanzas that need no answer from the server. */
const IGNORED_IB = new Set(['unified_session', 'offline_batch'])
const firstChild = (node: BinaryNode): string => (Array.isArray(node.content) ? (node.content[0]?.tag ?? '') : '')

/**
 * The simulator: owns the listeners and wires the protocol modules together.
 * Everything a test or the control API can do is a method here or on a module.
 */
export class Simulator {
	readonly ctx: SimContext
	readonly store: Store
	readonly faults = new Faults()
	readonly live = new LiveRegistry()
	readonly stats = new Stats()
	readonly unhandled = new UnhandledLog()
	readonly pairing: Pairing
	readonly relay: Relay
	readonly keys: Keys
	readonly usync: USync
	readonly media: MediaServer
	readonly log: Logger
	private readonly iq: IqRouter
	private readonly conns = new Set<Conn>()
	private http?: Server
	private wss?: WebSocketServer
	paused = false
	port = 0
	/** Set by attachContacts (contacts-hub.ts) when simulated contacts are enabled. */
	contacts?: ContactHub

	private constructor(
		readonly opts: SimOptions & { dataDir: string },
		readonly certs: SimKeys
	) {
		this.log = opts.logger ?? makeLogger(opts.logLevel)
		this.store = new Store(opts.dataDir, !!opts.inMemory)
		this.media = new MediaServer(certs.tls, opts.dataDir, !!opts.inMemory, this.log.child({ mod: 'media' }))
		this.ctx = {
			store: this.store,
			log: this.log,
			live: this.live,
			faults: this.faults,
			stats: this.stats,
			unhandled: this.unhandled,
			mediaHost: () => this.media.host,
			devicesChanged: acc => this.announceDevices(acc)
		}
		this.pairing = new Pairing(this.ctx, opts.qrRefs ?? 6)
		this.relay = new Relay(this.ctx, { dataDir: opts.dataDir, inMemory: !!opts.inMemory })
		this.keys = new Keys(this.ctx)
		this.usync = new USync(this.ctx)
		this.iq = new IqRouter(this.ctx, {
			keys: this.keys,
			usync: this.usync,
			pairing: this.pairing,
			onRemoveCompanion: conn => this.removeDevice(conn.account!, conn.device!.id)
		})
	}

	static async start(opts: SimOptions = {}): Promise<Simulator> {
		const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'wa-sim-'))
		const certs = await loadOrCreateKeys(dataDir)
		const sim = new Simulator({ ...opts, dataDir }, certs)
		await sim.listen(opts.port ?? 0, opts.mediaPort ?? 0)
		return sim
	}

	get wsUrl(): string {
		return `ws://127.0.0.1:${this.port}/ws/chat`
	}

	private async listen(port: number, mediaPort: number): Promise<void> {
		await this.media.listen(mediaPort)
		this.http = createServer((_req, res) => {
			res.writeHead(426).end('websocket only')
		})
		this.wss = new WebSocketServer({ server: this.http, path: '/ws/chat', perMessageDeflate: false })
		this.wss.on('connection', ws => {
			const conn = new Conn(ws, this.certs.serverStatic, this.certs.certChain, {
				onPayload: (c, p) => this.onPayload(c, p),
				onStanza: (c, n, t) => this.onStanza(c, n, t),
				onClose: c => this.onClose(c),
				isPaused: () => this.paused
			}, this.log)
			this.conns.add(conn)
		})
		await new Promise<void>((resolve, reject) => {
			this.http!.once('error', reject)
			this.http!.listen(port, '127.0.0.1', () => resolve())
		})
		this.port = (this.http.address() as AddressInfo).port
		this.log.info({ ws: this.wsUrl, media: this.media.host }, 'simulator listening')
	}

	private onPayload(conn: Conn, payload: proto.ClientPayload): void {
		const outdated = this.faults.versionRefusal(payload.userAgent?.appVersion)
		if (outdated) {
			conn.send(outdated)
			conn.close()
			return
		}
		if (payload.devicePairingData) return this.pairing.startRegistration(conn, payload)
		const phone = payload.username ? String(payload.username) : ''
		const account = this.store.getByPhone(phone)
		const device = account && payload.device !== undefined && payload.device !== null ? this.store.findDevice(account, payload.device) : undefined
		if (!account || !device || device.noisePub !== conn.clientStatic!.toString('base64')) {
			// Also what a companion gets after requestPairingCode set creds.me and the link dropped.
			conn.send({ tag: 'failure', attrs: { reason: '401', location: 'sim' } })
			conn.close()
			return
		}
		const old = this.live.set(account.phone, device.id, conn)
		if (old && old !== conn) {
			old.send({ tag: 'stream:error', attrs: {}, content: [{ tag: 'conflict', attrs: { type: 'replaced' } }] })
			old.close()
		}
		conn.account = account
		conn.device = device
		conn.phase = 'authenticated'
		if (payload.pushName) device.pushName = payload.pushName
		device.lastLoginAt = Date.now()
		this.store.changed()
		conn.send({
			tag: 'success',
			attrs: { t: unixNow(), props: '1', location: 'sim', lid: conn.lidJid!, creation: String(Math.floor(device.pairedAt / 1000)) }
		})
		this.relay.flushOffline(conn)
	}

	private async onStanza(conn: Conn, node: BinaryNode, arrivedAt: number): Promise<void> {
		if (node.tag === 'iq') return this.iq.handle(conn, node)
		if (conn.phase !== 'authenticated') {
			// Before login only acks, presence and telemetry ib stanzas are expected.
			if (node.tag === 'ack' || node.tag === 'presence' || (node.tag === 'ib' && IGNORED_IB.has(firstChild(node)))) return
			return this.unknown(conn, node)
		}
		switch (node.tag) {
			case 'message':
				return this.relay.onMessage(conn, node, arrivedAt)
			case 'receipt':
				return this.relay.onReceipt(conn, node)
			case 'ack':
				return this.relay.onAck(conn, node)
			case 'chatstate':
				return this.relay.onChatstate(conn, node)
			case 'presence':
				return this.onPresence(conn, node)
			case 'ib':
				if (IGNORED_IB.has(firstChild(node))) return
				return this.unknown(conn, node)
			default:
				return this.unknown(conn, node)
		}
	}

	/** Presence updates need no answer; a subscription is answered with the peer's presence. */
	private onPresence(conn: Conn, node: BinaryNode): void {
		const { type, to, name } = node.attrs
		if (name && conn.account) conn.account.pushName = name
		if (type !== 'subscribe' || !to) return
		const jid = jidDecode(to)
		const target = jid ? this.store.getByUser(jid.user, jid.server) : undefined
		const online = target ? this.live.forAccount(target).length > 0 : false
		conn.send({ tag: 'presence', attrs: { from: to, type: online ? 'available' : 'unavailable' } })
	}

	private unknown(conn: Conn, node: BinaryNode): void {
		this.unhandled.record(conn, node, binaryNodeToString(node))
		this.log.warn({ tag: node.tag, conn: conn.jid }, 'unhandled stanza')
		if (node.attrs.id) conn.send({ tag: 'ack', attrs: { id: node.attrs.id, class: node.tag, from: SERVER_JID, error: '501' } })
	}

	private onClose(conn: Conn): void {
		this.conns.delete(conn)
		this.live.delete(conn)
		this.pairing.onClose(conn)
	}

	// ---- operations used by the control API and tests ----

	pause(): void {
		this.paused = true
	}

	resume(): void {
		this.paused = false
		for (const c of this.conns) c.resume()
	}

	/** Kicks one linked device's live socket with a stream error, a failure or a TCP drop. */
	kick(phone: string, device: number, kind: KickKind): boolean {
		const conn = this.live.get(phone, device)
		if (!conn) return false
		const stanza = kickStanza(kind)
		if (kind === '401') this.removeDevice(conn.account!, device)
		if (!stanza) {
			conn.terminate()
			return true
		}
		conn.send(stanza)
		conn.close()
		return true
	}

	removeDevice(account: Account, device: number): boolean {
		this.relay.dropQueue(account.phone, device)
		const removed = this.store.removeDevice(account, device)
		if (removed) this.announceDevices(account)
		return removed
	}

	/**
	 * Baileys caches device lists for 5 minutes; a `devices` notification naming the
	 * user (in both addressing forms) makes every client drop that cache entry.
	 */
	private announceDevices(acc: Account): void {
		const devices = acc.devices.flatMap(d => [
			{ tag: 'device', attrs: { jid: `${acc.phone}:${d.id}@${S_WA}` } },
			{ tag: 'device', attrs: { jid: `${acc.lid}:${d.id}@lid` } }
		])
		if (!devices.length) devices.push({ tag: 'device', attrs: { jid: `${acc.phone}@${S_WA}` } }, { tag: 'device', attrs: { jid: `${acc.lid}@lid` } })
		const node: BinaryNode = {
			tag: 'notification',
			attrs: { from: `${acc.phone}@${S_WA}`, type: 'devices', id: serverId(), t: unixNow() },
			content: [{ tag: 'update', attrs: {}, content: devices }]
		}
		for (const c of this.live.all()) if (c.phase === 'authenticated') c.send({ ...node, attrs: { ...node.attrs, id: serverId() } })
	}

	describeAccount(acc: Account) {
		return {
			phone: acc.phone,
			jid: `${acc.phone}@${S_WA}`,
			lid: `${acc.lid}@lid`,
			pushName: acc.pushName ?? null,
			bizName: acc.bizName ?? null,
			identityKey: acc.identity.pub,
			createdAt: new Date(acc.createdAt).toISOString(),
			devices: acc.devices.map(d => ({
				id: d.id,
				jid: `${acc.phone}:${d.id}@${S_WA}`,
				lid: `${acc.lid}:${d.id}@lid`,
				keyIndex: d.keyIndex,
				registrationId: d.registrationId,
				preKeys: d.preKeys.length,
				signedPreKeyId: d.signedPreKey.id,
				pushName: d.pushName ?? null,
				connected: !!this.live.get(acc.phone, d.id),
				offlineQueued: this.relay.queued(acc.phone, d.id),
				pingsSilenced: this.faults.silentPings.has(`${acc.phone}:${d.id}@${S_WA}`),
				pairedAt: new Date(d.pairedAt).toISOString(),
				lastLoginAt: d.lastLoginAt ? new Date(d.lastLoginAt).toISOString() : null
			}))
		}
	}

	account(phone: string): Account {
		const acc = this.store.getByPhone(phone)
		if (!acc) throw new InvalidInput('ACCOUNT_NOT_FOUND', `no account ${phone}`)
		return acc
	}

	statsSnapshot() {
		return {
			connectedClients: this.live.size,
			openSockets: this.conns.size,
			accounts: this.store.accounts().length,
			messagesReceived: this.stats.messagesReceived,
			messagesRelayed: this.stats.messagesRelayed,
			duplicatesDropped: this.stats.duplicatesDropped,
			receiptsRelayed: this.stats.receiptsRelayed,
			offlineQueued: this.stats.offlineQueued,
			mediaUploads: this.media.uploads,
			mediaDownloads: this.media.downloads,
			relayLatency: this.stats.latency(),
			paused: this.paused
		}
	}

	async close(): Promise<void> {
		this.paused = false
		for (const c of [...this.conns]) c.terminate()
		this.store.flush()
		this.relay.outbox.close()
		this.contacts?.flush()
		await new Promise<void>(resolve => (this.wss ? this.wss.close(() => resolve()) : resolve()))
		if (this.http) {
			this.http.closeAllConnections()
			await new Promise<void>(resolve => this.http!.close(() => resolve()))
		}
		await this.media.close()
	}
}
