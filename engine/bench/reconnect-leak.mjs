/**
 * reconnect_leak (issue 12, section 3): heap growth of the engine over many reconnect
 * cycles of ONE session against the simulator. Baileys 7.0.0-rc14 creates one
 * AsyncLocalStorage per socket (addTransactionCapability) and never disables it
 * (WhiskeySockets/Baileys#2806); engine/patches/ carries the fix (PR #2807).
 *
 * Pairs one sandbox session, sends one text per cycle (a send runs Baileys' key
 * transactions, which is what enables the socket's storage), then kicks the socket with a
 * 515 stream error so the engine reconnects at once, and waits for `connected` again.
 * Every --every cycles: a forced GC through the inspector, then heapUsed and the number of
 * live AsyncLocalStorage instances (Runtime.queryObjects on its prototype). Last line:
 *   cycles=N heap_before_mb=.. heap_after_mb=.. heap_growth_kb_per_cycle=.. als_before=.. als_after=..
 * Usage: node bench/reconnect-leak.mjs [--cycles 1000] [--every 100] [--no-send]
 */
import { spawn } from 'node:child_process'
import { randomBytes, randomUUID } from 'node:crypto'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { Redis } from 'ioredis'
import WebSocket from 'ws'

const engineDir = join(dirname(fileURLToPath(import.meta.url)), '..')
const { values } = parseArgs({
	options: {
		cycles: { type: 'string', default: '1000' },
		every: { type: 'string', default: '100' },
		'no-send': { type: 'boolean', default: false },
	},
})
const CYCLES = Number(values.cycles)
const EVERY = Number(values.every)
const log = msg => console.log(`[reconnect_leak] ${msg}`)
const children = []
const work = mkdtempSync(join(tmpdir(), 'reconnect-leak-'))
function cleanup() {
	for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
	rmSync(work, { recursive: true, force: true })
}
process.on('SIGINT', () => (cleanup(), process.exit(130)))
process.on('SIGTERM', () => (cleanup(), process.exit(143)))

const freePort = () =>
	new Promise(resolve => {
		const s = createServer().listen(0, '127.0.0.1', () => {
			const { port } = s.address()
			s.close(() => resolve(port))
		})
	})
async function waitUntil(what, cond, timeoutMs) {
	const deadline = Date.now() + timeoutMs
	for (;;) {
		const v = await cond()
		if (v) return v
		if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
		await sleep(20)
	}
}

/** One inspector call on a fresh connection; throws on a protocol error. */
async function inspector(url, calls) {
	const ws = new WebSocket(url, { maxPayload: 1 << 30 })
	await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject))
	let next = 1
	const waiting = new Map()
	ws.on('message', data => {
		const msg = JSON.parse(String(data))
		const w = waiting.get(msg.id)
		waiting.delete(msg.id)
		if (msg.error) w?.reject(new Error(`${msg.error.message}`))
		else w?.resolve(msg.result)
	})
	const call = (method, params = {}) =>
		new Promise((resolve, reject) => {
			const id = next++
			waiting.set(id, { resolve, reject })
			ws.send(JSON.stringify({ id, method, params }))
		})
	try {
		return await calls(call)
	} finally {
		ws.close()
	}
}

/** Forced GC, then heapUsed and the live AsyncLocalStorage instances of the engine. */
const measure = url =>
	inspector(url, async call => {
		await call('HeapProfiler.collectGarbage')
		await call('HeapProfiler.collectGarbage')
		const proto = await call('Runtime.evaluate', { expression: "process.getBuiltinModule('node:async_hooks').AsyncLocalStorage.prototype" })
		const found = await call('Runtime.queryObjects', { prototypeObjectId: proto.result.objectId })
		const count = await call('Runtime.callFunctionOn', { objectId: found.objects.objectId, functionDeclaration: 'function () { return this.length }', returnByValue: true })
		const heap = await call('Runtime.evaluate', { expression: 'process.memoryUsage().heapUsed', returnByValue: true })
		await call('Runtime.releaseObjectGroup', { objectGroup: '' }).catch(() => undefined)
		return { heap: heap.result.value, als: count.result.value }
	})

// ---- services ----
const redisSock = join(work, 'redis.sock')
children.push(spawn('redis-server', ['--port', '0', '--unixsocket', redisSock, '--save', '', '--appendonly', 'no', '--dir', work], { stdio: 'ignore' }))
await waitUntil('redis', () => existsSync(redisSock), 10_000)
const redis = new Redis({ path: redisSock })
const simPort = await freePort()
const controlPort = await freePort()
children.push(spawn(process.execPath, [join(engineDir, 'dist/sim/main.js'), '--port', String(simPort), '--control-port', String(controlPort), '--data-dir', join(work, 'sim'), '--in-memory', '--log-level', 'error'], { stdio: ['ignore', 'ignore', 'inherit'] }))
const control = `http://127.0.0.1:${controlPort}`
await waitUntil('simulator', () => fetch(`${control}/health`).then(r => r.ok, () => false), 30_000)
const info = (await (await fetch(`${control}/info`)).json()).data
const api = async (method, path, body) => {
	const res = await fetch(`${control}${path}`, { method, headers: { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) })
	const json = await res.json()
	if (!json.success) throw new Error(`${method} ${path}: ${JSON.stringify(json.error)}`)
	return json.data
}
const CONTACT = '17770000001'
await api('POST', '/contacts', { phone: CONTACT, deliveryDelayMs: 0, readDelayMs: null })

