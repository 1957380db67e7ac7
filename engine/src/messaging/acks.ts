/**
 * Waits for the server's `<ack class="message" id=...>` of one sent message.
 *
 * Baileys' `sendMessage` resolves once the stanza is written to the socket, not when
 * WhatsApp accepted it; the lifecycle (design.md step 3) marks a message `sent` only
 * after that ack. Baileys reacts to acks only when they carry an error, so the engine
 * listens to the same frames itself: one listener per socket, waiters keyed by id.
 */
import type { BinaryNode, WASocket } from '@whiskeysockets/baileys'

export interface ServerAck {
	/** WhatsApp's error code when it refused the message (e.g. 479), else undefined. */
	error: string | undefined
}

/** The socket closed (or the ack never came) before the server acknowledged: retry later. */
export class AckLostError extends Error {
	constructor(reason: string) {
		super(reason)
		this.name = 'AckLostError'
	}
}

interface Waiter {
	resolve(ack: ServerAck): void
	reject(err: Error): void
	timer: NodeJS.Timeout
}

export class SocketAcks {
	private readonly waiters = new Map<string, Waiter>()
	private closed = false

	constructor(sock: WASocket) {
		sock.ws.on('CB:ack,class:message', (node: BinaryNode) => {
			const id = node.attrs.id
			const waiter = id === undefined ? undefined : this.waiters.get(id)
			if (!waiter || id === undefined) return
			this.waiters.delete(id)
			clearTimeout(waiter.timer)
			waiter.resolve({ error: node.attrs.error })
		})
		sock.ev.on('connection.update', update => {
			if (update.connection === 'close') this.close('the socket closed before the server acknowledged the message')
		})
	}

	/** Register before sending (the ack can beat `sendMessage`'s own resolution). */
	wait(id: string, timeoutMs: number): Promise<ServerAck> {
		if (this.closed) return Promise.reject(new AckLostError('the socket is closed'))
		this.waiters.get(id)?.reject(new AckLostError('superseded by a newer send of the same id'))
		return new Promise<ServerAck>((resolve, reject) => {
			const timer = setTimeout(() => {
				this.waiters.delete(id)
				reject(new AckLostError(`no server ack within ${timeoutMs} ms`))
			}, timeoutMs)
			this.waiters.set(id, { resolve, reject, timer })
		})
	}

	/** Give up on one id (its send threw before reaching the wire). */
	cancel(id: string): void {
		const waiter = this.waiters.get(id)
		if (!waiter) return
		this.waiters.delete(id)
		clearTimeout(waiter.timer)
	}

	private close(reason: string): void {
		this.closed = true
		for (const [id, waiter] of this.waiters) {
			clearTimeout(waiter.timer)
			waiter.reject(new AckLostError(reason))
			this.waiters.delete(id)
		}
	}
}
