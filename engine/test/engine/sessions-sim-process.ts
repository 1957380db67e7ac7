/**
 * The simulator as a process of its own (as the stack runs it), so a test can freeze it
 * with SIGSTOP and resume it with SIGCONT: the kernel still accepts TCP connections, the
 * simulator answers none of them, exactly the upstream that leaked handshake slots.
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { EngineRuntimeConfig } from '../../src/generated/contracts.js'
import { engineConfig, waitFor } from './helpers.js'

const SIM_MAIN = fileURLToPath(new URL('../../sim/main.js', import.meta.url))

export interface SimProcess {
	pid: number
	ws: string
	control: string
	caCert: string
	rootKey: string
	freeze(): void
	resume(): void
	stop(): Promise<void>
}

export async function startSimProcess(): Promise<SimProcess> {
	const dir = mkdtempSync(join(tmpdir(), 'wa-sim-proc-'))
	const proc = spawn(process.execPath, [SIM_MAIN, '--port', '0', '--control-port', '0', '--data-dir', dir, '--in-memory'], { stdio: ['ignore', 'pipe', 'pipe'] })
	const exited = new Promise<void>(resolve => proc.once('exit', () => resolve()))
	let ready: Record<string, string> | undefined
	let buffered = ''
	proc.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
		buffered += chunk
		const lines = buffered.split('\n')
		buffered = lines.pop() ?? ''
		for (const line of lines) {
			try {
				const parsed = JSON.parse(line) as Record<string, string>
				if (parsed.msg === 'wa-sim ready') ready = parsed
			} catch {
				// not a log line
			}
		}
	})
	proc.stderr!.resume()
	const line = await waitFor('wa-sim ready', () => ready, 30_000)
	return {
		pid: proc.pid!,
		ws: line.ws!,
		control: line.control!,
		caCert: line.caCert!,
		rootKey: line.rootKey!,
		freeze: () => void proc.kill('SIGSTOP'),
		resume: () => void proc.kill('SIGCONT'),
		async stop() {
			proc.kill('SIGCONT')
			proc.kill('SIGKILL')
			await exited
			rmSync(dir, { recursive: true, force: true })
		},
	}
}

export function simProcessConfig(redisUrl: string, sim: SimProcess, overrides: Partial<EngineRuntimeConfig> = {}): EngineRuntimeConfig {
	return engineConfig(redisUrl, {
		log_level: 'info',
		sandbox: { ws_url: sim.ws, control_url: sim.control, root_key_file: sim.rootKey, ca_file: sim.caCert },
		...overrides,
	})
}
