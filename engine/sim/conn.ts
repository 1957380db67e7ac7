import { performance } from 'node:perf_hooks'
import { binaryNodeToString, decodeBinaryNode, encodeBinaryNode, type BinaryNode, proto } from '@whiskeysockets/baileys'
import type { WebSocket } from 'ws'
import type { Logger } from './log.js'
import { FrameReader, frame, NoiseResponder, type Transport } from './noise.js'
import type { Account, Device } from './store.js'

export type ConnPhase = 'handshake' | 'registering' | 'authenticated' | 'closed'

export interface ConnHooks {
	onPayload(conn: Conn, payload: proto.ClientPayload): void
	/** `arrivedAt` is performance.now() when the frame came off the socket (for relay latency). */
	onStanza(conn: Conn, node: BinaryNode, arrivedAt: number): Promise<void> | void
	onClose(conn: Conn): void
	isPaused(): boolean
}

let nextConnId = 1

/**
 * One client WebSocket: Noise handshake, then encrypted binary nodes both ways.
 * Incoming stanzas are handled strictly in arrival order (one promise chain per socket).
 */
export class Conn {
	readonly id = nextConnId++
	phase: ConnPhase = 'handshake'
	account?: Account
	device?: Device
	clientStatic?: Buffer
	/** Registration-phase data (what the unpaired companion announced). */
	registration?: proto.ClientPayload.IDevicePairingRegistrationData & { pushName?: string | null }
	readonly connectedAt = Date.now()
	private readonly reader = new FrameReader()
	private readonly noise: NoiseResponder
	private transport?: Transport
	private sentHello = false
	private chain: Promise<void> = Promise.resolve()
	private readonly held: Buffer[] = []
	private readonly waiters = new Map<string, (node: BinaryNode) => void>()
	readonly log: Logger

	constructor(
		private readonly ws: WebSocket,
		noiseStatic: { public: Uint8Array; private: Uint8Array },
		certChain: Uint8Array,
		private readonly hooks: ConnHooks,
		log: Logger
	) {
		this.noise = new NoiseResponder({ public: Buffer.from(noiseStatic.public), private: Buffer.from(noiseStatic.private) }, certChain)
		this.log = log.child({ conn: this.id })
		ws.on('message', (data: Buffer) => this.onData(data))
		ws.on('close', () => this.onClosed())
		ws.on('error', err => this.log.debug({ err: err.message }, 'ws error'))
	}

	get jid(): string | undefined {
		return this.account && this.device ? `${this.account.phone}:${this.device.id}@s.whatsapp.net` : undefined
	}

	get lidJid(): string | undefined {
		return this.account && this.device ? `${this.account.lid}:${this.device.id}@lid` : undefined
	}

	get isOpen(): boolean {
		return this.phase !== 'closed' && this.ws.readyState === this.ws.OPEN
	}

	/** Replays data that arrived while the server was paused. */
	resume(): void {
		const held = this.held.splice(0)
		for (const data of held) this.onData(data)
	}

	private onData(data: Buffer): void {
		if (this.phase === 'closed') return
		if (this.hooks.isPaused()) {
			this.held.push(Buffer.from(data))
			return
		}
		try {
			for (const f of this.reader.push(Buffer.from(data))) this.onFrame(f)
		} catch (err) {
			this.log.warn({ err: (err as Error).message }, 'dropping connection after bad frame')
			this.terminate()
		}
	}

	private onFrame(f: Buffer): void {
		if (this.transport) {
			// Decrypt now (counters are positional); decode and handle in order on the chain.
			const arrivedAt = performance.now()
			const plain = this.transport.decrypt(f)
			this.chain = this.chain
				.then(async () => {
					const node = await decodeBinaryNode(plain)
					if (this.phase === 'closed') return
					if (this.log.isLevelEnabled('trace')) this.log.trace({ who: this.jid }, `<< ${binaryNodeToString(node)}`)
					const waiter = node.tag === 'iq' && (node.attrs.type === 'result' || node.attrs.type === 'error') ? this.waiters.get(node.attrs.id ?? '') : undefined
					if (waiter) {
						this.waiters.delete(node.attrs.id!)
						waiter(node)
						return
					}
					await this.hooks.onStanza(this, node, arrivedAt)
				})
				.catch(err => this.log.error({ err }, 'stanza handling failed'))
			return
		}
		if (!this.clientStatic && !this.sentHello) {
			this.sendRaw(this.noise.onClientHello(f))
			this.sentHello = true
			return
		}
		const { payload, transport } = this.noise.onClientFinish(f)
		this.clientStatic = this.noise.clientStatic
		this.transport = transport
		this.hooks.onPayload(this, payload)
	}

	private sendRaw(payload: Uint8Array): void {
		if (this.ws.readyState !== this.ws.OPEN) return
		this.ws.send(frame(payload))
	}

	send(node: BinaryNode): void {
		if (!this.transport || this.phase === 'closed') return
		if (this.log.isLevelEnabled('trace')) this.log.trace({ who: this.jid }, `>> ${binaryNodeToString(node)}`)
		this.sendRaw(this.transport.encrypt(encodeBinaryNode(node)))
	}

	/** Sends a server-initiated IQ and resolves with the client's result/error. */
	request(node: BinaryNode, timeoutMs = 20_000): Promise<BinaryNode> {
		const id = node.attrs.id!
		return new Promise((resolve, reject) => {
			const timer = setTimeout(() => {
				this.waiters.delete(id)
				reject(new Error(`no reply to ${id}`))
			}, timeoutMs)
			timer.unref()
			this.waiters.set(id, n => {
				clearTimeout(timer)
				resolve(n)
			})
			this.send(node)
		})
	}

	/** Graceful end: flush pending writes, then close the socket. */
	close(): void {
		if (this.phase === 'closed') return
		this.markClosed()
		try {
			this.ws.close()
		} catch {
			this.ws.terminate()
		}
	}

	/** Abrupt end: no close frame, as when TCP drops. */
	terminate(): void {
		this.markClosed()
		this.ws.terminate()
	}

	private markClosed(): void {
		if (this.phase === 'closed') return
		this.phase = 'closed'
		this.held.length = 0
		this.hooks.onClose(this)
	}

	private onClosed(): void {
		this.markClosed()
	}
}
