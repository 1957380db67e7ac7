import type { RedisOptions } from 'ioredis'

/**
 * `redis_url` as the Python side writes it (redis-py's `from_url` forms):
 * - `unix:///var/lib/wapp/redis/redis.sock[?db=N]`: the appliance's managed Redis. ioredis
 *   does not parse unix URLs, it wants `{ path }`.
 * - `redis://[user:password@]host[:port][/db]` and `rediss://...` (TLS): an external Redis.
 * Throws on anything else, so a typo is a configuration error at start, not a hang later.
 */
export function redisOptionsFromUrl(url: string): RedisOptions {
	let parsed: URL
	try {
		parsed = new URL(url)
	} catch {
		throw new Error(`redis_url ${JSON.stringify(url)} is not a URL`)
	}
	if (parsed.protocol === 'unix:') {
		const path = decodeURIComponent(parsed.pathname)
		if (parsed.host !== '' || !path.startsWith('/')) {
			throw new Error(`redis_url ${JSON.stringify(url)}: a unix socket URL needs an absolute path (unix:///path/to/redis.sock)`)
		}
		const db = parseDb(parsed.searchParams.get('db') ?? '0', url)
		return { path, db, ...credentials(parsed) }
	}
	if (parsed.protocol === 'redis:' || parsed.protocol === 'rediss:') {
		if (parsed.hostname === '') throw new Error(`redis_url ${JSON.stringify(url)} has no host`)
		const port = parsed.port === '' ? 6379 : Number(parsed.port)
		const dbText = parsed.pathname.replace(/^\//, '') || (parsed.searchParams.get('db') ?? '0')
		return {
			// URL keeps IPv6 literals bracketed; the socket wants them bare.
			host: parsed.hostname.replace(/^\[(.*)\]$/, '$1'),
			port,
			db: parseDb(dbText, url),
			...credentials(parsed),
			...(parsed.protocol === 'rediss:' ? { tls: {} } : {}),
		}
	}
	throw new Error(`redis_url ${JSON.stringify(url)}: scheme must be unix://, redis:// or rediss://`)
}

function parseDb(text: string, url: string): number {
	if (!/^\d+$/.test(text)) throw new Error(`redis_url ${JSON.stringify(url)}: database ${JSON.stringify(text)} is not a number`)
	return Number(text)
}

function credentials(parsed: URL): Pick<RedisOptions, 'username' | 'password'> {
	const out: Pick<RedisOptions, 'username' | 'password'> = {}
	if (parsed.username !== '') out.username = decodeURIComponent(parsed.username)
	if (parsed.password !== '') out.password = decodeURIComponent(parsed.password)
	return out
}
