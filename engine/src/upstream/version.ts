/**
 * The WhatsApp Web version the sockets announce. WhatsApp refuses logins from a
 * client whose version went stale (`<failure reason="405"/>`), and then no QR ever appears.
 * So the engine reads the current version at start and every `refresh_s` from
 * `wa_version.url`, keeps it in Redis (the last good value survives restarts and offline
 * spells), and otherwise uses the version Baileys was released with (pinned).
 *
 * The fetch is Baileys' `fetchLatestWaWebVersion` done by hand: that one always reads
 * https://web.whatsapp.com/sw.js, while tests (and a box behind a mirror) need another URL,
 * and it has no timeout of its own. Same parsing: `"client_revision": N` means 2.3000.N.
 *
 * A socket closed with 405 publishes `session.version_refused` naming the version in use;
 * the api turns it into an admin alert.
 */
import { randomUUID } from 'node:crypto'
import type { Boom } from '@hapi/boom'
import { DEFAULT_CONNECTION_CONFIG, type WAVersion } from '@whiskeysockets/baileys'
import type { EngineWaVersion, WaVersionInUse, WaVersionRefusedEvent } from '../generated/contracts.js'
import type { Logger } from '../log.js'
import { engineKeys } from '../keys.js'
import type { EngineContext, EngineModule, ManagedSession } from '../sessions/types.js'

/** The close code WhatsApp answers a login from an outdated client with. */
export const VERSION_REFUSED = 405

export const PINNED_VERSION: WAVersion = DEFAULT_CONNECTION_CONFIG.version

const REVISION = /\\?"client_revision\\?":\s*(\d+)/

export const formatVersion = (v: WAVersion): string => v.join('.')

export function parseVersion(text: string): WAVersion | undefined {
	const parts = text.split('.').map(Number)
	return parts.length === 3 && parts.every(n => Number.isSafeInteger(n) && n >= 0) ? (parts as WAVersion) : undefined
}

/** The current version from a page carrying `client_revision`; throws when there is none. */
export async function fetchWaVersion(config: Pick<EngineWaVersion, 'url' | 'timeout_s'>): Promise<WAVersion> {
	const res = await fetch(config.url, {
		signal: AbortSignal.timeout(Math.round(config.timeout_s * 1000)),
		// The headers Baileys sends: without a browser's, web.whatsapp.com answers a bot page.
		headers: { 'sec-fetch-site': 'none', 'user-agent': 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36' },
	})
	if (!res.ok) throw new Error(`${config.url} answered ${res.status}`)
	const match = REVISION.exec(await res.text())
	if (!match?.[1]) throw new Error(`${config.url} carries no client_revision`)
	return [2, 3000, Number(match[1])]
}

/** What this process's sockets announce; process-wide like WA_CERT_DETAILS (one upstream). */
let inUse: WaVersionInUse | undefined

/** For the heartbeat: the version new sockets log in with, once the module started. */
export function waVersionInUse(): WaVersionInUse | null {
	return inUse ?? null
}

const RECHECK_AFTER_REFUSAL_MS = 60_000
const DEFAULTS: EngineWaVersion = { url: 'https://web.whatsapp.com/sw.js', timeout_s: 5, refresh_s: 86_400 }

export class WaVersionModule implements EngineModule {
	readonly name = 'wa-version'
	private ctx: EngineContext | undefined
	private log: Logger | undefined
	private timer: NodeJS.Timeout | undefined
	private refreshing: Promise<void> = Promise.resolve()
	private readonly unsubscribe: (() => void)[] = []
	private lastRefresh = 0

	async start(ctx: EngineContext): Promise<void> {
		this.ctx = ctx
		this.log = ctx.log.child({ component: 'wa-version' })
		await this.refresh()
		// Read per socket, so a reconnect after a refresh announces the new version.
		this.unsubscribe.push(ctx.registry.addSocketConfig(() => ({ version: this.current() })))
		this.unsubscribe.push(
			ctx.registry.onSocket((session, sock) => {
				sock.ev.on('connection.update', update => {
					const err = update.lastDisconnect?.error as Boom | undefined
					if (update.connection === 'close' && err?.output?.statusCode === VERSION_REFUSED) void this.refused(session, err.message)
				})
			}),
		)
		this.schedule()
	}

	async stop(): Promise<void> {
		clearTimeout(this.timer)
		this.timer = undefined
		for (const off of this.unsubscribe.splice(0)) off()
		await this.refreshing
	}

	private get config(): EngineWaVersion {
		return this.ctx?.config.wa_version ?? DEFAULTS
	}

	private current(): WAVersion {
		return (inUse && parseVersion(inUse.version)) ?? PINNED_VERSION
	}

	private schedule(): void {
		if (this.ctx === undefined) return
		this.timer = setTimeout(() => {
			this.refreshing = this.refresh().finally(() => this.schedule())
		}, Math.round(this.config.refresh_s * 1000))
		// A pending refresh never keeps a stopping engine alive.
		this.timer.unref()
	}

	/** Fetch; else the stored value; else pinned. Never throws: a version is always in use. */
	private async refresh(): Promise<void> {
		const ctx = this.ctx!
		const key = engineKeys(ctx.config.upstream).waVersion
		this.lastRefresh = Date.now()
		const checkedAt = new Date().toISOString()
		try {
			const version = await fetchWaVersion(this.config)
			inUse = { version: formatVersion(version), source: 'fetched', checked_at: checkedAt }
			await ctx.writer.set(key, JSON.stringify(inUse)).catch(err => this.log?.warn({ err: (err as Error).message }, 'storing the WhatsApp Web version failed'))
			this.log?.info({ wa_version: inUse.version }, 'WhatsApp Web version fetched')
			return
		} catch (err) {
			const stored = await this.stored(key)
			inUse = stored ? { ...stored, source: 'stored', checked_at: checkedAt } : { version: formatVersion(PINNED_VERSION), source: 'pinned', checked_at: checkedAt }
			this.log?.warn({ err: (err as Error).message, url: this.config.url, wa_version: inUse.version, source: inUse.source }, 'fetching the WhatsApp Web version failed; using the stored or pinned one')
		}
	}

	private async stored(key: string): Promise<WaVersionInUse | undefined> {
		try {
			const raw = await this.ctx!.writer.get(key)
			const value = raw ? (JSON.parse(raw) as Partial<WaVersionInUse>) : undefined
			return typeof value?.version === 'string' && parseVersion(value.version) ? (value as WaVersionInUse) : undefined
		} catch {
			return undefined
		}
	}

	private async refused(session: ManagedSession, message: string): Promise<void> {
		const version = inUse ?? { version: formatVersion(PINNED_VERSION), source: 'pinned' as const }
		const reason = `WhatsApp refused the login: client version ${version.version} (${version.source}) is outdated (${message})`
		this.log?.error({ session: session.name, wa_version: version.version, source: version.source }, reason)
		const event: WaVersionRefusedEvent = {
			id: randomUUID(),
			version: 1,
			timestamp: new Date().toISOString(),
			session: session.name,
			trace_id: randomUUID().replaceAll('-', ''),
			type: 'session.version_refused',
			payload: { version: version.version, source: version.source, reason_code: VERSION_REFUSED, reason },
		}
		await this.ctx?.events.publish(event).catch(err => this.log?.error({ err: (err as Error).message }, 'publishing session.version_refused failed'))
		// A refused version may be a stale stored one: look again now rather than in a day,
		// but once a minute at most (every session's every attempt is refused alike).
		if (Date.now() - this.lastRefresh > RECHECK_AFTER_REFUSAL_MS) this.refreshing = this.refreshing.then(() => this.refresh())
	}
}
