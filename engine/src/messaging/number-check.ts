/**
 * "Is this number on WhatsApp?" before a 1:1 send. Without it a send to
 * an unregistered number is encrypted to nobody, acked by the server, and stays `sent`
 * forever. With it the send is `failed{code: NOT_ON_WHATSAPP}` and nothing leaves.
 *
 * The lookup is the device-list query Baileys' sendMessage makes anyway (USync, context
 * `message`): a registered number always lists at least one device, and Baileys caches the
 * answer, so for a number that is on WhatsApp the check costs no extra round trip. Only an
 * empty device list is confirmed with `onWhatsApp` (USync `contact`, the authoritative
 * answer), so a device list that is merely empty for another reason never fails a send.
 *
 * Answers are cached per session in one process-wide LRU with a byte budget: per session,
 * because no session's lookups should decide another tenant's sends (and the sandbox may
 * answer per tenant); one budget, so memory grows with traffic, not with sessions.
 */
import { areJidsSameUser, jidDecode, type WASocket } from '@whiskeysockets/baileys'
import { BudgetLru } from '../auth/lru.js'

export const NOT_ON_WHATSAPP = 'NOT_ON_WHATSAPP'

export interface NumberCacheOptions {
	/** Bytes for every session's answers together (an entry is about 150 bytes). */
	budgetBytes?: number
	/** How long "on WhatsApp" is believed: numbers rarely leave WhatsApp. */
	positiveTtlMs?: number
	/** How long "not on WhatsApp" is believed: short, a person may install it today. */
	negativeTtlMs?: number
}

const HOUR = 3_600_000

export class NumberCache {
	private readonly lru: BudgetLru
	private readonly positiveTtlMs: number
	private readonly negativeTtlMs: number

	constructor(opts: NumberCacheOptions = {}) {
		this.lru = new BudgetLru(opts.budgetBytes ?? 4 * 1024 * 1024)
		this.positiveTtlMs = opts.positiveTtlMs ?? 24 * HOUR
		this.negativeTtlMs = opts.negativeTtlMs ?? HOUR
	}

	/** true / false when known and fresh, undefined when it must be looked up. */
	get(session: string, phone: string): boolean | undefined {
		return this.lru.get(key(session, phone)) as boolean | undefined
	}

	set(session: string, phone: string, exists: boolean): void {
		this.lru.set(key(session, phone), exists, exists ? this.positiveTtlMs : this.negativeTtlMs)
	}

	/** A session that is gone (deleted, logged out) leaves nothing behind. */
	dropSession(session: string): void {
		this.lru.deletePrefix(`${session}\0`)
	}

	get size(): number {
		return this.lru.size
	}
}

function key(session: string, phone: string): string {
	return `${session}\0${phone}`
}

/**
 * The phone number a send to `jid` must be checked for, or undefined when there is none to
 * check: groups, LIDs (onWhatsApp cannot look them up, and a LID is only ever learned
 * from WhatsApp itself), a specific device, or the session's own number.
 */
export function phoneToCheck(jid: string, sock: WASocket): string | undefined {
	const d = jidDecode(jid)
	if (!d || d.server !== 's.whatsapp.net' || d.device !== undefined) return undefined
	const me = sock.user?.id
	if (me && areJidsSameUser(jid, me)) return undefined
	return d.user
}

export type CheckOutcome = 'cached-in' | 'cached-out' | 'in' | 'out'

/**
 * Whether `phone` (PN JID `jid`) is on WhatsApp: from the cache, else looked up (the device
 * list, then onWhatsApp if it is empty) and remembered. A failed lookup throws (the caller
 * treats it like any failed send: retried later).
 */
export async function isOnWhatsApp(sock: WASocket, cache: NumberCache, session: string, phone: string, jid: string): Promise<CheckOutcome> {
	const known = cache.get(session, phone)
	if (known !== undefined) return known ? 'cached-in' : 'cached-out'
	// useCache=true: a device list Baileys already holds answers at once; a fresh one is
	// stored where sendMessage will find it, so the send does not ask again.
	const devices = await sock.getUSyncDevices([jid], true, false)
	let exists = devices.some(d => d.user === phone)
	if (!exists) {
		const found = (await sock.onWhatsApp(jid)) ?? []
		exists = found.some(f => f.exists && jidDecode(f.jid)?.user === phone)
	}
	cache.set(session, phone, exists)
	return exists ? 'in' : 'out'
}
