import { setTimeout as sleep } from 'node:timers/promises'
import { binaryNodeToString, type BinaryNode } from '@whiskeysockets/baileys'
import type { Conn } from './conn.js'
import { S_WA, SERVER_JID, type SimContext } from './context.js'
import type { Keys } from './keys.js'
import { IqFailure, isServerId, type Pairing } from './pairing.js'
import type { USync } from './usync.js'

type IqHandler = (conn: Conn, node: BinaryNode) => BinaryNode[] | undefined | Promise<BinaryNode[] | undefined>

const PRIVACY_DEFAULTS: Record<string, string> = {
	readreceipts: 'all',
	last: 'all',
	online: 'all',
	profile: 'all',
	status: 'all',
	groupadd: 'all',
	calladd: 'all',
	messages: 'all'
}

const childTag = (node: BinaryNode): string => (Array.isArray(node.content) ? (node.content[0]?.tag ?? '') : '')

export interface IqDeps {
	keys: Keys
	usync: USync
	pairing: Pairing
	onRemoveCompanion(conn: Conn, node: BinaryNode): void
}

/**
 * Answers every IQ Baileys sends. The table is keyed `xmlns type child`; an IQ that is
 * not in it gets `<error code="501">` and lands in the unhandled log, never silence.
 */
export class IqRouter {
	private readonly authed = new Map<string, IqHandler>()
	private readonly registering = new Map<string, IqHandler>()

	constructor(
		private readonly ctx: SimContext,
		deps: IqDeps
	) {
		const { keys, usync, pairing } = deps
		const empty: IqHandler = () => undefined
		this.registering.set('md set link_code_companion_reg', (c, n) => pairing.onLinkCodeIq(c, n))
		const a = this.authed
		a.set('md set link_code_companion_reg', (c, n) => pairing.onLinkCodeIq(c, n))
		a.set('encrypt get count', c => keys.count(c))
		a.set('encrypt set registration', (c, n) => keys.upload(c, n))
		a.set('encrypt get digest', c => keys.digest(c))
		a.set('encrypt get key', (_c, n) => keys.fetch(n))
		a.set('encrypt set rotate', (c, n) => keys.rotate(c, n))
		a.set('passive set active', empty)
		a.set('passive set passive', empty)
		a.set('abt get props', () => [{ tag: 'props', attrs: { protocol: '1', hash: 'wa-sim-1' } }])
		a.set('blocklist get ', () => [{ tag: 'list', attrs: {} }])
		a.set('blocklist set item', empty)
		a.set('privacy get privacy', () => [
			{ tag: 'privacy', attrs: {}, content: Object.entries(PRIVACY_DEFAULTS).map(([name, value]) => ({ tag: 'category', attrs: { name, value } })) }
		])
		a.set('privacy set privacy', empty)
		a.set('privacy set tokens', () => [{ tag: 'tokens', attrs: {} }])
		a.set('w:p get ping', empty)
		a.set('w:m set media_conn', () => [
			{
				tag: 'media_conn',
				attrs: { auth: 'wa-sim-media', ttl: '300', auth_ttl: '21600', max_buckets: '12' },
				content: [{ tag: 'host', attrs: { hostname: this.ctx.mediaHost(), maxContentLengthBytes: '104857600' } }]
			}
		])
		a.set('usync get usync', (_c, n) => usync.query(n))
		a.set('md set remove-companion-device', (c, n) => {
			deps.onRemoveCompanion(c, n)
			return undefined
		})
		// No profile pictures in the sandbox: the real service answers 404 for "none set".
		a.set('w:profile:picture get picture', () => {
			throw new IqFailure(404, 'item-not-found')
		})
		a.set('status set status', empty)
		a.set('w:stats  add', empty)
		a.set('w:stats set add', empty)
		a.set('disappearing_mode set disappearing_mode', empty)
	}

	async handle(conn: Conn, node: BinaryNode): Promise<void> {
		const { id, xmlns = '', type = '' } = node.attrs
		// Results to server-initiated IQs nobody awaits (pair-device, pair-success handled by Conn).
		if ((type === 'result' || type === 'error') && isServerId(id)) return
		const key = `${xmlns} ${type} ${childTag(node)}`
		const table = conn.phase === 'authenticated' ? this.authed : this.registering
		const handler = table.get(key)
		if (xmlns === 'w:p' && conn.jid && this.ctx.faults.silentPings.has(conn.jid)) return
		const rule = this.ctx.faults.matchIq(node, conn.account?.phone)
		if (rule?.delayMs) await sleep(rule.delayMs)
		if (rule?.error) return this.reply(conn, id, rule.error)
		if (!handler) {
			this.ctx.unhandled.record(conn, node, binaryNodeToString(node))
			this.ctx.log.warn({ key, conn: conn.jid }, 'unhandled iq')
			return this.reply(conn, id, { code: 501, text: 'feature-not-implemented' })
		}
		try {
			this.reply(conn, id, undefined, await handler(conn, node))
		} catch (err) {
			if (err instanceof IqFailure) return this.reply(conn, id, { code: err.code, text: err.text })
			this.ctx.log.error({ err, key }, 'iq handler failed')
			this.reply(conn, id, { code: 500, text: 'internal-server-error' })
		}
	}

	private reply(conn: Conn, id: string | undefined, error?: { code: number; text: string }, content?: BinaryNode[]): void {
		const node: BinaryNode = { tag: 'iq', attrs: { from: SERVER_JID, type: error ? 'error' : 'result', id: id ?? '' } }
		if (error) node.content = [{ tag: 'error', attrs: { code: String(error.code), text: error.text } }]
		else if (content?.length) node.content = content
		conn.send(node)
	}
}

