import { getBinaryNodeChild, getBinaryNodeChildBuffer, getBinaryNodeChildren, jidDecode, type BinaryNode } from '@whiskeysockets/baileys'
import type { Conn } from './conn.js'
import { S_WA, SERVER_JID, unixNow, type SimContext } from './context.js'
import { IqFailure, serverId } from './pairing.js'
import type { Device } from './store.js'

/** Server-side "prekey low" threshold, as Baileys' MIN_PREKEY_COUNT expects. */
const PREKEY_LOW = 5

const be = (n: number, bytes: number): Buffer => {
	const out = Buffer.alloc(bytes)
	out.writeUIntBE(n, 0, bytes)
	return out
}

export interface ExternalKeySource {
	/** A key bundle `<user>` child list for a device the simulator plays itself (a simulated contact). */
	bundle(user: string, server: string, device: number): Promise<BinaryNode[] | undefined> | BinaryNode[] | undefined
}

/** The `encrypt` namespace: prekey count/upload/digest/rotate and key bundle fetches. */
export class Keys {
	external?: ExternalKeySource

	constructor(private readonly ctx: SimContext) {}

	count(conn: Conn): BinaryNode[] {
		return [{ tag: 'count', attrs: { value: String(conn.device!.preKeys.length) } }]
	}

	upload(conn: Conn, node: BinaryNode): undefined {
		const dev = conn.device!
		const reg = getBinaryNodeChildBuffer(node, 'registration')
		const identity = getBinaryNodeChildBuffer(node, 'identity')
		const list = getBinaryNodeChild(node, 'list')
		const skey = getBinaryNodeChild(node, 'skey')
		if (!reg || reg.length !== 4 || !identity || identity.length !== 32 || !list || !skey) throw new IqFailure(400, 'bad-request')
		if (Buffer.from(identity).toString('base64') !== dev.identityPub) throw new IqFailure(409, 'conflict')
		dev.registrationId = Buffer.from(reg).readUInt32BE(0)
		this.setSignedPreKey(dev, skey)
		const known = new Set(dev.preKeys.map(k => k.id))
		for (const key of getBinaryNodeChildren(list, 'key')) {
			const id = getBinaryNodeChildBuffer(key, 'id')
			const value = getBinaryNodeChildBuffer(key, 'value')
			if (!id || !value || value.length !== 32) throw new IqFailure(400, 'bad-request')
			const keyId = Buffer.from(id).readUIntBE(0, id.length)
			if (!known.has(keyId)) dev.preKeys.push({ id: keyId, pub: Buffer.from(value).toString('base64') })
		}
		this.lowNotified.delete(conn.jid!)
		this.ctx.store.changed()
		return undefined
	}

	rotate(conn: Conn, node: BinaryNode): undefined {
		const skey = getBinaryNodeChild(getBinaryNodeChild(node, 'rotate'), 'skey')
		if (!skey) throw new IqFailure(400, 'bad-request')
		this.setSignedPreKey(conn.device!, skey)
		this.ctx.store.changed()
		return undefined
	}

	private setSignedPreKey(dev: Device, skey: BinaryNode): void {
		const id = getBinaryNodeChildBuffer(skey, 'id')
		const value = getBinaryNodeChildBuffer(skey, 'value')
		const sig = getBinaryNodeChildBuffer(skey, 'signature')
		if (!id || !value || value.length !== 32 || !sig || sig.length !== 64) throw new IqFailure(400, 'bad-request')
		dev.signedPreKey = { id: Buffer.from(id).readUIntBE(0, id.length), pub: Buffer.from(value).toString('base64'), sig: Buffer.from(sig).toString('base64') }
	}

	digest(conn: Conn): BinaryNode[] {
		const dev = conn.device!
		return [
			{
				tag: 'digest',
				attrs: {},
				content: [
					{ tag: 'registration', attrs: {}, content: be(dev.registrationId, 4) },
					{ tag: 'type', attrs: {}, content: Buffer.from([5]) },
					{ tag: 'identity', attrs: {}, content: Buffer.from(dev.identityPub, 'base64') },
					{ tag: 'skey', attrs: {}, content: [{ tag: 'id', attrs: {}, content: be(dev.signedPreKey.id, 3) }] },
					{ tag: 'list', attrs: {}, content: dev.preKeys.map(k => ({ tag: 'id', attrs: {}, content: be(k.id, 3) })) }
				]
			}
		]
	}

