/**
 * engine_memory (issue 4): memory per session of the one-process engine against the
 * simulator, pacing off, and the naive design (one plain Baileys socket per process) for
 * comparison. For each N: pair N sessions through Redis (session_start with a phone: the
 * sandbox pairs itself), each session sends 4 messages to each of 5 simulated contacts
 * (the send throughput is measured on this burst) and receives 4 from each, settle, force a
 * GC (through the inspector), read RSS and VmHWM. Last line:
 *   sessions=N mb_per_session=... peak_rss_mb=... naive_mb_per_session=... density_ratio=... send_msgs_per_s=... lost=... reconnects=...
 * Run through scripts/bench/engine_memory.
 */
import { spawn } from 'node:child_process'
import { randomBytes, randomUUID, createHash } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { cpus, loadavg, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { Redis } from 'ioredis'
import WebSocket from 'ws'

const here = dirname(fileURLToPath(import.meta.url))
const engineDir = join(here, '..')
const { values } = parseArgs({
	options: {
		sessions: { type: 'string', default: '50,200,500' },
		naive: { type: 'string', default: '10' },
		pool: { type: 'string', default: '50' },
		'per-contact': { type: 'string', default: '4' },
		'contacts-per-session': { type: 'string', default: '5' },
		handshakes: { type: 'string', default: '16' },
		settle: { type: 'string', default: '10' },
		// Write a CPU profile of the engine during the send burst, summarised by package.
		profile: { type: 'boolean', default: false },
	},
})
const SIZES = values.sessions.split(',').map(Number)
const NAIVE = Number(values.naive)
const POOL = Number(values.pool)
const PER = Number(values['per-contact'])
const CPS = Number(values['contacts-per-session'])
const SETTLE_S = Number(values.settle)
const log = msg => console.log(`[engine_memory] ${msg}`)
const children = []
const cleanups = []
function abort(code) {
	for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
	for (const f of cleanups) f()
	process.exit(code)
}
process.on('SIGINT', () => abort(130))
process.on('SIGTERM', () => abort(143))

const freePort = () =>
	new Promise(resolve => {
		const s = createServer().listen(0, '127.0.0.1', () => {
			const { port } = s.address()
			s.close(() => resolve(port))
		})
	})

function procStatus(pid) {
	const text = readFileSync(`/proc/${pid}/status`, 'utf8')
	const kb = name => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0)
	return { rss: kb('VmRSS') * 1024, hwm: kb('VmHWM') * 1024 }
}
const mb = b => b / 1024 / 1024
/** utime + stime of a process, in seconds (clock ticks are 1/100 s on Linux). */
function cpuSeconds(pid) {
	const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
	return (Number(fields[11]) + Number(fields[12])) / 100
}

async function waitUntil(what, cond, timeoutMs) {
	const deadline = Date.now() + timeoutMs
	for (;;) {
		const v = await cond()
		if (v) return v
		if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
		await sleep(250)
	}
}

// ---- services -------------------------------------------------------------------
const work = mkdtempSync(join(tmpdir(), 'engine-memory-'))
cleanups.push(() => rmSync(work, { recursive: true, force: true }))
const redisSock = join(work, 'redis.sock')
const redisProc = spawn('redis-server', ['--port', '0', '--unixsocket', redisSock, '--save', '', '--appendonly', 'no', '--dir', work], { stdio: 'ignore' })
children.push(redisProc)
await waitUntil('redis', () => existsSync(redisSock), 10_000)
const redis = new Redis({ path: redisSock })

const simPort = await freePort()
const controlPort = await freePort()
const simDir = join(work, 'sim')
const simProc = spawn(process.execPath, [join(engineDir, 'dist/sim/main.js'), '--port', String(simPort), '--control-port', String(controlPort), '--data-dir', simDir, '--in-memory', '--log-level', 'error'], { stdio: ['ignore', 'ignore', 'inherit'] })
children.push(simProc)
const control = `http://127.0.0.1:${controlPort}`
await waitUntil('simulator', () => fetch(`${control}/health`).then(r => r.ok, () => false), 30_000)
const info = (await (await fetch(`${control}/info`)).json()).data
const api = async (method, path, body) => {
	const res = await fetch(`${control}${path}`, { method, headers: { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) })
	const json = await res.json()
	if (!json.success) throw new Error(`${method} ${path}: ${JSON.stringify(json.error)}`)
	return json.data
}
const contacts = Array.from({ length: POOL }, (_, i) => `1777000${String(i).padStart(4, '0')}`)
for (const phone of contacts) await api('POST', '/contacts', { phone, deliveryDelayMs: 0, readDelayMs: null })
log(`simulator on ${info.wsUrl}, ${POOL} contacts; machine: ${cpus().length} cores, node ${process.version}`)

