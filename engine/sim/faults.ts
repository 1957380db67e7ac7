import type { BinaryNode } from '@whiskeysockets/baileys'
import { InvalidInput } from './store.js'

export const KICK_KINDS = ['515', '440', '401', '500', '403', 'xmlstreamend', 'drop'] as const
export type KickKind = (typeof KICK_KINDS)[number]

export interface IqRule {
	id: number
	xmlns?: string
	type?: string
	/** Tag of the IQ's first child, e.g. "ping", "media_conn", "usync". */
	child?: string
	/** Only IQs from this account (phone). */
	phone?: string
	delayMs: number
	error?: { code: number; text: string }
	/** How many more IQs the rule applies to; undefined = until removed. */
	remaining?: number
	hits: number
}

export interface MessageRule {
	id: number
	/** Sender phone; undefined = any sender. */
	phone?: string
	errorCode: number
	remaining?: number
	hits: number
}

/** The stanza a kick sends before closing; `drop` sends nothing and cuts the socket. */
export function kickStanza(kind: KickKind): BinaryNode | undefined {
	switch (kind) {
		case '515':
			return { tag: 'stream:error', attrs: { code: '515' } }
		case '440':
			return { tag: 'stream:error', attrs: {}, content: [{ tag: 'conflict', attrs: { type: 'replaced' } }] }
		case '401':
			return { tag: 'stream:error', attrs: { code: '401' }, content: [{ tag: 'conflict', attrs: { type: 'device_removed' } }] }
		case '500':
			// Any child Baileys has no code for maps to 500 badSession.
			return { tag: 'stream:error', attrs: {}, content: [{ tag: 'bad-session', attrs: {} }] }
		case '403':
			return { tag: 'failure', attrs: { reason: '403', location: 'sim' } }
		case 'xmlstreamend':
			return { tag: 'xmlstreamend', attrs: {} }
		case 'drop':
			return undefined
	}
}

const optString = (v: unknown, name: string): string | undefined => {
	if (v === undefined || v === null) return undefined
	if (typeof v !== 'string' || !v) throw new InvalidInput('INVALID_FAULT', `${name} must be a non-empty string`)
	return v
}
const optInt = (v: unknown, name: string, min: number, max: number): number | undefined => {
	if (v === undefined || v === null) return undefined
	if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new InvalidInput('INVALID_FAULT', `${name} must be an integer in [${min}, ${max}]`)
	return v
}

/** Runtime fault switches consulted by the IQ, ping and message paths. */
export class Faults {
	private nextId = 1
	iqRules: IqRule[] = []
	messageRules: MessageRule[] = []
	/** Device JIDs whose pings go unanswered (keep-alive then fails with 408). */
	readonly silentPings = new Set<string>()
	/** Logins from an older WhatsApp Web version get `<failure reason="405"/>`, as WhatsApp answers a stale client. */
	minVersion: [number, number, number] | undefined

	setMinVersion(input: unknown): [number, number, number] | undefined {
		if (input === undefined || input === null) return (this.minVersion = undefined)
		const parts = typeof input === 'string' ? input.split('.').map(Number) : []
		if (parts.length !== 3 || !parts.every(n => Number.isSafeInteger(n) && n >= 0)) throw new InvalidInput('INVALID_FAULT', 'version must look like 2.3000.1012345678, or be null')
		return (this.minVersion = parts as [number, number, number])
	}

	/** The failure stanza for a client announcing `v` (ClientPayload.userAgent.appVersion), if refused. */
	versionRefusal(v: { primary?: number | null; secondary?: number | null; tertiary?: number | null } | null | undefined): BinaryNode | undefined {
		const min = this.minVersion
		if (!min) return undefined
		const got = [v?.primary ?? 0, v?.secondary ?? 0, v?.tertiary ?? 0]
		const i = got.findIndex((n, k) => n !== min[k])
		return i >= 0 && got[i]! < min[i]! ? { tag: 'failure', attrs: { reason: '405', location: 'sim' } } : undefined
	}

	addIqRule(input: Record<string, unknown>): IqRule {
		const xmlns = optString(input.xmlns, 'xmlns')
		const type = optString(input.type, 'type')
		const child = optString(input.child, 'child')
		const phone = optString(input.phone, 'phone')
		const delayMs = optInt(input.delayMs, 'delayMs', 0, 600_000) ?? 0
		const errorCode = optInt(input.errorCode, 'errorCode', 400, 599)
		const errorText = optString(input.errorText, 'errorText')
		const remaining = optInt(input.count, 'count', 1, 1_000_000)
		if (!xmlns && !child) throw new InvalidInput('INVALID_FAULT', 'give at least xmlns or child to match IQs')
		if (!delayMs && errorCode === undefined) throw new InvalidInput('INVALID_FAULT', 'give delayMs and/or errorCode')
		const rule: IqRule = {
			id: this.nextId++,
			xmlns,
			type,
			child,
			phone,
			delayMs,
			error: errorCode !== undefined ? { code: errorCode, text: errorText ?? defaultErrorText(errorCode) } : undefined,
			remaining,
			hits: 0
		}
		this.iqRules.push(rule)
		return rule
	}

	addMessageRule(input: Record<string, unknown>): MessageRule {
		const phone = optString(input.phone, 'phone')
		const errorCode = optInt(input.errorCode, 'errorCode', 400, 599) ?? 479
		const remaining = optInt(input.count, 'count', 1, 1_000_000)
		const rule: MessageRule = { id: this.nextId++, phone, errorCode, remaining, hits: 0 }
		this.messageRules.push(rule)
		return rule
	}

	remove(id: number): boolean {
		const before = this.iqRules.length + this.messageRules.length
		this.iqRules = this.iqRules.filter(r => r.id !== id)
		this.messageRules = this.messageRules.filter(r => r.id !== id)
		return this.iqRules.length + this.messageRules.length !== before
	}

	clear(): void {
		this.iqRules = []
		this.messageRules = []
		this.silentPings.clear()
		this.minVersion = undefined
	}

	/** First matching IQ rule, consuming one use of it. */
	matchIq(node: BinaryNode, phone: string | undefined): IqRule | undefined {
		const child = Array.isArray(node.content) ? node.content[0]?.tag : undefined
		const rule = this.iqRules.find(
			r =>
				(!r.xmlns || r.xmlns === node.attrs.xmlns) &&
				(!r.type || r.type === node.attrs.type) &&
				(!r.child || r.child === child) &&
				(!r.phone || r.phone === phone)
		)
		if (rule) this.consume(rule, this.iqRules, r => (this.iqRules = r))
		return rule
	}

	matchMessage(phone: string): MessageRule | undefined {
		const rule = this.messageRules.find(r => !r.phone || r.phone === phone)
		if (rule) this.consume(rule, this.messageRules, r => (this.messageRules = r))
		return rule
	}

	private consume<T extends { id: number; hits: number; remaining?: number }>(rule: T, list: T[], set: (l: T[]) => void): void {
		rule.hits++
		if (rule.remaining !== undefined && --rule.remaining <= 0) set(list.filter(r => r.id !== rule.id))
	}

	snapshot() {
		return { iqRules: this.iqRules, messageRules: this.messageRules, silentPings: [...this.silentPings], minVersion: this.minVersion?.join('.') ?? null }
	}
}

function defaultErrorText(code: number): string {
	switch (code) {
		case 429:
			return 'rate-overlimit'
		case 404:
			return 'item-not-found'
		case 400:
			return 'bad-request'
		case 401:
			return 'not-authorized'
		case 403:
			return 'forbidden'
		case 503:
			return 'service-unavailable'
		default:
			return 'internal-server-error'
	}
}
