import { Redis, type RedisOptions } from 'ioredis'
import type { Logger } from './log.js'
import { redisOptionsFromUrl } from './redis-url.js'

export type RedisRole = 'reader' | 'writer'

/**
 * One ioredis connection per role. The reader only runs blocking XREADGROUPs: a blocked
 * connection answers nothing else, and disconnecting it is how shutdown unblocks the read
 * without waiting out BLOCK. Everything else (heartbeat, XADD, XACK, XAUTOCLAIM) goes
 * through the writer, so in-flight work can still finish after the reader is gone.
 */
export function connectRedis(url: string, role: RedisRole, name: string, log: Logger): Redis {
	const options: RedisOptions = {
		...redisOptionsFromUrl(url),
		// Shows up in CLIENT LIST, so an operator can tell the engine's connections apart.
		connectionName: `${name}:${role}`,
		// The reader waits across reconnects (a blocked read has nothing better to do); the
		// writer gives up after ioredis' default retries so a dead Redis surfaces as an error.
		...(role === 'reader' ? { maxRetriesPerRequest: null } : {}),
		// Hundreds of sockets each issue a few commands per message (auth writes, marks,
		// events): the writer sends everything issued in one tick as one socket write,
		// in order. Never for the reader, whose commands block.
		...(role === 'writer' ? { enableAutoPipelining: true } : {}),
	}
	const redis = new Redis(options)
	const clog = log.child({ redis: role })
	// Without a listener ioredis prints unhandled errors itself; reconnecting is its job.
	redis.on('error', (err: Error) => clog.warn({ err: err.message }, 'redis connection error'))
	redis.on('ready', () => clog.debug('redis connection ready'))
	return redis
}

/** Close politely (QUIT waits for pending replies), or drop the socket when that fails or hangs. */
export async function closeRedis(redis: Redis, timeoutMs = 2000): Promise<void> {
	if (redis.status !== 'ready') {
		redis.disconnect()
		return
	}
	let timer: NodeJS.Timeout | undefined
	try {
		await Promise.race([
			redis.quit(),
			new Promise((_, reject) => {
				timer = setTimeout(() => reject(new Error('QUIT timed out')), timeoutMs)
			}),
		])
	} catch {
		redis.disconnect()
	} finally {
		clearTimeout(timer)
	}
}