/** Run `n` async jobs with at most `c` at once. */
async function pool(n, c, job) {
	let next = 0
	await Promise.all(Array.from({ length: Math.min(c, n) }, async () => {
		while (next < n) await job(next++)
	}))
}

const waIdOf = id => '3EB0' + createHash('sha256').update(Buffer.concat([Buffer.from('wapp:'), Buffer.from(id.replaceAll('-', ''), 'hex')])).digest('hex').slice(0, 18).toUpperCase()
const contactsOf = i => Array.from({ length: CPS }, (_, k) => contacts[(i * CPS + k) % POOL])

/** Counts event types as they arrive (XREAD from the last id seen). */
class EventCounter {
	last = '0-0'
	counts = new Map()
	receivedIds = new Set()
	async poll() {
		for (;;) {
			const res = await redis.xread('COUNT', 5000, 'STREAMS', 'wapp:events', this.last)
			const entries = res?.[0]?.[1] ?? []
			for (const [id, fields] of entries) {
				this.last = id
				const e = JSON.parse(fields[1])
				const key = e.type === 'message.status' ? `status:${e.payload.status}` : e.type === 'session.state' ? `state:${e.payload.state}` : e.type
				this.counts.set(key, (this.counts.get(key) ?? 0) + 1)
				if (e.type === 'message.received') this.receivedIds.add(e.payload.wa_id)
			}
			if (entries.length < 5000) return
		}
	}
	get(key) {
		return this.counts.get(key) ?? 0
	}
}

/** An inspector session on the engine; a profile lives in the session that started it. */
async function openInspector(inspectorUrl) {
	const ws = new WebSocket(inspectorUrl, { maxPayload: 1 << 30 })
	await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject))
	let next = 1
	const waiting = new Map()
	ws.on('message', data => {
		const msg = JSON.parse(String(data))
		waiting.get(msg.id)?.(msg.result ?? {})
		waiting.delete(msg.id)
	})
	return {
		call: (method, params = {}) =>
			new Promise(resolve => {
				const id = next++
				waiting.set(id, resolve)
				ws.send(JSON.stringify({ id, method, params }))
			}),
		close: () => ws.close(),
	}
}
async function inspect(inspectorUrl, method, params = {}) {
	const session = await openInspector(inspectorUrl)
	const result = await session.call(method, params)
	session.close()
	return result
}
const collectGarbage = url => inspect(url, 'HeapProfiler.collectGarbage')

/** Self time of a V8 CPU profile, by package (node_modules/<name>) or by our own directory. */
function summariseProfile(profile) {
	const byNode = new Map(profile.nodes.map(n => [n.id, n]))
	const self = new Map()
	const dt = profile.timeDeltas
	for (let i = 0; i < profile.samples.length; i++) {
		const node = byNode.get(profile.samples[i])
		const url = node.callFrame.url
		const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)
		const key = m ? m[1] : url.includes('/dist/src/') ? `engine:${url.split('/dist/src/')[1].split('/')[0]}` : url ? 'node:' + url.split('/').pop() : `(${node.callFrame.functionName || 'native'})`
		self.set(key, (self.get(key) ?? 0) + (dt[i] ?? 0))
	}
	const fns = new Map()
	for (let i = 0; i < profile.samples.length; i++) {
		const f = byNode.get(profile.samples[i]).callFrame
		const key = `${f.functionName || '(anon)'}@${f.url.split('/').slice(-2).join('/')}:${f.lineNumber}`
		fns.set(key, (fns.get(key) ?? 0) + (dt[i] ?? 0))
	}
	const total = [...self.values()].reduce((a, b) => a + b, 0)
	if (process.env.PROFILE_FUNCTIONS) console.log([...fns.entries()].sort((a, b) => b[1] - a[1]).slice(0, 25).map(([k, v]) => `  ${k} ${((v / total) * 100).toFixed(1)}%`).join('\n'))
	return [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, 15).map(([k, v]) => `${k} ${((v / total) * 100).toFixed(1)}%`).join(', ')
}

