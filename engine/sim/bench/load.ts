/**
 * sim_load: one simulator process, N Baileys clients spread over W client processes,
 * a target message rate; reports what the simulator sustained. Last line:
 *   clients=... relay_msgs_per_s=... p99_relay_ms=...
 * relay_msgs_per_s is what the simulator relayed per second over the window and
 * p99_relay_ms its own relay latency (frame off the sender's socket -> written to the
 * recipient's socket, queueing inside the simulator included). End-to-end latency
 * (sendMessage call -> recipient's messages.upsert) is logged too; it includes the
 * client processes' own CPU queueing on a shared 2-core machine.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

const here = dirname(fileURLToPath(import.meta.url))
const { values } = parseArgs({
	options: {
		clients: { type: 'string', default: '500' },
		rate: { type: 'string', default: '200' },
		duration: { type: 'string', default: '30' },
		workers: { type: 'string', default: '4' },
		'pair-concurrency': { type: 'string', default: '8' }
	}
})
const clients = Number(values.clients)
const rate = Number(values.rate)
const duration = Number(values.duration)
const workers = Number(values.workers)
if (![clients, rate, duration, workers].every(n => Number.isFinite(n) && n > 0) || clients < 2) {
	console.error('usage: sim_load [--clients 500] [--rate 200] [--duration 30] [--workers 4] [--pair-concurrency 8]')
	process.exit(2)
}

const log = (msg: string) => console.log(`[sim_load] ${msg}`)

/** Every process this run started; killed (by pid, via the handle) if the run aborts. */
const children: ChildProcess[] = []
function abort(code: number): never {
	for (const c of children) if (c.exitCode === null) c.kill('SIGKILL')
	process.exit(code)
}
process.on('SIGINT', () => abort(130))
process.on('SIGTERM', () => abort(143))

function cpuTicks(pid: number): number {
	const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
	return Number(fields[11]) + Number(fields[12]) // utime + stime, in clock ticks (100/s)
}

function lines(child: ChildProcess, onLine: (obj: any) => void): void {
	createInterface({ input: child.stdout! }).on('line', l => {
		try {
			onLine(JSON.parse(l))
		} catch {
			/* not a JSON line */
		}
	})
}

