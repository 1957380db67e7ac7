#!/usr/bin/env node
import { parseArgs } from 'node:util'
import { ControlServer } from './control.js'
import { makeLogger } from './log.js'
import { Simulator } from './sim.js'
import { attachContacts } from './contacts-hub.js'

const USAGE = `usage: node engine/dist/sim/main.js --port P --control-port C --data-dir D [--media-port M] [--in-memory] [--qr-refs N] [--log-level L]`

function portOf(v: string | undefined, name: string, fallback?: number): number {
	if (v === undefined && fallback !== undefined) return fallback
	const n = Number(v)
	if (!Number.isInteger(n) || n < 0 || n > 65535) {
		console.error(`${name} must be a port number\n${USAGE}`)
		process.exit(2)
	}
	return n
}

async function main(): Promise<void> {
	const { values } = parseArgs({
		options: {
			port: { type: 'string' },
			'control-port': { type: 'string' },
			'media-port': { type: 'string' },
			'data-dir': { type: 'string' },
			'in-memory': { type: 'boolean', default: false },
			'qr-refs': { type: 'string' },
			'log-level': { type: 'string' },
			help: { type: 'boolean', default: false }
		}
	})
	if (values.help || !values['data-dir']) {
		console.error(USAGE)
		process.exit(values.help ? 0 : 2)
	}
	const log = makeLogger(values['log-level'] ?? process.env.SIM_LOG_LEVEL ?? 'info')
	const sim = await Simulator.start({
		port: portOf(values.port, '--port'),
		mediaPort: portOf(values['media-port'], '--media-port', 0),
		dataDir: values['data-dir'],
		inMemory: values['in-memory'],
		qrRefs: values['qr-refs'] ? Number(values['qr-refs']) : undefined,
		logger: log
	})
	const control = new ControlServer(sim)
	attachContacts(sim, control)
	await control.listen(portOf(values['control-port'], '--control-port'))
	log.info({ ws: sim.wsUrl, control: control.url, media: sim.media.host, caCert: sim.certs.files.caCert, rootKey: sim.certs.files.rootPublicKey }, 'wa-sim ready')

	let stopping = false
	const stop = async (signal: string) => {
		if (stopping) process.exit(1) // a second signal forces exit
		stopping = true
		log.info({ signal }, 'stopping')
		await control.close()
		await sim.close()
		process.exit(0)
	}
	process.on('SIGTERM', () => void stop('SIGTERM'))
	process.on('SIGINT', () => void stop('SIGINT'))
}

main().catch(err => {
	console.error(err)
	process.exit(1)
})