// ---- one engine run at N sessions --------------------------------------------------
async function engineRun(n, runIndex) {
	await redis.flushall()
	const keyFile = join(work, `master-${runIndex}.key`)
	writeFileSync(keyFile, randomBytes(32).toString('base64') + '\n', { mode: 0o600 })
	const config = {
		upstream: 'sandbox', redis_url: `unix://${redisSock}`, log_level: 'warning', data_dir: work, master_key_file: keyFile,
		heartbeat_interval_s: 5, heartbeat_ttl_s: 15,
		pacing: { enabled: false, min_interval_s: 0, max_interval_s: 0, daily_cap: 1_000_000, warmup_days: 0, warmup_daily_cap: 1_000_000, composing_min_s: 0, composing_max_s: 0 },
		sessions: { max_concurrent_handshakes: Number(values.handshakes), reconnect_base_s: 1, reconnect_max_s: 60, reconnect_max_attempts: 3, cache_budget_mb: 64, loop_lag_pause_ms: 1000 },
		sandbox: { ws_url: info.wsUrl, control_url: control, root_key_file: info.rootPublicKeyFile, ca_file: info.caCertFile },
		// The simulator takes any version; a refused local port keeps the start offline and fast.
		wa_version: { url: 'http://127.0.0.1:9/sw.js', timeout_s: 1, refresh_s: 86_400 },
	}
	const engine = spawn(process.execPath, ['--inspect=127.0.0.1:0', '--max-old-space-size=768', join(engineDir, 'dist/src/main.js')], {
		env: { ...process.env, WAPP_ENGINE_CONFIG: JSON.stringify(config), NODE_EXTRA_CA_CERTS: info.caCertFile },
		stdio: ['ignore', 'pipe', 'pipe'],
	})
	children.push(engine)
	const engineLines = []
	createInterface({ input: engine.stdout }).on('line', l => engineLines.length < 2000 && engineLines.push(l))
	const inspectorUrl = await new Promise((resolve, reject) => {
		createInterface({ input: engine.stderr }).on('line', l => {
			const m = /ws:\/\/\S+/.exec(l)
			if (m) resolve(m[0])
		})
		engine.once('exit', code => reject(new Error(`engine exited ${code}: ${engineLines.slice(-5).join('\n')}`)))
	})
	await waitUntil('engine heartbeat', () => redis.exists('wapp:engine:sandbox:heartbeat'), 30_000)
	await sleep(3000)
	await collectGarbage(inspectorUrl)
	await sleep(500)
	const zero = procStatus(engine.pid)
	log(`N=${n}: engine up, RSS with zero sessions ${mb(zero.rss).toFixed(1)} MB`)

	const ev = new EventCounter()
	const phones = Array.from({ length: n }, (_, i) => `1888${runIndex}${String(i).padStart(6, '0')}`)
	const t0 = Date.now()
	const p = redis.pipeline()
	for (let i = 0; i < n; i++) {
		const cmd = { id: randomUUID(), version: 1, timestamp: new Date().toISOString(), session: `bench-${i}`, trace_id: randomUUID().replaceAll('-', ''), type: 'session_start', payload: { upstream: 'sandbox', push_name: null, pacing: null, pairing: 'qr', phone: phones[i], paired_at: null } }
		p.xadd('wapp:cmd:engine:sandbox', '*', 'data', JSON.stringify(cmd))
	}
	await p.exec()
	await waitUntil(`${n} sessions connected`, async () => {
		await ev.poll()
		return ev.get('state:connected') >= n
	}, 20 * 60_000)
	const connectS = (Date.now() - t0) / 1000
	const reconnectsBefore = ev.get('state:reconnecting')
	log(`N=${n}: ${n} sessions paired and connected in ${connectS.toFixed(1)} s; RSS ${mb(procStatus(engine.pid).rss).toFixed(1)} MB`)

	// Sends: every session, 4 messages to each of its 5 contacts, all queued at once.
	const sends = []
	const sp = redis.pipeline()
	for (let i = 0; i < n; i++) {
		for (const to of contactsOf(i)) {
			for (let k = 0; k < PER; k++) {
				const message_id = randomUUID()
				const cmd = { id: randomUUID(), version: 1, timestamp: new Date().toISOString(), session: `bench-${i}`, trace_id: randomUUID().replaceAll('-', ''), type: 'send_text', payload: { message_id, wa_id: waIdOf(message_id), to, quoted: null, mentions: [], text: `bench ${i} -> ${to} #${k}` } }
				sends.push(cmd)
				sp.xadd(`wapp:cmd:bench-${i}`, '*', 'data', JSON.stringify(cmd))
			}
		}
	}
	const tSend = Date.now()
	const profiler = values.profile ? await openInspector(inspectorUrl) : undefined
	if (profiler) {
		await profiler.call('Profiler.enable')
		await profiler.call('Profiler.start')
	}
	const cpuBefore = { engine: cpuSeconds(engine.pid), sim: cpuSeconds(simProc.pid), redis: cpuSeconds(redisProc.pid) }
	await sp.exec()
	await waitUntil(`${sends.length} sends acked by the server`, async () => {
		await ev.poll()
		return ev.get('status:sent') + ev.get('status:failed') >= sends.length
	}, 20 * 60_000).catch(err => log(`N=${n}: ${err.message} (${ev.get('status:sent')} sent)`))
	const sendS = (Date.now() - tSend) / 1000
	if (profiler) {
		const { profile } = await profiler.call('Profiler.stop')
		profiler.close()
		log(`N=${n}: engine CPU profile of the burst (self time): ${summariseProfile(profile)}`)
	}
	const sendRate = ev.get('status:sent') / sendS
	const busy = name => (((name === 'engine' ? cpuSeconds(engine.pid) : cpuSeconds(name === 'sim' ? simProc.pid : redisProc.pid)) - cpuBefore[name]) / sendS * 100).toFixed(0)
	log(`N=${n}: ${ev.get('status:sent')} sent (${ev.get('status:failed')} failed) in ${sendS.toFixed(1)} s = ${sendRate.toFixed(0)} msg/s; CPU during the burst: engine ${busy('engine')}%, simulator ${busy('sim')}%, redis ${busy('redis')}% (of one core); load average ${loadavg()[0].toFixed(1)}`)

	// Receives: each contact sends 4 messages to each session it talks to.
	const inbound = []
	for (let i = 0; i < n; i++) for (const from of contactsOf(i)) for (let k = 0; k < PER; k++) inbound.push({ from, to: phones[i], text: `to ${i} from ${from} #${k}` })
	const inboundIds = []
	const tRecv = Date.now()
	await pool(inbound.length, 32, async j => {
		const m = inbound[j]
		const sent = await api('POST', `/contacts/${m.from}/messages`, { to: m.to, text: m.text })
		inboundIds.push(sent.id)
	})
	await waitUntil(`${inbound.length} received`, async () => {
		await ev.poll()
		return ev.get('message.received') >= inbound.length
	}, 10 * 60_000).catch(err => log(`N=${n}: ${err.message} (${ev.get('message.received')} received)`))
	log(`N=${n}: ${ev.get('message.received')} received in ${((Date.now() - tRecv) / 1000).toFixed(1)} s`)

	// Settle, GC, measure.
	await sleep(SETTLE_S * 1000)
	await collectGarbage(inspectorUrl)
	await sleep(1000)
	const after = procStatus(engine.pid)
	await ev.poll()
	const delivered = new Set()
	for (const phone of new Set(sends.map(s => s.payload.to))) for (const r of await api('GET', `/contacts/${phone}/received`)) delivered.add(r.id)
	const lostSends = sends.filter(s => !delivered.has(s.payload.wa_id)).length
	const lostReceives = inboundIds.filter(id => !ev.receivedIds.has(id)).length
	const reconnects = ev.get('state:reconnecting') - reconnectsBefore + ev.get('state:failed')
	// What the engine warned about (lag-guard pauses, send retries), by message.
	const warned = new Map()
	for (const l of engineLines) {
		try {
			const { level, msg } = JSON.parse(l)
			if (level === 'warn' || level === 'error') warned.set(msg, (warned.get(msg) ?? 0) + 1)
		} catch {}
	}
	if (warned.size > 0) log(`N=${n}: engine warnings: ${[...warned.entries()].map(([m, c]) => `${c}x ${m}`).join('; ')}`)
	engine.kill('SIGTERM')
	await new Promise(r => (engine.exitCode !== null ? r() : engine.once('exit', r)))
	const result = {
		n,
		rss0: mb(zero.rss),
		rss: mb(after.rss),
		peak: mb(after.hwm),
		mbPerSession: (mb(after.rss) - mb(zero.rss)) / n,
		sendRate,
		lost: lostSends + lostReceives,
		reconnects,
		connectS,
	}
	log(`N=${n}: RSS ${result.rss.toFixed(1)} MB after traffic (zero: ${result.rss0.toFixed(1)}), peak ${result.peak.toFixed(1)} MB, ${result.mbPerSession.toFixed(3)} MB/session, lost ${lostSends}+${lostReceives}, reconnects ${reconnects}`)
	return result
}

