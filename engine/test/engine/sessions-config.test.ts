/**
 * What the session manager refuses at start: an unusable master key is configuration
 * (exit 3, `RestartPreventExitStatus=3`), never a crash loop.
 */
import assert from 'node:assert/strict'
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { engineConfig, masterKeyFile, startEngine } from './helpers.js'

describe('the engine refuses an unusable master key with exit code 3', { timeout: 30_000 }, () => {
	const dir = mkdtempSync(join(tmpdir(), 'wapp-bad-key-'))
	const file = (name: string, content: string, mode = 0o600) => {
		const path = join(dir, name)
		writeFileSync(path, content, { mode })
		chmodSync(path, mode)
		return path
	}
	const cases: [string, string, RegExp][] = [
		['the file is missing', join(dir, 'absent.key'), /cannot read the master key file/],
		['others may read it', file('open.key', Buffer.alloc(32, 1).toString('base64'), 0o644), /readable by its owner only/],
		['it is not base64', file('text.key', 'not a key!'), /is not base64/],
		['it holds 16 bytes', file('short.key', Buffer.alloc(16, 1).toString('base64')), /must hold 32 bytes, has 16/],
	]
	for (const [when, path, message] of cases) {
		it(`when ${when}`, async () => {
			const engine = startEngine(engineConfig('unix:///nonexistent/wapp/redis.sock', { master_key_file: path }))
			const { code } = await engine.exited
			assert.equal(code, 3)
			const fatal = engine.logs.find(l => l.level === 'fatal')
			assert.match(String(fatal?.msg), message)
		})
	}

	it('and starts with a good one (the same check passes the file wapp creates)', async () => {
		const engine = startEngine(engineConfig('unix:///nonexistent/wapp/redis.sock', { master_key_file: masterKeyFile() }))
		await engine.waitForLog('a Redis connection attempt', l => l.msg === 'redis connection error')
		assert.equal(engine.logs.find(l => l.level === 'fatal'), undefined)
		engine.proc.kill('SIGTERM')
		assert.equal((await engine.exited).code, 0)
	})
})
