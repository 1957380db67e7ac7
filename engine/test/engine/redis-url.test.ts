import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { redisOptionsFromUrl } from '../../src/redis-url.js'

describe('redis_url as the Python side writes it', () => {
	it('maps the managed unix socket to a path, as ioredis needs', () => {
		assert.deepEqual(redisOptionsFromUrl('unix:///var/lib/wapp/redis/redis.sock'), { path: '/var/lib/wapp/redis/redis.sock', db: 0 })
		assert.deepEqual(redisOptionsFromUrl('unix:///var/lib/wapp/redis/redis.sock?db=3'), { path: '/var/lib/wapp/redis/redis.sock', db: 3 })
	})

	it('maps redis:// and rediss:// with credentials, port and database', () => {
		assert.deepEqual(redisOptionsFromUrl('redis://localhost'), { host: 'localhost', port: 6379, db: 0 })
		assert.deepEqual(redisOptionsFromUrl('redis://:s%40cret@10.0.0.5:6380/2'), { host: '10.0.0.5', port: 6380, db: 2, password: 's@cret' })
		assert.deepEqual(redisOptionsFromUrl('rediss://app:pw@[::1]:7000/1'), { host: '::1', port: 7000, db: 1, username: 'app', password: 'pw', tls: {} })
	})

	it('refuses what it cannot connect to', () => {
		assert.throws(() => redisOptionsFromUrl('localhost:6379'), /scheme must be|not a URL/)
		assert.throws(() => redisOptionsFromUrl('http://localhost'), /scheme must be/)
		assert.throws(() => redisOptionsFromUrl('unix://relative/redis.sock'), /absolute path/)
		assert.throws(() => redisOptionsFromUrl('redis://localhost/zero'), /is not a number/)
	})
})
