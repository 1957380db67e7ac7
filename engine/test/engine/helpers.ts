/**
 * Real services for the engine's tests: a private redis-server on a temp unix socket (the
 * way the appliance runs its own), and the built engine as a child process on this Node.
 * Nothing here mocks Redis.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes, randomUUID } from 'node:crypto'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { Redis } from 'ioredis'
import { Ajv2020 } from 'ajv/dist/2020.js'
import addFormatsModule from 'ajv-formats'
import eventSchema from '../../src/generated/event.schema.json' with { type: 'json' }
import heartbeatSchema from '../../src/generated/heartbeat.schema.json' with { type: 'json' }
import type { EngineRuntimeConfig, SendTextCommand, SessionStopCommand } from '../../src/generated/contracts.js'

export const ENGINE_MAIN = fileURLToPath(new URL('../../src/main.js', import.meta.url))

/** Poll `check` until it returns something other than undefined, or fail after `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined> | T | undefined, timeoutMs = 5000): Promise<T> {
	const deadline = Date.now() + timeoutMs
	for (;;) {
		const value = await check()
		if (value !== undefined) return value
		if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
		await sleep(25)
	}
}

export interface TestRedis {
	url: string
	socket: string
	/** A client for the test's own reads and writes. */
	client: Redis
	stop(): Promise<void>
}

export async function startRedis(): Promise<TestRedis> {
	const dir = mkdtempSync(join(tmpdir(), 'wapp-engine-test-'))
	const socket = join(dir, 'r.sock')
	const proc = spawn('redis-server', ['--port', '0', '--unixsocket', socket, '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' })
	const exited = new Promise<void>(resolve => proc.once('exit', () => resolve()))
	await waitFor('redis-server socket', () => (existsSync(socket) ? true : undefined))
	const client = new Redis({ path: socket, maxRetriesPerRequest: 1 })
	await client.ping()
	return {
		url: `unix://${socket}`,
		socket,
		client,
		async stop() {
			client.disconnect()
			proc.kill('SIGTERM')
			await exited
			rmSync(dir, { recursive: true, force: true })
		},
	}
}

/** A fresh master key file (base64 of 32 random bytes, 0600), as `wapp` creates it. */
export function masterKeyFile(): string {
	const file = join(mkdtempSync(join(tmpdir(), 'wapp-engine-key-')), 'master.key')
	writeFileSync(file, randomBytes(32).toString('base64') + '\n', { mode: 0o600 })
	return file
}

export function engineConfig(redisUrl: string, overrides: Partial<EngineRuntimeConfig> = {}): EngineRuntimeConfig {
	return {
		upstream: 'sandbox',
		redis_url: redisUrl,
		log_level: 'debug',
		data_dir: tmpdir(),
		master_key_file: overrides.master_key_file ?? masterKeyFile(),
		heartbeat_interval_s: 0.3,
		heartbeat_ttl_s: 3,
		pacing: { enabled: false, min_interval_s: 0, max_interval_s: 0, daily_cap: 100_000, warmup_days: 0, warmup_daily_cap: 100_000, composing_min_s: 0, composing_max_s: 0 },
		sessions: { max_concurrent_handshakes: 8, reconnect_base_s: 0.2, reconnect_max_s: 1, reconnect_max_attempts: 3, cache_budget_mb: 32, loop_lag_pause_ms: 1000 },
		sandbox: null,
		// Connection refused at once: tests never wait on the internet for a version.
		wa_version: { url: 'http://127.0.0.1:9/sw.js', timeout_s: 1, refresh_s: 86_400 },
		...overrides,
	}
}

export type LogLine = Record<string, unknown> & { level: string; msg: string }

