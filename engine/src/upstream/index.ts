/**
 * Which WhatsApp the engine's sockets talk to. Baileys trusts one root key per
 * process (`WA_CERT_DETAILS`), so an engine serves one upstream:
 * - `whatsapp`: Baileys' defaults, untouched. This module never installs a key for it.
 * - `sandbox`: the bundled simulator. Its root public key goes into WA_CERT_DETAILS, its
 *   media certificate into the default CA store (NODE_EXTRA_CA_CERTS, set by `wapp
 *   engine`, covers it already at process start; adding it here also covers an engine
 *   started without it), and sockets dial its ws URL. A session started with a `phone`
 *   pairs itself: the simulated phone scans the session's QR (or enters its pairing code)
 *   through the simulator's control API.
 */
import { readFileSync } from 'node:fs'
import * as tls from 'node:tls'
import { WA_CERT_DETAILS } from '@whiskeysockets/baileys'
import type { EngineRuntimeConfig, SandboxUpstream } from '../generated/contracts.js'
import type { Logger } from '../log.js'

export interface UpstreamTarget {
	upstream: EngineRuntimeConfig['upstream']
	/** undefined: Baileys' default (real WhatsApp). */
	wsUrl: string | undefined
	/** Only in the sandbox: the simulated phone that pairs sessions started with a `phone`. */
	phone: SandboxPhone | undefined
	/** Why sessions cannot connect at all (a sandbox engine without a simulator configured). */
	unusable: string | undefined
}

export function setupUpstream(config: EngineRuntimeConfig, log: Logger): UpstreamTarget {
	if (config.upstream === 'whatsapp') return { upstream: 'whatsapp', wsUrl: undefined, phone: undefined, unusable: undefined }
	const sandbox = config.sandbox
	if (sandbox === null) {
		const unusable = 'this sandbox engine has no simulator configured (runtime config `sandbox` is null)'
		log.warn(unusable)
		return { upstream: 'sandbox', wsUrl: undefined, phone: undefined, unusable }
	}
	trustSandbox(sandbox)
	log.info({ ws_url: sandbox.ws_url, control_url: sandbox.control_url }, 'sandbox upstream: simulator root key and CA installed')
	return { upstream: 'sandbox', wsUrl: sandbox.ws_url, phone: new SandboxPhone(sandbox.control_url), unusable: undefined }
}

function trustSandbox(sandbox: SandboxUpstream): void {
	const key = Buffer.from(readFileSync(sandbox.root_key_file, 'utf8').trim(), 'base64')
	if (key.length !== 32) throw new Error(`${sandbox.root_key_file}: a root public key is 32 bytes, got ${key.length}`)
	WA_CERT_DETAILS.PUBLIC_KEY = key
	const ca = readFileSync(sandbox.ca_file, 'utf8')
	const current = tls.getCACertificates('default')
	if (!current.includes(ca)) tls.setDefaultCACertificates([...current, ca])
}

/** The simulator's control API, as far as pairing goes (docs/simulator.md). */
export class SandboxPhone {
	constructor(private readonly controlUrl: string) {}

	/** "Phone `phone` scans QR `qr`": resolves once the simulator sent pair-success. */
	scanQr(phone: string, qr: string, pushName: string | undefined): Promise<void> {
		return this.post('/pairing/qr-scan', { phone, qr, ...names(pushName) })
	}

	/** "Phone `phone` enters pairing code `code`". */
	enterCode(phone: string, code: string, pushName: string | undefined): Promise<void> {
		return this.post('/pairing/code', { phone, code, ...names(pushName) })
	}

	private async post(path: string, body: object): Promise<void> {
		const res = await fetch(new URL(path, this.controlUrl), {
			method: 'POST',
			headers: { 'content-type': 'application/json' },
			body: JSON.stringify(body),
			signal: AbortSignal.timeout(15_000),
		})
		const answer = (await res.json().catch(() => ({}))) as { success?: boolean; error?: { code?: string; message?: string } }
		if (!res.ok || answer.success !== true) {
			throw new Error(`simulator ${path} answered ${res.status}: ${answer.error?.code ?? ''} ${answer.error?.message ?? ''}`.trim())
		}
	}
}

// A biz name gives Baileys a `me.name`, without which it never announces presence and
// its receipts stay "inactive"; the push name is the natural one to use.
function names(pushName: string | undefined): { pushName?: string; bizName?: string } {
	return pushName === undefined ? {} : { pushName, bizName: pushName }
}
