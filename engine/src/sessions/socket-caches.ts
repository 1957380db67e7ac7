/**
 * The caches every Baileys socket is handed: views over ONE process-wide
 * budgeted LRU, prefixed per session, so a socket never builds its own NodeCache (with a
 * timer per entry) and the whole process stays under one byte budget however many
 * sessions it holds. The signal key cache (auth/redis-auth.ts) shares the same LRU.
 */
import type { CacheStore, GroupMetadata, PossiblyExtendedCacheStore, UserFacingSocketConfig } from '@whiskeysockets/baileys'
import type { BudgetLru } from '../auth/lru.js'

const MINUTE = 60_000
// Baileys' own defaults for these caches (Defaults.DEFAULT_CACHE_TTLS and its sockets).
const TTL = {
	msgRetry: 60 * MINUTE,
	userDevices: 5 * MINUTE,
	callOffer: 5 * MINUTE,
	placeholderResend: 60 * MINUTE,
	media: 60 * MINUTE,
	group: 60 * MINUTE,
}

function view(lru: BudgetLru, prefix: string, ttlMs: number): PossiblyExtendedCacheStore {
	return {
		get: <T>(key: string) => lru.get(prefix + key) as T | undefined,
		set: <T>(key: string, value: T) => {
			lru.set(prefix + key, value, ttlMs)
		},
		del: (key: string) => {
			lru.delete(prefix + key)
		},
		flushAll: () => {
			lru.deletePrefix(prefix)
		},
		mget: async <T>(keys: string[]) => Object.fromEntries(keys.map(k => [k, lru.get(prefix + k) as T | undefined])),
		mset: <T>(entries: { key: string; value: T }[]) => {
			for (const { key, value } of entries) lru.set(prefix + key, value, ttlMs)
		},
		mdel: (keys: string[]) => {
			for (const k of keys) lru.delete(prefix + k)
		},
	}
}

export type SocketCaches = Pick<UserFacingSocketConfig, 'msgRetryCounterCache' | 'userDevicesCache' | 'callOfferCache' | 'placeholderResendCache' | 'mediaCache' | 'cachedGroupMetadata'> & {
	groups: CacheStore
}

/** The prefix every cache entry of `session` carries; `lru.deletePrefix` forgets a session. */
export function cachePrefix(session: string): string {
	return `sock:${session}\0`
}

export function socketCaches(lru: BudgetLru, session: string): SocketCaches {
	const p = cachePrefix(session)
	const groups = view(lru, `${p}group\0`, TTL.group)
	return {
		msgRetryCounterCache: view(lru, `${p}retry\0`, TTL.msgRetry),
		userDevicesCache: view(lru, `${p}devices\0`, TTL.userDevices),
		callOfferCache: view(lru, `${p}call\0`, TTL.callOffer),
		placeholderResendCache: view(lru, `${p}placeholder\0`, TTL.placeholderResend),
		mediaCache: view(lru, `${p}media\0`, TTL.media),
		// Filled from groups.upsert, dropped on groups.update (session.ts); a miss makes
		// Baileys fetch the metadata itself.
		cachedGroupMetadata: async (jid: string) => groups.get<GroupMetadata>(jid) as GroupMetadata | undefined,
		groups,
	}
}