// ---- the naive design at NAIVE sessions -------------------------------------------
async function naiveRun(n) {
	const workers = []
	for (let i = 0; i < n; i++) {
		const phone = `1999000${String(i).padStart(4, '0')}`
		const arg = JSON.stringify({ wsUrl: info.wsUrl, controlUrl: control, rootKeyB64: readFileSync(info.rootPublicKeyFile, 'utf8').trim(), phone, contacts: contactsOf(i + 1000), perContact: PER })
		const child = spawn(process.execPath, ['--expose-gc', join(here, 'naive-worker.mjs'), arg], { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, NODE_EXTRA_CA_CERTS: info.caCertFile } })
		children.push(child)
		const w = { child, phone, events: [], contacts: contactsOf(i + 1000) }
		createInterface({ input: child.stdout }).on('line', l => {
			try {
				w.events.push(JSON.parse(l))
			} catch {}
		})
		workers.push(w)
	}
	await waitUntil('naive sockets sent', () => workers.every(w => w.events.some(e => e.event === 'sent')), 5 * 60_000)
	await pool(n * CPS * PER, 16, async j => {
		const w = workers[Math.floor(j / (CPS * PER))]
		const from = w.contacts[Math.floor((j % (CPS * PER)) / PER)]
		await api('POST', `/contacts/${from}/messages`, { to: w.phone, text: `naive to ${w.phone} #${j}` })
	})
	await sleep(SETTLE_S * 1000)
	for (const w of workers) w.child.stdin.write('report\n')
	await waitUntil('naive reports', () => workers.every(w => w.events.some(e => e.event === 'done')), 60_000)
	const rss = workers.map(w => w.events.find(e => e.event === 'done').rss)
	const received = workers.reduce((s, w) => s + w.events.find(e => e.event === 'done').received, 0)
	for (const w of workers) w.child.kill('SIGTERM')
	const mean = mb(rss.reduce((a, b) => a + b, 0) / n)
	log(`naive N=${n}: ${mean.toFixed(1)} MB RSS per process (after GC), ${received}/${n * CPS * PER} received`)
	return mean
}

process.on('unhandledRejection', err => {
	console.error(err)
	abort(1)
})
try {
	const results = []
	for (const [i, n] of SIZES.entries()) results.push(await engineRun(n, i))
	const naive = await naiveRun(NAIVE)
	for (const r of results) {
		console.log(
			`sessions=${r.n} mb_per_session=${r.mbPerSession.toFixed(3)} peak_rss_mb=${r.peak.toFixed(0)} naive_mb_per_session=${naive.toFixed(1)} density_ratio=${(naive / r.mbPerSession).toFixed(0)} send_msgs_per_s=${r.sendRate.toFixed(0)} lost=${r.lost} reconnects=${r.reconnects}`,
		)
	}
	redis.disconnect()
	abort(0)
} catch (err) {
	// Never leave the engine, the simulator or redis-server behind.
	console.error(err)
	abort(1)
}