const keyFile = join(work, 'master.key')
writeFileSync(keyFile, randomBytes(32).toString('base64') + '\n', { mode: 0o600 })
const config = {
	upstream: 'sandbox', redis_url: `unix://${redisSock}`, log_level: 'warning', data_dir: work, master_key_file: keyFile,
	heartbeat_interval_s: 5, heartbeat_ttl_s: 15,
	pacing: { enabled: false, min_interval_s: 0, max_interval_s: 0, daily_cap: 1_000_000, warmup_days: 0, warmup_daily_cap: 1_000_000, composing_min_s: 0, composing_max_s: 0 },
	sessions: { max_concurrent_handshakes: 4, reconnect_base_s: 0.1, reconnect_max_s: 1, reconnect_max_attempts: 3, cache_budget_mb: 64, loop_lag_pause_ms: 1000 },
	sandbox: { ws_url: info.wsUrl, control_url: control, root_key_file: info.rootPublicKeyFile, ca_file: info.caCertFile },
	// The simulator takes any version; a refused local port keeps the start offline and fast.
	wa_version: { url: 'http://127.0.0.1:9/sw.js', timeout_s: 1, refresh_s: 86_400 },
}
const engine = spawn(process.execPath, ['--inspect=127.0.0.1:0', join(engineDir, 'dist/src/main.js')], {
	env: { ...process.env, WAPP_ENGINE_CONFIG: JSON.stringify(config), NODE_EXTRA_CA_CERTS: info.caCertFile },
	stdio: ['ignore', 'ignore', 'pipe'],
})
children.push(engine)
const inspectorUrl = await new Promise((resolve, reject) => {
	createInterface({ input: engine.stderr }).on('line', l => {
		const m = /ws:\/\/\S+/.exec(l)
		if (m) resolve(m[0])
	})
	engine.once('exit', code => reject(new Error(`engine exited ${code}`)))
})
await waitUntil('engine heartbeat', () => redis.exists('wapp:engine:sandbox:heartbeat'), 30_000)

// ---- one session ----
let lastId = '$'
/** The next `session.state` event in `state` (events read in order from the last one seen). */
async function nextState(state, timeoutMs = 30_000) {
	const deadline = Date.now() + timeoutMs
	while (Date.now() < deadline) {
		const res = await redis.xread('BLOCK', 1000, 'STREAMS', 'wapp:events', lastId)
		for (const [id, fields] of res?.[0]?.[1] ?? []) {
			lastId = id
			const e = JSON.parse(fields[1])
			if (e.type === 'session.state' && e.payload.state === state) return e
		}
	}
	throw new Error(`no ${state} within ${timeoutMs} ms`)
}
const PHONE = '18880000001'
const envelope = (type, payload, session = 'leak-1') => ({ id: randomUUID(), version: 1, timestamp: new Date().toISOString(), session, trace_id: randomUUID().replaceAll('-', ''), type, payload })
lastId = (await redis.xrevrange('wapp:events', '+', '-', 'COUNT', 1))[0]?.[0] ?? '0-0'
await redis.xadd('wapp:cmd:engine:sandbox', '*', 'data', JSON.stringify(envelope('session_start', { upstream: 'sandbox', push_name: 'Leak', pacing: null, pairing: 'qr', phone: PHONE, paired_at: null })))
await nextState('connected', 60_000)

let sent = 0
async function sendOne(i) {
	const message_id = randomUUID()
	await redis.xadd('wapp:cmd:leak-1', '*', 'data', JSON.stringify(envelope('send_text', { message_id, wa_id: '3EB0' + randomBytes(9).toString('hex').toUpperCase(), to: CONTACT, text: `cycle ${i}`, quoted: null, mentions: [] })))
	await waitUntil(`send ${i} acked`, async () => {
		const entries = await redis.xrevrange('wapp:events', '+', '-', 'COUNT', 50)
		return entries.some(([, f]) => f[1].includes(message_id) && f[1].includes('"status":"sent"'))
	}, 30_000)
	sent++
}
if (!values['no-send']) await sendOne(0)
await sleep(1000)
const before = await measure(inspectorUrl)
log(`node ${process.version}; after pairing: heap ${(before.heap / 1048576).toFixed(1)} MB, ${before.als} AsyncLocalStorage instances`)

const t0 = Date.now()
let after = before
for (let i = 1; i <= CYCLES; i++) {
	await api('POST', '/faults/kick', { phone: PHONE, kind: '515' })
	await nextState('connected')
	if (!values['no-send']) await sendOne(i)
	if (i % EVERY === 0 || i === CYCLES) {
		await sleep(200)
		after = await measure(inspectorUrl)
		log(`cycle ${i}: heap ${(after.heap / 1048576).toFixed(1)} MB, ${after.als} AsyncLocalStorage instances, ${((Date.now() - t0) / i).toFixed(0)} ms/cycle`)
	}
}
const growthKb = (after.heap - before.heap) / 1024 / CYCLES
console.log(`cycles=${CYCLES} sends=${sent} heap_before_mb=${(before.heap / 1048576).toFixed(1)} heap_after_mb=${(after.heap / 1048576).toFixed(1)} heap_growth_kb_per_cycle=${growthKb.toFixed(2)} als_before=${before.als} als_after=${after.als}`)
redis.disconnect()
cleanup()
process.exit(0)