export interface EngineChild {
	proc: ChildProcess
	pid: number
	/** Every stdout line, parsed; the engine logs only JSON. */
	logs: LogLine[]
	/** Anything that is not a JSON log line (stderr, stray stdout); should stay empty. */
	noise: string[]
	exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
	waitForLog(what: string, match: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>
	/** SIGKILL if still running; for cleanup. */
	kill(): Promise<void>
}

/** Run the built engine; `config` as an object is JSON-encoded, a string is passed raw, undefined leaves the env unset. */
export function startEngine(config: EngineRuntimeConfig | string | undefined): EngineChild {
	const env: NodeJS.ProcessEnv = { ...process.env }
	delete env.WAPP_ENGINE_CONFIG
	if (config !== undefined) env.WAPP_ENGINE_CONFIG = typeof config === 'string' ? config : JSON.stringify(config)
	// The engine must run on Node 24 (design.md); the suite runs on the venv's node.
	const proc = spawn(process.execPath, [ENGINE_MAIN], { env, stdio: ['ignore', 'pipe', 'pipe'] })
	const logs: LogLine[] = []
	const noise: string[] = []
	let buffered = ''
	proc.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
		buffered += chunk
		const lines = buffered.split('\n')
		buffered = lines.pop() ?? ''
		for (const line of lines) {
			if (line.trim() === '') continue
			try {
				logs.push(JSON.parse(line) as LogLine)
			} catch {
				noise.push(line)
			}
		}
	})
	proc.stderr!.setEncoding('utf8').on('data', (chunk: string) => noise.push(chunk))
	const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>(resolve => proc.once('exit', (code, signal) => resolve({ code, signal })))
	return {
		proc,
		pid: proc.pid!,
		logs,
		noise,
		exited,
		waitForLog: (what, match, timeoutMs = 5000) => waitFor(`engine log: ${what}`, () => logs.find(match), timeoutMs),
		async kill() {
			if (proc.exitCode === null && proc.signalCode === null) {
				proc.kill('SIGKILL')
				await exited
			}
		},
	}
}

const addFormats = addFormatsModule.default

/** Validators for what the engine writes, compiled from the exported contracts. */
export function contractValidators() {
	const ajv = new Ajv2020({ allErrors: true })
	addFormats(ajv)
	const event = ajv.compile(eventSchema)
	const heartbeat = ajv.compile(heartbeatSchema)
	const explain = (v: typeof event) => ajv.errorsText(v.errors)
	return { event, heartbeat, explain }
}

export interface StreamEvent {
	entryId: string
	event: Record<string, unknown> & { id: string; type: string; trace_id: string; session: string | null; payload: Record<string, unknown> }
}

/** All `wapp:events` entries, decoded from their `data` field. */
export async function readEvents(client: Redis, stream = 'wapp:events'): Promise<StreamEvent[]> {
	const entries = (await client.xrange(stream, '-', '+')) as [string, string[]][]
	return entries.map(([entryId, fields]) => {
		const at = fields.indexOf('data')
		if (at < 0 || at + 1 >= fields.length) throw new Error(`event entry ${entryId} has no data field: ${JSON.stringify(fields)}`)
		return { entryId, event: JSON.parse(fields[at + 1]!) as StreamEvent['event'] }
	})
}

export function stopCommand(overrides: Partial<SessionStopCommand> = {}): SessionStopCommand {
	return {
		id: randomUUID(),
		version: 1,
		timestamp: new Date().toISOString(),
		session: 'sales-1',
		trace_id: `trace-${randomUUID()}`,
		type: 'session_stop',
		payload: {},
		...overrides,
	}
}

export function sendTextCommand(overrides: Partial<SendTextCommand> = {}): SendTextCommand {
	return {
		id: randomUUID(),
		version: 1,
		timestamp: new Date().toISOString(),
		session: 'sales-1',
		trace_id: `trace-${randomUUID()}`,
		type: 'send_text',
		payload: { message_id: randomUUID(), wa_id: '3EB0AAAAAAAAAAAAAAAAAA', to: '4915112345678', text: 'hello', quoted: null, mentions: [] },
		...overrides,
	}
}

/** The number of entries pending in a group (XPENDING summary form). */
export async function pendingCount(client: Redis, stream: string, group: string): Promise<number> {
	const [count] = (await client.xpending(stream, group)) as [number, ...unknown[]]
	return count
}