	/**
	 * Bundles for the requested device JIDs. Unknown devices are left out: an `<error>`
	 * under any user fails Baileys' whole batch.
	 */
	async fetch(node: BinaryNode): Promise<BinaryNode[]> {
		const users: BinaryNode[] = []
		for (const u of getBinaryNodeChildren(getBinaryNodeChild(node, 'key'), 'user')) {
			const jid = u.attrs.jid
			const decoded = jid ? jidDecode(jid) : undefined
			if (!jid || !decoded) continue
			const device = decoded.device ?? 0
			const acc = this.ctx.store.getByUser(decoded.user, decoded.server)
			const dev = acc ? this.ctx.store.findDevice(acc, device) : undefined
			let content: BinaryNode[] | undefined
			if (acc && dev) content = this.bundleOf(acc.phone, dev)
			else if (this.external) content = await this.external.bundle(decoded.user, decoded.server, device)
			if (content) users.push({ tag: 'user', attrs: { jid }, content })
		}
		return [{ tag: 'list', attrs: {}, content: users }]
	}

	private bundleOf(phone: string, dev: Device): BinaryNode[] {
		const content: BinaryNode[] = [
			{ tag: 'registration', attrs: {}, content: be(dev.registrationId, 4) },
			{ tag: 'type', attrs: {}, content: Buffer.from([5]) },
			{ tag: 'identity', attrs: {}, content: Buffer.from(dev.identityPub, 'base64') },
			{
				tag: 'skey',
				attrs: {},
				content: [
					{ tag: 'id', attrs: {}, content: be(dev.signedPreKey.id, 3) },
					{ tag: 'value', attrs: {}, content: Buffer.from(dev.signedPreKey.pub, 'base64') },
					{ tag: 'signature', attrs: {}, content: Buffer.from(dev.signedPreKey.sig, 'base64') }
				]
			}
		]
		// Each one-time prekey is handed out once, as the real server does.
		const pre = dev.preKeys.shift()
		if (pre) {
			content.push({
				tag: 'key',
				attrs: {},
				content: [
					{ tag: 'id', attrs: {}, content: be(pre.id, 3) },
					{ tag: 'value', attrs: {}, content: Buffer.from(pre.pub, 'base64') }
				]
			})
			this.ctx.store.changed()
			this.maybeNotifyLow(phone, dev)
		}
		return content
	}

	/** A device's bundle in wire form for the simulator's own Signal users (contacts); pops a prekey. */
	takeWireBundle(phone: string, dev: Device) {
		const pre = dev.preKeys.shift()
		if (pre) {
			this.ctx.store.changed()
			this.maybeNotifyLow(phone, dev)
		}
		return {
			registrationId: dev.registrationId,
			identityKey: Buffer.from(dev.identityPub, 'base64'),
			signedPreKey: { keyId: dev.signedPreKey.id, publicKey: Buffer.from(dev.signedPreKey.pub, 'base64'), signature: Buffer.from(dev.signedPreKey.sig, 'base64') },
			preKey: pre ? { keyId: pre.id, publicKey: Buffer.from(pre.pub, 'base64') } : undefined
		}
	}

	private readonly lowNotified = new Set<string>()

	/** `<notification type="encrypt"><count/>` makes the owner upload more prekeys. */
	private maybeNotifyLow(phone: string, dev: Device): void {
		if (dev.preKeys.length >= PREKEY_LOW) return
		const jid = `${phone}:${dev.id}@${S_WA}`
		if (this.lowNotified.has(jid)) return
		const conn = this.ctx.live.get(phone, dev.id)
		if (!conn) return
		this.lowNotified.add(jid)
		conn.send({
			tag: 'notification',
			attrs: { from: SERVER_JID, type: 'encrypt', id: serverId(), t: unixNow() },
			content: [{ tag: 'count', attrs: { value: String(dev.preKeys.length) } }]
		})
	}
}
