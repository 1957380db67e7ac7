import { getBinaryNodeChild, getBinaryNodeChildren, jidDecode, type BinaryNode } from '@whiskeysockets/baileys'
import { S_WA, type SimContext } from './context.js'
import type { ExternalPeers } from './relay.js'
import type { Account } from './store.js'

interface Resolved {
	jid: string
	account?: Account
	contact?: { phone: string; lid: string }
}

/** Distinct users whose lookups are counted; past it the counts start over (long benchmark runs). */
const MAX_COUNTED = 100_000

/**
 * USync: device lists (with LID), contact existence, status, disappearing mode.
 *
 * Existence is what WhatsApp answers: a number is registered ("in", with its devices) when
 * it is a paired sandbox account or a simulated contact; any other number is "out" and has
 * an empty device list, so nothing can be encrypted to it.
 */
export class USync {
	external?: ExternalPeers
	/** `user@server` -> how many USync queries named it (tests check that lookups are cached). */
	private readonly counts = new Map<string, number>()

	constructor(private readonly ctx: SimContext) {}

	/** How many USync queries have named this number (or JID user), whatever their protocols. */
	lookups(phoneOrJid: string): number {
		const jid = phoneOrJid.includes('@') ? phoneOrJid : `${phoneOrJid}@${S_WA}`
		return this.counts.get(jid) ?? 0
	}

	query(node: BinaryNode): BinaryNode[] {
		const usync = getBinaryNodeChild(node, 'usync')
		const protocols = (getBinaryNodeChild(usync, 'query')?.content as BinaryNode[] | undefined)?.map(p => p.tag) ?? []
		const users = getBinaryNodeChildren(getBinaryNodeChild(usync, 'list'), 'user').map(u => this.resolve(u))
		if (this.counts.size > MAX_COUNTED) this.counts.clear()
		for (const u of users) this.counts.set(u.jid, (this.counts.get(u.jid) ?? 0) + 1)
		return [
			{
				tag: 'usync',
				attrs: { sid: usync?.attrs.sid ?? '', index: '0', last: 'true' },
				content: [
					{ tag: 'result', attrs: {} },
					{ tag: 'list', attrs: {}, content: users.map(u => ({ tag: 'user', attrs: { jid: u.jid }, content: protocols.map(p => this.protocolNode(p, u)) })) }
				]
			}
		]
	}

	private resolve(u: BinaryNode): Resolved {
		const phoneNode = getBinaryNodeChild(u, 'contact')
		if (!u.attrs.jid && phoneNode?.content) {
			const phone = Buffer.from(phoneNode.content as Uint8Array).toString().replace(/^\+/, '')
			const jid = `${phone}@${S_WA}`
			return { jid, account: this.ctx.store.getByPhone(phone), contact: this.external?.resolve(phone, S_WA) }
		}
		const jid = u.attrs.jid ?? ''
		const d = jidDecode(jid)
		if (!d) return { jid }
		return { jid, account: this.ctx.store.getByUser(d.user, d.server), contact: this.external?.resolve(d.user, d.server) }
	}

	private protocolNode(protocol: string, u: Resolved): BinaryNode {
		const known = u.account ?? u.contact
		switch (protocol) {
			case 'devices': {
				// Device 0 (the phone) is listed only for contacts, whose Signal state the simulator holds.
				const devices = u.account
					? u.account.devices.map(d => ({ tag: 'device', attrs: { id: String(d.id), 'key-index': String(d.keyIndex) } }))
					: u.contact
						? [{ tag: 'device', attrs: { id: '0' } }]
						: []
				return { tag: 'devices', attrs: {}, content: [{ tag: 'device-list', attrs: {}, content: devices }] }
			}
			case 'lid':
				return known ? { tag: 'lid', attrs: { val: `${known.lid}@lid` } } : { tag: 'lid', attrs: {} }
			case 'contact':
				return known ? { tag: 'contact', attrs: { type: 'in' }, content: Buffer.from(`+${known.phone}`) } : { tag: 'contact', attrs: { type: 'out' } }
			case 'status':
				return { tag: 'status', attrs: { t: '0', code: '401' } }
			case 'disappearing_mode':
				return { tag: 'disappearing_mode', attrs: { duration: '0', t: '0' } }
			default:
				return { tag: protocol, attrs: {}, content: [{ tag: 'error', attrs: { code: '501', text: 'feature-not-implemented' } }] }
		}
	}

	/** Protocols this implementation answers; others are reported as unhandled. */
	static readonly KNOWN = new Set(['devices', 'lid', 'contact', 'status', 'disappearing_mode'])
}