async function main(): Promise<void> {
	const dataDir = mkdtempSync(join(tmpdir(), 'sim-load-'))
	const sim = spawn(process.execPath, [join(here, '..', 'main.js'), '--port', '0', '--control-port', '0', '--data-dir', dataDir, '--in-memory', '--log-level', 'info'], {
		stdio: ['ignore', 'pipe', 'inherit']
	})
	const ready = await new Promise<{ ws: string; control: string; rootKey: string }>((resolve, reject) => {
		sim.once('exit', code => reject(new Error(`simulator exited ${code}`)))
		lines(sim, o => {
			if (o.msg === 'wa-sim ready') resolve(o)
		})
	})
	log(`simulator pid ${sim.pid} at ${ready.ws}, control ${ready.control}`)
	children.push(sim)

	const phones = Array.from({ length: clients }, (_, i) => String(15560000000 + i))
	const partner: Record<string, string> = {}
	// Each client writes to the next phone, which lives on the next worker: all traffic
	// crosses processes, and no two clients start sessions with each other at once
	// (mutual simultaneous pkmsgs make libsignal drop sessions and Baileys retry).
	phones.forEach((p, i) => (partner[p] = phones[(i + 1) % clients]!))
	const procs: ChildProcess[] = []
	const reports: any[] = []
	const readyWorkers: Promise<void>[] = []
	const sentDone: Promise<void>[] = []
	const reported: Promise<void>[] = []
	const t0 = Date.now()
	for (let w = 0; w < workers; w++) {
		const mine = phones.filter((_, i) => i % workers === w)
		const cfg = {
			worker: w,
			wsUrl: ready.ws,
			controlUrl: ready.control,
			rootKeyFile: ready.rootKey,
			phones: mine,
			partner: Object.fromEntries(mine.map(p => [p, partner[p]])),
			ratePerSec: (rate * mine.length) / clients,
			durationSec: duration,
			pairConcurrency: Number(values['pair-concurrency'])
		}
		const cfgFile = join(dataDir, `worker-${w}.json`)
		writeFileSync(cfgFile, JSON.stringify(cfg))
		const child = spawn(process.execPath, [join(here, 'load-worker.js'), cfgFile], { stdio: ['pipe', 'pipe', 'inherit'] })
		procs.push(child)
		children.push(child)
		let onReady!: () => void, onSent!: () => void, onReport!: () => void
		readyWorkers.push(new Promise(r => (onReady = r)))
		sentDone.push(new Promise(r => (onSent = r)))
		reported.push(new Promise(r => (onReport = r)))
		lines(child, o => {
			if (o.type === 'ready') onReady()
			else if (o.type === 'sent') onSent()
			else if (o.type === 'report') {
				reports.push(o)
				onReport()
			} else if (o.type === 'error') {
				console.error(`[sim_load] worker ${o.worker} failed: ${o.error}`)
				abort(1)
			}
		})
	}
	await Promise.all(readyWorkers)
	const stats = async () => ((await (await fetch(`${ready.control}/stats`)).json()) as { data: any }).data
	const linked = await stats()
	log(`${linked.connectedClients} clients linked and connected in ${((Date.now() - t0) / 1000).toFixed(1)} s; sending ${rate} msg/s for ${duration} s`)

	const warmed = procs.map(p => new Promise<void>(r => lines(p, o => o.type === 'warmed' && r())))
	for (const p of procs) p.stdin!.write(JSON.stringify({ type: 'warm' }) + '\n')
	await Promise.all(warmed)
	await new Promise(r => setTimeout(r, 3000))
	log('sessions warmed up (one unmeasured message per pair)')

	await fetch(`${ready.control}/stats/reset`, { method: 'POST' })
	const before = await stats()
	const cpu0 = cpuTicks(sim.pid!)
	const tStart = Date.now()
	for (const p of procs) p.stdin!.write(JSON.stringify({ type: 'go' }) + '\n')
	await Promise.all(sentDone)
	await new Promise(r => setTimeout(r, 3000)) // drain in-flight messages
	const elapsed = (Date.now() - tStart) / 1000
	const simCpuPct = ((cpuTicks(sim.pid!) - cpu0) / 100 / elapsed) * 100
	for (const p of procs) p.stdin!.write(JSON.stringify({ type: 'report' }) + '\n')
	await Promise.all(reported)
	const after = await stats()

	const lat = reports.flatMap(r => r.latencies as number[]).sort((a, b) => a - b)
	const sent = reports.reduce((s, r) => s + r.sent, 0)
	const received = reports.reduce((s, r) => s + r.received, 0)
	const sendErrors = reports.reduce((s, r) => s + r.sendErrors, 0)
	const q = (x: number) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(x * lat.length))]! : NaN)
	log(`sent=${sent} received=${received} send_errors=${sendErrors} lost=${sent - received}`)
	log(`end-to-end latency ms (sendMessage call -> recipient upsert, includes client CPU queueing): p50=${q(0.5)} p90=${q(0.9)} p99=${q(0.99)} max=${lat[lat.length - 1]}`)
	const relay = after.relayLatency
	log(
		`simulator: relayed ${after.messagesRelayed - before.messagesRelayed} messages and ${after.receiptsRelayed - before.receiptsRelayed} receipts; ` +
			`relay latency (frame off the sender's socket -> written to the recipient's) p50=${relay.p50Ms.toFixed(2)} p99=${relay.p99Ms.toFixed(2)} max=${relay.maxMs.toFixed(2)} ms; ` +
			`cpu ${simCpuPct.toFixed(0)}% of one core; connected ${after.connectedClients}`
	)
	for (const p of procs) p.stdin!.write(JSON.stringify({ type: 'exit' }) + '\n')
	await Promise.all(procs.map(p => new Promise(r => p.once('exit', r))))
	sim.kill('SIGTERM')
	await new Promise(r => sim.once('exit', r))
	rmSync(dataDir, { recursive: true, force: true })
	// relay_msgs_per_s: messages the simulator relayed (sent in the window, drained after) per second of the window;
	// p99_relay_ms: the simulator's own relay latency (end to end is logged above).
	const relayed = after.messagesRelayed - before.messagesRelayed
	console.log(`clients=${after.connectedClients} relay_msgs_per_s=${(relayed / duration).toFixed(1)} p99_relay_ms=${relay.p99Ms.toFixed(2)}`)
}

main().catch(err => {
	console.error(err)
	abort(1)
})
